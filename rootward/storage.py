"""Rootward's own state on disk: SQLite databases in WAL mode, each with a versioned schema.

Every stage that keeps state across restarts (the topology history today; incidents and the audit log later) opens
its database here, so they all get the same settings:

- ``journal_mode=WAL``: readers (API queries) never block the writer (a checkpoint thread), and a commit is one
  sequential append to the write-ahead log;
- ``synchronous=NORMAL`` by default: a commit survives the process being killed (``kill -9``, OOM), but the last
  commits before a power loss or kernel crash may roll back. Callers that promise durability past a power loss
  (the topology history, whose checkpoints back counters that must never go backwards) pass ``FULL``;
- checkpoints (folding the log into the file, with fsyncs) happen inside the commit that crosses 1,000 log pages,
  unless the writer turns them off and runs a :class:`Checkpointer` thread instead (the audit log does);
- ``busy_timeout``: a second connection waits for a lock instead of failing at once;
- ``auto_vacuum=INCREMENTAL`` on new files, so that pruning can give space back (:func:`reclaim`);
- a ``schema_version`` table with one row per component: :func:`open_database` applies the component's migrations
  that the file has not seen yet, in order, each in its own transaction, and refuses a file written by a newer
  Rootward.

Errors: :class:`StorageError` (a subclass of :class:`~rootward.errors.RootwardError`) wraps every ``sqlite3`` error
with the file's path: a file that cannot be created or opened, is not a database or is corrupt, or has a newer
schema. It is permanent until someone acts on the file, so the message says what to do.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO, Literal

from rootward.errors import RootwardError

logger = logging.getLogger(__name__)

#: How long a connection waits for another connection's lock, in milliseconds.
BUSY_TIMEOUT_MS = 5_000


class StorageError(RootwardError):
    """A database cannot be opened, read or written; the message names the file."""


def open_database(
    path: str | Path,
    component: str,
    migrations: Sequence[str],
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
    check: bool = True,
) -> sqlite3.Connection:
    """Open (creating it and its directory if needed) the SQLite database at ``path`` and bring ``component``'s
    schema up to date: ``migrations[i]`` is the SQL script that takes the schema from version ``i`` to ``i + 1``.

    The connection is in autocommit mode (use :func:`transaction`) and may be used from any thread, one at a time
    (the caller holds a lock). ``check`` runs ``PRAGMA quick_check`` first, which finds damaged pages in O(size).

    Raises:
        StorageError: the file cannot be created or opened, is not a SQLite database, fails the check, or was
            written by a newer version of ``component``'s schema.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except (OSError, sqlite3.Error) as e:
        raise StorageError(f"{path}: cannot open: {e}") from e
    try:
        _configure(conn, synchronous, check)
        _migrate(conn, component, migrations)
    except sqlite3.Error as e:
        conn.close()
        raise StorageError(f"{path}: cannot open: {e}") from e
    except StorageError as e:
        conn.close()
        raise StorageError(f"{path}: {e}") from e
    return conn


def _configure(conn: sqlite3.Connection, synchronous: str, check: bool) -> None:
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    if conn.execute("PRAGMA page_count").fetchone()[0] == 0:
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # only takes effect before the first table
    if check:
        problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            raise StorageError(f"the database is damaged: {'; '.join(problems[:3])}")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise StorageError(f"cannot use write-ahead logging (journal mode {mode!r}): a network file system?")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("PRAGMA foreign_keys = ON")


def _migrate(conn: sqlite3.Connection, component: str, migrations: Sequence[str]) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (component TEXT PRIMARY KEY, version INTEGER NOT NULL)")
    row = conn.execute("SELECT version FROM schema_version WHERE component = ?", (component,)).fetchone()
    current = int(row[0]) if row else 0
    if current > len(migrations):
        raise StorageError(
            f"{component} schema version {current} was written by a newer Rootward (this one knows "
            f"{len(migrations)}); upgrade, or move the file away to start afresh"
        )
    for version in range(current, len(migrations)):
        with transaction(conn):
            for statement in _statements(migrations[version]):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version (component, version) VALUES (?, ?) "
                "ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                (component, version + 1),
            )


def _statements(script: str) -> list[str]:
    """Split a migration script into statements at the semicolons that end one (``sqlite3.complete_statement``),
    so that a trigger's ``BEGIN ...; END`` stays whole (migrations hold DDL only: no semicolons inside literals)."""
    statements: list[str] = []
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \t\n;"):
                statements.append(pending.strip())
            pending = ""
    if pending.strip(" \t\n;"):
        statements.append(pending.strip().rstrip(";"))
    return statements


def schema_version(conn: sqlite3.Connection, component: str) -> int:
    """The schema version of ``component`` in this database (0 when it has none)."""
    row = conn.execute("SELECT version FROM schema_version WHERE component = ?", (component,)).fetchone()
    return int(row[0]) if row else 0


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` (take the write lock now, not at the first write) ... ``COMMIT``; ``ROLLBACK`` on any
    exception, which is re-raised."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def reclaim(conn: sqlite3.Connection) -> None:
    """Give the pages that deletes freed back to the file system (files created here use incremental
    auto-vacuum), and fold the write-ahead log into the database file."""
    conn.execute("PRAGMA incremental_vacuum").fetchall()  # frees one page a step: step to the end
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()


def replace_file(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write ``path`` whole through ``write`` into a file beside it, synced, then renamed over it: a reader (or a
    crash) sees the old file or the new one, never half of one.

    Raises:
        OSError: it cannot be written (the old file, if any, stays; nothing is left beside it).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    try:
        with temporary.open("wb") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except OSError:
        temporary.unlink(missing_ok=True)
        raise


def size_bytes(path: str | Path) -> int:
    """Bytes the database at ``path`` takes on disk: the file, its write-ahead log and shared-memory index."""
    total = 0
    for suffix in ("", "-wal", "-shm"):
        with suppress(FileNotFoundError):
            total += Path(str(path) + suffix).stat().st_size
    return total


class Checkpointer:
    """Folds a database's write-ahead log into the file on a thread and connection of its own, so that a writer
    that turns SQLite's automatic checkpoints off (``PRAGMA wal_autocheckpoint = 0``) never pays for one in a commit.

    A checkpoint fsyncs the log and the database file: at ``synchronous=NORMAL`` that is the only fsync there is,
    and a commit that happens to cross the automatic threshold (1,000 pages) waits for it (milliseconds on a busy
    disk). Here a PASSIVE checkpoint, which never blocks writers, runs every ``interval_s``, or sooner after
    :meth:`nudge`. It changes nothing about durability: committed transactions are in the log either way.
    ``start``/``shutdown`` are safe to repeat; errors are logged and retried at the next turn.
    """

    def __init__(self, path: str | Path, interval_s: float = 1.0) -> None:
        self.path = Path(path)
        self.interval_s = interval_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=f"checkpoint {self.path.name}", daemon=True)
            self._thread.start()

    def nudge(self) -> None:
        """Checkpoint soon (the writer has appended a lot since the last one)."""
        self._wake.set()

    def shutdown(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            self._wake.set()
            thread.join()

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error:
            logger.exception(
                "%s: cannot open a connection to checkpoint; the writer's log grows until it closes", self.path
            )
            return
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            while not self._stop.is_set():
                self._wake.wait(self.interval_s)
                self._wake.clear()
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error:
                    logger.exception("%s: checkpoint failed; trying again in %.1f s", self.path, self.interval_s)
        finally:
            conn.close()
