"""Rootward's SQLite helper: WAL mode and its settings, schema migrations applied once and in order, and clear
errors for files it cannot use."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from rootward.storage import StorageError, open_database, schema_version, size_bytes, transaction

V1 = "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)"
V2 = "ALTER TABLE notes ADD COLUMN author TEXT; CREATE INDEX notes_by_author ON notes (author)"


def test_a_new_database_is_created_in_wal_mode_with_its_schema(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "state.db"
    conn = open_database(path, "notes", [V1], synchronous="FULL")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental
    assert schema_version(conn, "notes") == 1
    with transaction(conn):
        conn.execute("INSERT INTO notes (body) VALUES ('hello')")
    assert size_bytes(path) > 0
    conn.close()


def test_migrations_run_once_each_in_order_and_components_share_a_file(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    open_database(path, "notes", [V1]).close()
    conn = open_database(path, "notes", [V1, V2])
    assert schema_version(conn, "notes") == 2
    conn.execute("INSERT INTO notes (body, author) VALUES ('x', 'me')")
    conn.close()
    other = open_database(path, "audit", ["CREATE TABLE records (id INTEGER PRIMARY KEY)"])
    assert (schema_version(other, "notes"), schema_version(other, "audit")) == (2, 1)
    other.close()


def test_a_failed_transaction_rolls_back(tmp_path: Path) -> None:
    conn = open_database(tmp_path / "state.db", "notes", [V1])

    def write_two() -> None:
        with transaction(conn):
            conn.execute("INSERT INTO notes (body) VALUES ('kept?')")
            conn.execute("INSERT INTO notes (body) VALUES (NULL)")

    with pytest.raises(sqlite3.IntegrityError):
        write_two()
    assert conn.execute("SELECT count(*) FROM notes").fetchone()[0] == 0
    conn.close()


def test_a_file_from_a_newer_rootward_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    open_database(path, "notes", [V1, V2]).close()
    with pytest.raises(StorageError, match=r"state.db: notes schema version 2 was written by a newer Rootward"):
        open_database(path, "notes", [V1])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(b"PK\x03\x04 a zip file, not a database" * 50, "file is not a database", id="not-a-database"),
        pytest.param(b"SQLite format 3\x00" + b"\xff" * 4000, "cannot open", id="damaged-header"),
    ],
)
def test_a_file_that_is_not_a_sound_database_is_refused_with_its_path(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(content)
    with pytest.raises(StorageError, match=message) as caught:
        open_database(path, "notes", [V1])
    assert str(path) in str(caught.value)


def test_a_path_below_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(StorageError, match=r"file/state.db: cannot open"):
        open_database(tmp_path / "file" / "state.db", "notes", [V1])
