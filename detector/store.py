"""Incidents on disk: an incident sink that upserts each changed incident into SQLite (WAL, rootward/storage.py),
and loads them back at start so open incidents survive a restart and the API still lists the recent ones.

One row per incident: its id, status, severity, times, and the whole incident as JSON (``Incident.as_json``).
Rows older than ``retention_s`` (by their last update) are pruned as incidents change.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rootward.detector.detector import Anomaly
from rootward.detector.incidents import Incident, Incidents
from rootward.detector.kube import Change
from rootward.storage import StorageError, open_database, transaction

logger = logging.getLogger(__name__)

MIGRATIONS = (
    """
    CREATE TABLE incidents (
        id TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        severity TEXT NOT NULL,
        opened REAL NOT NULL,
        updated REAL NOT NULL,
        resolved REAL,
        doc TEXT NOT NULL
    );
    CREATE INDEX incidents_updated ON incidents (updated);
    """,
)


def from_json(doc: dict[str, Any]) -> Incident:
    """An incident back from :meth:`Incident.as_json`."""
    incident = Incident(str(doc["id"]), float(doc["opened"]), float(doc["updated"]))
    incident.status = doc["status"]
    incident.resolved = doc.get("resolved")
    incident.reopened = int(doc.get("reopened", 0))
    incident.acknowledged = bool(doc.get("acknowledged", False))
    incident.silenced_until = doc.get("silenced_until")
    incident.candidates = list(doc.get("candidates", []))
    for entity in doc.get("entities", []):
        incident.first_seen[entity["id"]] = float(entity["first_seen"])
        incident.peak[entity["id"]] = float(entity["peak_score"])
    incident.changes = [Change(**c) for c in doc.get("changes", [])]
    incident.diagnosis = doc.get("diagnosis")
    incident.action = doc.get("action")
    incident.trace = doc.get("trace")
    for a in doc.get("anomalies", []):
        anomaly = Anomaly(**a)
        incident.anomalies[(anomaly.entity, anomaly.signal)] = anomaly
    return incident


class IncidentStore:
    """The sink. Writes happen on the pipeline thread (one small upsert per changed incident per window)."""

    def __init__(
        self, path: str | Path, retention_s: float = 30 * 86400.0, failed: Callable[[], None] | None = None
    ) -> None:
        self.path = Path(path)
        self.retention_s = retention_s
        self.failed = failed or (lambda: None)
        self.conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def open(self) -> None:
        """Open (or create) the database. Raises StorageError naming the file."""
        self.conn = open_database(self.path, "incidents", MIGRATIONS)

    def close(self) -> None:
        with self._lock:
            if self.conn is not None:
                self.conn.close()
                self.conn = None

    def load(self, incidents: Incidents, limit: int = 1000) -> int:
        """Put the newest ``limit`` stored incidents back: open ones stay open (their hold runs from their last
        update), resolved ones are listed. Returns how many."""
        if self.conn is None:
            return 0
        with self._lock:
            rows = self.conn.execute(
                "SELECT doc FROM incidents ORDER BY opened DESC, rowid DESC LIMIT ?", (limit,)
            ).fetchall()
        restored = [from_json(json.loads(doc)) for (doc,) in reversed(rows)]
        incidents.restore(restored)
        return len(restored)

    def incident_changed(self, incident: Incident, change: str) -> None:
        if self.conn is None:
            return
        doc = incident.as_json(with_trace=True)
        try:
            with self._lock, transaction(self.conn):
                self.conn.execute(
                    "INSERT INTO incidents (id, status, severity, opened, updated, resolved, doc) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET status = excluded.status, "
                    "severity = excluded.severity, updated = excluded.updated, resolved = excluded.resolved, "
                    "doc = excluded.doc",
                    (incident.id, incident.status, incident.severity, incident.opened, incident.updated,
                     incident.resolved, json.dumps(doc)),
                )  # fmt: skip
                self.conn.execute("DELETE FROM incidents WHERE updated < ?", (incident.updated - self.retention_s,))
        except (sqlite3.Error, StorageError):
            logger.exception("cannot store incident %s in %s", incident.id, self.path)
            self.failed()
