"""Incidents on disk: an incident sink that upserts each changed incident into SQLite (WAL, rootward/storage.py),
and loads them back at start so open incidents survive a restart and the API still lists the recent ones.

One row per incident: its id, status, severity, times, the whole incident as JSON (``Incident.as_json``), and in a
column of its own the LLM's reasoning trace (up to a few hundred KB), written only when the incident has a new one,
not on each of its updates; once it resolves, its trace is read from here, not held in memory (the API lists
up to 1,000 incidents). Rows older than ``retention_s`` (by their last update) are pruned as incidents change.
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
    "ALTER TABLE incidents ADD COLUMN trace TEXT;",
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
    notified = doc.get("notified")
    incident.notified = {str(k): str(v) for k, v in notified.items()} if isinstance(notified, dict) else {}
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
        self._traces: dict[str, object] = {}  # incident id -> the trace last written (held: identity compares)
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
                "SELECT doc, trace FROM incidents ORDER BY opened DESC, rowid DESC LIMIT ?", (limit,)
            ).fetchall()
        restored = []
        for doc, trace in reversed(rows):
            data = json.loads(doc)
            if trace is not None and data.get("status") == "open":
                data["trace"] = json.loads(trace)
            restored.append(from_json(data))
            self._traces[restored[-1].id] = restored[-1].trace
        incidents.restore(restored)
        return len(restored)

    def trace(self, incident_id: str) -> Any:
        """A stored incident's reasoning trace (JSON data), or None: what the API serves for a resolved incident,
        whose trace is no longer held in memory."""
        if self.conn is None:
            return None
        with self._lock:
            row = self.conn.execute("SELECT trace FROM incidents WHERE id = ?", (incident_id,)).fetchone()
        return None if row is None or row[0] is None else json.loads(row[0])

    def note_message(self, incident_id: str, notifier: str, message: str) -> None:
        """Keep where an incident was told (its Slack message's ts) now, not with its next change: a restart in
        between would post it again. Never raises (a failure is counted and logged)."""
        if self.conn is None:
            return
        try:
            with self._lock, transaction(self.conn):
                self.conn.execute(
                    "UPDATE incidents SET doc = json_set(doc, '$.notified', json(json_patch("
                    "COALESCE(json_extract(doc, '$.notified'), '{}'), json_object(?, ?)))) WHERE id = ?",
                    (notifier, message, incident_id),
                )
        except (sqlite3.Error, StorageError) as e:
            self.failed()
            logger.warning("%s: where incident %s was told is not stored: %s", self.path, incident_id, e)

    def incident_changed(self, incident: Incident, change: str) -> None:
        if self.conn is None:
            return
        doc = incident.as_json()
        trace, new_trace = incident.trace, incident.trace is not self._traces.get(incident.id)
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
                if new_trace:
                    self.conn.execute(
                        "UPDATE incidents SET trace = ? WHERE id = ?",
                        (None if trace is None else json.dumps(trace), incident.id),
                    )
                self.conn.execute("DELETE FROM incidents WHERE updated < ?", (incident.updated - self.retention_s,))
            if new_trace:
                self._traces[incident.id] = trace
            if incident.status == "resolved":  # stored: memory holds the traces of open incidents only
                self._traces.pop(incident.id, None)
                incident.trace = None
        except (sqlite3.Error, StorageError):
            logger.exception("cannot store incident %s in %s", incident.id, self.path)
            self.failed()
