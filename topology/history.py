"""The graph's history on disk (SQLite, WAL): time travel (the graph as of T, the diff between T1 and T2) and
restart (the graph restored from the last checkpoint, with counters that never go backwards).

Checkpoints. Every ``checkpoint_interval_s`` (30 s) the graph is read once under its lock, and in one transaction
each entity and edge whose attributes changed since it was last written gets a new *version* (its attributes as
JSON, keyed by item and checkpoint time), each that left the graph (aged out) a NULL version, and each whose
``last_seen`` moved an update of that one column of its ``items`` row. The graph as of T is each item's latest
version at or before the last checkpoint <= T, NULLs left out. Versions are whole states, not deltas, so a version
can be dropped as soon as a later one supersedes it, which is what keeps disk bounded:

- ``last_seen`` is not versioned: every batch touches it, so versioning it would write every entity and structural
  edge at every checkpoint (or, at a coarser resolution, once per thinning window: 2.25x the disk in the bench
  below). ``items`` keeps the latest value exactly (a restore gets it exact); a graph from history shows the
  latest but never later than T, which is exact for what went quiet before T, and otherwise later than the truth
  by less than the TTL (an item alive at T was seen within ``ttl_s`` before it).
- Only real changes make versions: a call edge with traffic (its RED counters), a new entity or edge, a rollout's
  new revision, a peer that turned out to report itself.
- Thinning (``thinning``): past 1 hour one checkpoint per 5 minutes is kept, past a day one per hour: the last of
  each window stays, the others go with every version that a later one up to the kept checkpoint supersedes. The
  graph as of a kept checkpoint is unchanged by this; a time between kept checkpoints answers with the one before.
- Retention (``retention_s``, 7 days): the oldest checkpoint kept becomes the first, holding the latest version of
  each item then alive; NULL versions before it, and items with no version left, go.

Measured with bench/history_bench.py (a 500-entity / 2,000-edge graph whose 720 call edges carry traffic, a
rollout every 2 hours, a checkpoint every 30 s): 49.6 MiB after a day, 57.5 MiB after two, so about 100 MiB at the
7-day retention (279 MiB a day without thinning); a checkpoint takes ~46 ms, a restore 38 ms, the graph as of a
past time 23 ms. Details in bench/README.md, "Topology history".

Counters never go backwards. ``/metrics`` serves the servicegraph counters from :meth:`read`: the call edges as of
the last checkpoint that *committed*, not the live graph. So every value ever served is on disk (checkpoints commit
with ``synchronous=FULL``: durable past a power loss too, for one fsync a checkpoint), and a restart restores exactly
those values or later ones. The price is freshness: the counters lag the live graph by up to one checkpoint
interval, which is about a Prometheus scrape interval. The other way, persisting on every scrape, would tie the
write rate to the number of scrapers and make a slow disk a slow scrape. The pending pairing state is not persisted:
spans waiting for their other half at a kill are lost (as with the Collector's connector), which only means a few
requests never counted, never a counter lower than one served.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

from rootward.clock import Clock, SystemClock
from rootward.storage import StorageError, open_database, reclaim, size_bytes, transaction
from rootward.topology.graph import TopologyGraph
from rootward.topology.queries import Graph, format_time
from rootward.topology.red import LATENCY_BUCKETS_S

#: The schema, one script per version (rootward.storage applies the ones a file has not seen). An item is an
#: entity (source = its id, target = kind = '') or an edge (source, target, edge kind), with the latest last_seen
#: any checkpoint saw; a version holds an item's other attributes (JSON) as of a checkpoint, NULL once it is gone.
MIGRATIONS = (
    """
    CREATE TABLE checkpoints (t REAL PRIMARY KEY, entities INTEGER NOT NULL, edges INTEGER NOT NULL,
                              rows INTEGER NOT NULL);
    CREATE TABLE items (id INTEGER PRIMARY KEY, source TEXT NOT NULL, target TEXT NOT NULL, kind TEXT NOT NULL,
                        last_seen REAL NOT NULL DEFAULT 0, UNIQUE (source, target, kind));
    CREATE TABLE versions (item INTEGER NOT NULL REFERENCES items (id), t REAL NOT NULL, attrs TEXT,
                           PRIMARY KEY (item, t)) WITHOUT ROWID;
    CREATE INDEX versions_by_time ON versions (t);
    """,
)

Key = tuple[str, str, str]  # (entity id, "", "") or (source, target, edge kind)


class NoHistory(LookupError):
    """No checkpoint at or before the time asked for (HTTP 404); the message says which times there are."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True, slots=True)
class CheckpointStats:
    """What one checkpoint did."""

    t: float
    rows: int
    entities: int
    edges: int
    seconds: float


#: Past each age (s), one checkpoint is kept per interval (s): the last of each window.
THINNING = ((3600.0, 300.0), (86400.0, 3600.0))

#: Short names for the attributes live graphs have, which made up a third of a call edge's row; others are stored
#: under their own name after an underscore (so no name can be taken for a short one).
_SHORT = {
    "kind": "k",
    "name": "n",
    "namespace": "ns",
    "virtual": "v",
    "first_seen": "f",
    "last_seen": "l",
    "requests": "r",
    "errors": "e",
    "latency_sum_s": "s",
    "latency_buckets": "b",
    "revision": "rev",
}
_LONG = {short: name for name, short in _SHORT.items()}


def _encode(attrs: dict[str, Any], edge: bool) -> str:
    """A version's JSON: the attributes under short names, but last_seen (in ``items``), an edge's kind (its key)
    and the latency buckets' trailing zeros."""
    out = {}
    for k, v in attrs.items():
        if k == "last_seen" or (edge and k == "kind"):
            continue
        if k == "latency_buckets":
            while v and v[-1] == 0:
                v = v[:-1]
        out[_SHORT.get(k, "_" + k)] = v
    return json.dumps(out, separators=(",", ":"))


def _decode(text: str, edge_kind: str) -> dict[str, Any]:
    attrs = {k[1:] if k.startswith("_") else _LONG[k]: v for k, v in json.loads(text).items()}
    if edge_kind:
        attrs["kind"] = edge_kind
    if "latency_buckets" in attrs:
        buckets = attrs["latency_buckets"]
        attrs["latency_buckets"] = buckets + [0] * (len(LATENCY_BUCKETS_S) + 1 - len(buckets))
    return attrs


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _signature(attrs: dict[str, Any]) -> int:
    """A hash of the attributes (last_seen aside, which ``items`` holds): a version is written when it changes."""
    values = tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in sorted(attrs.items()) if k != "last_seen")
    try:
        return hash(values)
    except TypeError:  # an attribute holding a mapping: rare, so the slower way
        return hash(json.dumps(values, sort_keys=True, default=str))


class History:
    """The graph's checkpoints in one SQLite file. :meth:`open` before use, :meth:`close` after (both safe to
    repeat). Thread-safe: the checkpoint thread writes while API requests read."""

    def __init__(
        self,
        path: str | Path,
        clock: Clock | None = None,
        retention_s: float = 7 * 86400.0,
        thinning: Sequence[tuple[float, float]] = THINNING,
    ) -> None:
        self.path = Path(path)
        self.clock = clock or SystemClock()
        self.retention_s = retention_s
        self.thinning = tuple(thinning)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._written: dict[Key, tuple[int, int, float]] = {}  # key -> (item id, signature, last_seen) on disk
        self._last_t = float("-inf")
        self._published: Graph = nx.MultiDiGraph()

    # --- lifecycle -----------------------------------------------------------------------------------------------

    def open(self) -> bool:
        """Open (or create) the database; True when this call opened it.

        Raises:
            StorageError: the file cannot be opened, is damaged or not a database, or has a newer schema; the
                message says how to go on.
        """
        with self._lock:
            if self._conn is not None:
                return False
            try:
                self._conn = open_database(self.path, "topology_history", MIGRATIONS, synchronous="FULL")
            except StorageError as e:
                raise StorageError(
                    f"topology history: {e}. Move the file away to start a new history, or set "
                    f"topology.history.enabled=false"
                ) from e
            row = self._conn.execute("SELECT max(t) FROM checkpoints").fetchone()
            self._last_t = float("-inf") if row[0] is None else float(row[0])
            return True

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StorageError(f"topology history {self.path} is not open")
        return self._conn

    # --- writing -------------------------------------------------------------------------------------------------

    def checkpoint(self, topology: TopologyGraph) -> CheckpointStats:
        """Write a version of each item whose attributes changed since it was last written, a NULL version of each
        that left the graph, and each moved last_seen, as one transaction; then serve the call edges written here
        on :meth:`read`.

        Raises:
            StorageError: the write failed (nothing of it is kept; the next checkpoint writes it again).
        """
        started = time.perf_counter()
        with topology.read() as g:
            items: dict[Key, dict[str, Any]] = {
                (n, "", ""): {k: _plain(v) for k, v in d.items()} for n, d in g.nodes(data=True)
            }
            entities = len(items)
            for u, v, k, d in g.edges(keys=True, data=True):
                items[u, v, k] = {key: _plain(value) for key, value in d.items()}
        with self._lock:
            db = self._db()
            t = max(self.clock.now(), self._last_t + 0.001)  # checkpoint times only go forward
            written: dict[Key, tuple[int, int, float]] = {}
            rows: list[tuple[int, float, str | None]] = []
            seen: list[tuple[float, int]] = []
            try:
                with transaction(db):
                    for key, attrs in items.items():
                        sig, last_seen = _signature(attrs), float(attrs.get("last_seen", 0.0))
                        prev = self._written.get(key)
                        if prev is not None and prev[1] == sig and prev[2] == last_seen:
                            continue
                        item = prev[0] if prev is not None else self._item(db, key)
                        if prev is None or prev[1] != sig:
                            rows.append((item, t, _encode(attrs, bool(key[2]))))
                        if prev is None or prev[2] != last_seen:
                            seen.append((last_seen, item))
                        written[key] = (item, sig, last_seen)
                    gone = [key for key in self._written if key not in items]
                    rows += [(self._written[key][0], t, None) for key in gone]
                    db.executemany("INSERT INTO versions (item, t, attrs) VALUES (?, ?, ?)", rows)
                    db.executemany("UPDATE items SET last_seen = ? WHERE id = ?", seen)
                    db.execute(
                        "INSERT INTO checkpoints VALUES (?, ?, ?, ?)", (t, entities, len(items) - entities, len(rows))
                    )
            except sqlite3.Error as e:
                raise StorageError(f"topology history {self.path}: checkpoint failed: {e}") from e
            for key in gone:
                del self._written[key]
            self._written.update(written)
            self._last_t = t
            self._published = _calls_only(items)
        return CheckpointStats(t, len(rows), entities, len(items) - entities, time.perf_counter() - started)

    @staticmethod
    def _item(db: sqlite3.Connection, key: Key) -> int:
        db.execute("INSERT INTO items (source, target, kind) VALUES (?, ?, ?) ON CONFLICT DO NOTHING", key)
        row = db.execute("SELECT id FROM items WHERE source = ? AND target = ? AND kind = ?", key).fetchone()
        return int(row[0])

    def prune(self) -> int:
        """Thin old checkpoints (``thinning``) and drop those older than ``retention_s`` (the newest checkpoint
        always stays); return how many versions went.

        Raises:
            StorageError: the database could not be written.
        """
        now = self.clock.now()
        deleted = 0
        with self._lock:
            db = self._db()
            try:
                first = db.execute("SELECT min(t) FROM checkpoints WHERE t >= ?", (now - self.retention_s,)).fetchone()
                keep = first[0] if first[0] is not None else self._last_t
                if db.execute("SELECT 1 FROM checkpoints WHERE t < ? LIMIT 1", (keep,)).fetchone():
                    with transaction(db):
                        deleted += _collapse(db, float("-inf"), keep)
                        deleted += db.execute("DELETE FROM versions WHERE t <= ? AND attrs IS NULL", (keep,)).rowcount
                        db.execute("DELETE FROM items WHERE id NOT IN (SELECT item FROM versions)")
                    reclaim(db)
                for after_s, every_s in self.thinning:
                    windows = db.execute(
                        "SELECT CAST(t / ? AS INTEGER) AS w, min(t), max(t) FROM checkpoints WHERE t < ? "
                        "GROUP BY w HAVING count(*) > 1",
                        (every_s, now - after_s),
                    ).fetchall()
                    for w, start, last in windows:
                        if (w + 1) * every_s <= now - after_s:  # only windows wholly past the age
                            with transaction(db):
                                deleted += _collapse(db, start, last)
            except sqlite3.Error as e:
                raise StorageError(f"topology history {self.path}: pruning failed: {e}") from e
        return deleted

    # --- reading -------------------------------------------------------------------------------------------------

    def restore(self, topology: TopologyGraph) -> float | None:
        """Load the last checkpoint into ``topology`` (replacing what it holds) and serve its call edges on
        :meth:`read`; return the checkpoint's time, or None when there is none yet."""
        with self._lock:
            db = self._db()
            if self._last_t == float("-inf"):
                return None
            rows = _rows_at(db, self._last_t)
            self._written = {(s, d, k): (item, _signature(a), float(a["last_seen"])) for item, s, d, k, a in rows}
            self._published = _calls_only({(s, d, k): a for _, s, d, k, a in rows})
            restored = self._last_t
        topology.restore(_graph(rows))
        return restored

    def graph_at(self, t: float) -> tuple[Graph, float]:
        """The graph as of the last checkpoint at or before ``t``, and that checkpoint's time.

        Raises:
            NoHistory: there is no checkpoint at or before ``t``.
            StorageError: the database could not be read.
        """
        with self._lock:
            db = self._db()
            try:
                found = db.execute("SELECT max(t) FROM checkpoints WHERE t <= ?", (t,)).fetchone()[0]
                if found is None:
                    first = db.execute("SELECT min(t) FROM checkpoints").fetchone()[0]
                    span = f"the oldest checkpoint is {format_time(first)}" if first is not None else "none yet"
                    raise NoHistory(f"no topology history at or before {format_time(t)}: {span}")
                rows = _rows_at(db, float(found))
            except sqlite3.Error as e:
                raise StorageError(f"topology history {self.path}: cannot read: {e}") from e
        return _graph(rows), float(found)

    def checkpoints(self) -> list[tuple[float, int, int, int]]:
        """(time, entities, edges, rows written) of every checkpoint kept, oldest first."""
        with self._lock:
            found = self._db().execute("SELECT t, entities, edges, rows FROM checkpoints ORDER BY t").fetchall()
        return [(float(t), int(n), int(e), int(r)) for t, n, e, r in found]

    def size_bytes(self) -> int:
        """The database's bytes on disk (with its write-ahead log)."""
        return size_bytes(self.path)

    @contextmanager
    def read(self) -> Iterator[Graph]:
        """The call edges (with their endpoints) as of the last committed checkpoint: what /metrics serves. Read
        only; a new checkpoint replaces the graph rather than changing it."""
        yield self._published


def _collapse(db: sqlite3.Connection, start: float, keep: float) -> int:
    """Drop the checkpoints in [start, keep) and the versions in that range that a later version up to ``keep``
    supersedes; the graph as of ``keep`` stays the same. Return how many versions went."""
    deleted = db.execute(
        "DELETE FROM versions WHERE t >= ? AND t < ? AND EXISTS "
        "(SELECT 1 FROM versions AS later WHERE later.item = versions.item AND later.t > versions.t AND later.t <= ?)",
        (start, keep, keep),
    ).rowcount
    db.execute("DELETE FROM checkpoints WHERE t >= ? AND t < ?", (start, keep))
    return int(deleted)


def _rows_at(db: sqlite3.Connection, t: float) -> list[tuple[int, str, str, str, dict[str, Any]]]:
    """(item id, source, target, kind, attributes) of every item alive as of checkpoint ``t``. last_seen is the
    latest one known, but not past ``t``: exact for what went quiet before ``t`` and for the last checkpoint,
    otherwise later than the truth by less than the TTL (what was alive at ``t`` was seen within the TTL)."""
    cursor = db.execute(
        # CROSS JOIN keeps items as the outer loop: one primary-key seek per item rather than a scan of versions.
        "SELECT i.id, i.source, i.target, i.kind, min(i.last_seen, ?), v.attrs "
        "FROM items AS i CROSS JOIN versions AS v "
        "ON v.item = i.id AND v.t = (SELECT max(t) FROM versions WHERE item = i.id AND t <= ?) "
        "WHERE v.attrs IS NOT NULL",
        (t, t),
    )
    return [(int(i), s, d, k, {**_decode(a, k), "last_seen": seen}) for i, s, d, k, seen, a in cursor]


def _graph(rows: list[tuple[int, str, str, str, dict[str, Any]]]) -> Graph:
    """A graph shaped as the live one (latency buckets as int64 arrays) from :func:`_rows_at` rows."""
    g: Graph = nx.MultiDiGraph()
    g.add_nodes_from((s, a) for _, s, _, k, a in rows if not k)
    for _, s, d, k, a in rows:
        if k and s in g and d in g:
            if "latency_buckets" in a:
                a["latency_buckets"] = np.asarray(a["latency_buckets"], np.int64)
            g.add_edge(s, d, key=k, **a)
    return g


def _calls_only(items: dict[Key, dict[str, Any]]) -> Graph:
    """The call edges of a checkpoint's items, with their endpoints."""
    g: Graph = nx.MultiDiGraph()
    for (s, d, k), attrs in items.items():
        if k == "calls" and (s, "", "") in items and (d, "", "") in items:
            g.add_node(s, **items[s, "", ""])
            g.add_node(d, **items[d, "", ""])
            g.add_edge(s, d, key=k, **attrs)
    return g
