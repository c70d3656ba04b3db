"""The audit log: every decision, approval, dry-run, execution, verification and rollback, append-only and
hash-chained, in SQLite.

Each record is canonical JSON (sorted keys, no spaces, UTF-8) of ``{seq, time_us, kind, request_id, target, actor,
data, prev}``; its ``hash`` is the SHA-256 of that text and ``prev`` is the previous record's hash (64 zeros for
the first), so changing, removing or reordering any record breaks every hash after it. With a key
(``policies.audit.hmac_key``) each record also carries ``mac`` = HMAC-SHA256(key, hash): someone who can write the
file but has not the key cannot rebuild a consistent chain. With an Ed25519 key (``policies.audit.signing_key_file``;
signing.py) each record carries ``sig``, a signature of its hash that the public key alone checks, so auditors
need no secret. Triggers refuse UPDATE and DELETE, so the only way to
change the log is to edit the file outside SQLite, which :meth:`AuditLog.verify` (``rootward audit verify``) finds,
naming the first broken record. What a hash chain cannot show is records cut off the end: keep the head
(``verify`` prints the count and the last hash) somewhere else to detect that.

Durability. Every append is committed before :meth:`AuditLog.append` returns, in SQLite's write-ahead log:

- an acknowledged record survives the process dying in any way (``kill -9``, the OOM killer, a crash): the commit
  has handed the log's pages to the operating system, which writes them out whatever becomes of the process
  (tests/policies/test_audit.py kills an appender and finds every record it acknowledged);
- at the default ``synchronous=NORMAL`` the commit does not wait for an fsync, so an operating-system crash or a
  power loss can drop the records since the last fsync; records of the kinds in :data:`DURABLE_KINDS` (``intent``,
  written just before the executor changes something) are committed with ``synchronous=FULL``, which fsyncs the log
  and with it every record before: after a power loss, a change the executor made always has its decision and
  intent on disk. ``synchronous="FULL"`` (``policies.audit.synchronous``) fsyncs every record instead;
- checkpoints, the only other fsyncs, run on a thread of their own (:class:`~rootward.storage.Checkpointer`), never
  inside an append. bench/README.md has the figures (``audit_append_us`` and the FULL variants).

The executor writes the record of an intent before it acts, so a crash mid-action leaves an intent without an
outcome, never an action without a record.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import sqlite3
import threading
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TextIO

from rootward.clock import Clock, SystemClock
from rootward.policies.errors import AuditError
from rootward.policies.signing import Signer, Verifier
from rootward.storage import Checkpointer, StorageError, open_database, transaction

GENESIS = "0" * 64
#: Kinds of record committed with an fsync even at ``synchronous=NORMAL``: the intent, written before a change.
DURABLE_KINDS = frozenset({"intent"})
#: Appends between nudges of the checkpointer (about 5 log pages each: it keeps the log near SQLite's 1,000).
_CHECKPOINT_EVERY = 200
#: The log file is cut back to this when it restarts after a burst of appends outran the checkpointer.
_WAL_LIMIT_BYTES = 4 << 20

_MIGRATIONS = [
    """
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY,
        time_us INTEGER NOT NULL,
        kind TEXT NOT NULL,
        request_id TEXT,
        target TEXT,
        actor TEXT NOT NULL,
        data TEXT NOT NULL,
        prev TEXT NOT NULL,
        hash TEXT NOT NULL,
        mac TEXT
    );
    CREATE INDEX audit_target ON audit (target, kind, seq);
    CREATE INDEX audit_request ON audit (request_id, seq);
    CREATE INDEX audit_kind_time ON audit (kind, time_us);
    CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    """,
    # Ed25519 signatures (signing.py); records written before have none.
    "ALTER TABLE audit ADD COLUMN sig TEXT",
]

_COLUMNS = "seq, time_us, kind, request_id, target, actor, data, prev, hash, mac, sig"


def canonical(value: Any) -> str:
    """The canonical JSON text of ``value``: sorted keys, no spaces, non-ASCII kept, no NaN.

    Raises:
        ValueError: ``value`` holds NaN or infinity, or something JSON cannot say.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


@dataclass(frozen=True)
class Record:
    """One audit record as stored."""

    seq: int
    time_us: int
    kind: str
    request_id: str | None
    target: str | None
    actor: str
    data: dict[str, Any]
    prev: str
    hash: str
    mac: str | None = None
    sig: str | None = None

    @property
    def time(self) -> float:
        return self.time_us / 1e6

    def body(self) -> dict[str, Any]:
        """What the hash covers."""
        return {
            "seq": self.seq,
            "time_us": self.time_us,
            "kind": self.kind,
            "request_id": self.request_id,
            "target": self.target,
            "actor": self.actor,
            "data": self.data,
            "prev": self.prev,
        }

    def as_json(self) -> dict[str, Any]:
        """The record with its hash, MAC, signature and an RFC 3339 time (``rootward audit export``)."""
        when = datetime.fromtimestamp(self.time_us / 1e6, UTC).isoformat(timespec="microseconds")
        extra = {"hash": self.hash, "mac": self.mac, "sig": self.sig}
        return {**self.body(), "time": when.replace("+00:00", "Z"), **extra}


def record_hash(body: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(body).encode()).hexdigest()


def _body_text(
    seq: int, time_us: int, kind: str, request_id: str | None, target: str | None, actor: str, data: str, prev: str
) -> bytes:
    """``canonical(body)`` built around ``data``, already canonical, so that it is encoded once per append."""
    d = json.dumps
    return (
        f'{{"actor":{d(actor, ensure_ascii=False)},"data":{data},"kind":{d(kind, ensure_ascii=False)},'
        f'"prev":{d(prev)},"request_id":{d(request_id, ensure_ascii=False)},"seq":{seq},'
        f'"target":{d(target, ensure_ascii=False)},"time_us":{time_us}}}'
    ).encode()


def record_mac(key: bytes, digest: str) -> str:
    return hmac.new(key, digest.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Verification:
    """What :meth:`AuditLog.verify` found."""

    ok: bool
    records: int
    """Records checked (up to the first broken one)."""
    head: str
    """The hash of the last good record (keep it elsewhere to detect records cut off the end)."""
    broken_seq: int | None = None
    problem: str | None = None


class AuditLog:
    """The audit log in one SQLite file. Thread-safe; ``open``/``close`` are safe to repeat."""

    def __init__(
        self,
        path: str | Path,
        clock: Clock | None = None,
        hmac_key: bytes | None = None,
        signer: Signer | None = None,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        durable_kinds: Collection[str] = DURABLE_KINDS,
    ) -> None:
        """``synchronous`` and ``durable_kinds``: see the module's docstring (what survives a power loss)."""
        self.path = Path(path)
        self.clock = clock or SystemClock()
        self.hmac_key = hmac_key
        self.signer = signer
        self.synchronous = synchronous
        self.durable_kinds = frozenset(durable_kinds) if synchronous == "NORMAL" else frozenset()
        self._conn: sqlite3.Connection | None = None
        self._checkpointer: Checkpointer | None = None
        self._since_checkpoint = 0
        self._lock = threading.RLock()  # _db() opens the file on first use, inside the lock

    def open(self) -> AuditLog:
        """Open (creating it if needed) the file.

        Raises:
            AuditError: it cannot be created or opened, is damaged or not a database (the message names it).
        """
        with self._lock:
            if self._conn is None:
                try:
                    self._conn = open_database(self.path, "audit", _MIGRATIONS, synchronous=self.synchronous)
                except StorageError as e:
                    raise AuditError(str(e)) from e
                self._conn.execute("PRAGMA wal_autocheckpoint = 0")  # the checkpointer's thread does them
                self._conn.execute(f"PRAGMA journal_size_limit = {_WAL_LIMIT_BYTES}")
        return self

    def close(self) -> None:
        with self._lock:
            if self._checkpointer is not None:
                self._checkpointer.shutdown()
                self._checkpointer = None
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> AuditLog:
        return self.open()

    def __exit__(self, *_: object) -> None:
        self.close()

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self.open()
        assert self._conn is not None
        return self._conn

    def append(
        self,
        kind: str,
        data: Mapping[str, Any],
        request_id: str | None = None,
        target: str | None = None,
        actor: str = "rootward",
    ) -> Record:
        """Append one record (committed when this returns: see the module's docstring for how durably) and return it.

        Raises:
            AuditError: it could not be written (the caller must not act as if it had been), or ``data`` is not
                JSON (NaN, objects).
        """
        try:
            text = canonical(dict(data))
        except (TypeError, ValueError) as e:
            raise AuditError(f"an audit record's data must be JSON: {e}") from e
        durable = kind in self.durable_kinds
        with self._lock:
            conn = self._db()
            if self._checkpointer is None:
                self._checkpointer = Checkpointer(self.path)
                self._checkpointer.start()
            try:
                if durable:
                    conn.execute("PRAGMA synchronous = FULL")
                with transaction(conn):
                    last = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
                    seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
                    time_us = int(self.clock.now() * 1e6)
                    digest = hashlib.sha256(
                        _body_text(seq, time_us, kind, request_id, target, actor, text, prev)
                    ).hexdigest()
                    mac = record_mac(self.hmac_key, digest) if self.hmac_key else None
                    sig = self.signer.sign(digest) if self.signer else None
                    conn.execute(
                        f"INSERT INTO audit ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (seq, time_us, kind, request_id, target, actor, text, prev, digest, mac, sig),
                    )
            except sqlite3.Error as e:
                raise AuditError(f"{self.path}: cannot append to the audit log: {e}") from e
            finally:
                if durable:
                    with contextlib.suppress(sqlite3.Error):  # a broken connection has already raised above
                        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            self._since_checkpoint += 1
            if self._since_checkpoint >= _CHECKPOINT_EVERY:
                self._since_checkpoint = 0
                self._checkpointer.nudge()
        payload = json.loads(text)
        return Record(seq, time_us, kind, request_id, target, actor, payload, prev, digest, mac, sig)

    def records(self, after_seq: int = 0, request_id: str | None = None, limit: int | None = None) -> Iterator[Record]:
        """Records in order (after ``after_seq``; only ``request_id``'s when given; at most ``limit``). Stored
        values, unchecked."""
        args: list[Any]
        where, args = "seq > ?", [after_seq]
        if request_id is not None:
            where, args = "seq > ? AND request_id = ?", [after_seq, request_id]
        query = f"SELECT {_COLUMNS} FROM audit WHERE {where} ORDER BY seq"
        if limit is not None:
            query, args = query + " LIMIT ?", [*args, limit]
        with self._lock:
            rows = self._db().execute(query, args).fetchall()
        for row in rows:
            yield _record(row)

    def verify(self, key: bytes | None = None, public_key: Verifier | None = None) -> Verification:
        """Check the whole chain (and the MACs, with ``key``; the signatures, with ``public_key``: every record
        must then be signed); the first broken record ends the check."""
        with self._lock:
            cursor = self._db().execute(f"SELECT {_COLUMNS} FROM audit ORDER BY seq")
            return verify_chain(map(_readable, cursor), key, public_key)

    def head(self) -> tuple[int, str]:
        """The last record's sequence number and hash; (0, GENESIS) when the log is empty."""
        with self._lock:
            row = self._db().execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        return (int(row[0]), str(row[1])) if row else (0, GENESIS)

    def export(self, out: TextIO) -> int:
        """Write every record as one JSON line to ``out``; return how many."""
        count = 0
        for record in self.records():
            out.write(json.dumps(record.as_json(), ensure_ascii=False, sort_keys=True) + "\n")
            count += 1
        return count

    # Queries the executor and the policy input need.

    def last_time(self, kinds: tuple[str, ...], target: str | None = None) -> float | None:
        """The time of the latest record of one of ``kinds`` (on ``target`` when given), or None."""
        marks = ",".join("?" * len(kinds))
        sql = f"SELECT MAX(time_us) FROM audit WHERE kind IN ({marks})"
        args: list[Any] = list(kinds)
        if target is not None:
            sql += " AND target = ?"
            args.append(target)
        with self._lock:
            row = self._db().execute(sql, args).fetchone()
        return row[0] / 1e6 if row and row[0] is not None else None

    def count_since(self, kinds: tuple[str, ...], since: float) -> int:
        """Records of one of ``kinds`` at or after ``since`` (unix seconds)."""
        marks = ",".join("?" * len(kinds))
        with self._lock:
            row = (
                self._db()
                .execute(
                    f"SELECT COUNT(*) FROM audit WHERE kind IN ({marks}) AND time_us >= ?",
                    [*kinds, int(since * 1e6)],
                )
                .fetchone()
            )
        return int(row[0])


@dataclass(frozen=True)
class Unreadable:
    """A record whose stored data cannot be read back (not a JSON object)."""

    seq: int


def _readable(row: tuple[Any, ...]) -> Record | Unreadable:
    try:
        return _record(row)
    except ValueError:
        return Unreadable(row[0])


def verify_chain(
    records: Iterable[Record | Unreadable],
    key: bytes | None = None,
    public_key: Verifier | None = None,
    seq: int = 1,
    prev: str = GENESIS,
) -> Verification:
    """Check ``records``, in order, as a chain starting at record ``seq`` whose predecessor's hash is ``prev``
    (the whole log by default; a later start checks what a log backend kept of it): sequence, links, hashes, and
    with ``key`` the MACs, with ``public_key`` the signatures (every record must then be signed). The first broken
    record ends the check."""
    count, expected_seq = 0, seq
    for record in records:
        if isinstance(record, Unreadable):
            return Verification(False, count, prev, record.seq, f"record {record.seq}: its data is not JSON")
        seq = record.seq
        problem = None
        if seq != expected_seq:
            problem = f"record {expected_seq} is missing (found {seq} next)"
        elif record.prev != prev:
            problem = f"record {seq}: prev does not match the hash of record {seq - 1}"
        elif record_hash(record.body()) != record.hash:
            problem = f"record {seq}: its content does not match its hash"
        elif key is not None and not hmac.compare_digest(record.mac or "", record_mac(key, record.hash)):
            problem = f"record {seq}: its MAC does not match (wrong key, or rewritten without it)"
        elif public_key is not None and not record.sig:
            problem = f"record {seq}: it is not signed (written before signing was on, or stripped)"
        elif public_key is not None and not public_key.verify(record.hash, record.sig):
            problem = f"record {seq}: its signature does not match (wrong public key, or rewritten without it)"
        if problem:
            return Verification(False, count, prev, seq if seq == expected_seq else expected_seq, problem)
        prev, count, expected_seq = record.hash, count + 1, seq + 1
    return Verification(True, count, prev)


def authentic(record: Record, key: bytes | None = None, public_key: Verifier | None = None) -> bool:
    """Whether ``record`` matches its hash and, with ``key``, its MAC, with ``public_key``, its signature (links to
    other records aside)."""
    if record_hash(record.body()) != record.hash:
        return False
    if key is not None and not hmac.compare_digest(record.mac or "", record_mac(key, record.hash)):
        return False
    return public_key is None or (bool(record.sig) and public_key.verify(record.hash, record.sig))


def from_json(value: Mapping[str, Any]) -> Record:
    """A record from its JSON (:meth:`Record.as_json`, ``rootward audit export``, a shipped record's body).

    Raises:
        ValueError: a field is missing or of the wrong type.
    """
    try:
        data = value["data"]
        if not isinstance(data, dict):
            raise ValueError("data is not an object")
        fields = (value["seq"], value["time_us"], value["kind"], value["request_id"], value["target"], value["actor"])
        seq, time_us, kind, request_id, target, actor = fields
        prev, digest, mac, sig = value["prev"], value["hash"], value.get("mac"), value.get("sig")
    except (KeyError, TypeError) as e:
        raise ValueError(f"not an audit record: {e}") from e
    if not (isinstance(seq, int) and isinstance(time_us, int) and isinstance(kind, str) and isinstance(actor, str)):
        raise ValueError("not an audit record: seq, time_us, kind or actor of the wrong type")
    if not (isinstance(prev, str) and isinstance(digest, str)):
        raise ValueError("not an audit record: prev or hash is not text")
    return Record(seq, time_us, kind, request_id, target, actor, data, prev, digest, mac, sig)


def _record(row: tuple[Any, ...]) -> Record:
    seq, time_us, kind, request_id, target, actor, data, prev, digest, mac, sig = row
    value = json.loads(data)
    if not isinstance(value, dict):
        raise ValueError("data is not an object")
    return Record(seq, time_us, kind, request_id, target, actor, value, prev, digest, mac, sig)
