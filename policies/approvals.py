"""Approvals: actions that wait for a human, with everything the human needs to decide, and when they expire.

An approval holds the request, the diagnosis (summary, confidence, evidence), the blast radius, the policy's
reasons and the server-side dry-run's result: the whole reasoning chain. It is ``pending`` until someone approves
or rejects it, or until ``expires`` passes (then ``expired``: the cluster will have moved on, so the executor
must propose again). Each state change happens once (a conditional UPDATE), so two approvers racing get one
winner and a clear error for the other. Who decided is whoever the caller authenticated (the API maps bearer
tokens to names), never a name the client sends. The executor writes each change to the audit log too.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from rootward.clock import Clock, SystemClock
from rootward.policies.audit import canonical
from rootward.policies.errors import ApprovalError, ApprovalExpired, AuditError, UnknownApproval
from rootward.storage import StorageError, open_database, transaction

Status = Literal["pending", "approved", "rejected", "expired"]

_MIGRATIONS = [
    """
    CREATE TABLE approvals (
        id TEXT PRIMARY KEY,
        request_id TEXT NOT NULL,
        created REAL NOT NULL,
        expires REAL NOT NULL,
        status TEXT NOT NULL,
        decided_by TEXT,
        decided_at REAL,
        comment TEXT,
        payload TEXT NOT NULL
    );
    CREATE INDEX approvals_status ON approvals (status, created)
    """
]
_COLUMNS = "id, request_id, created, expires, status, decided_by, decided_at, comment, payload"


@dataclass(frozen=True)
class Approval:
    id: str
    request_id: str
    created: float
    expires: float
    status: Status
    decided_by: str | None
    decided_at: float | None
    comment: str | None
    payload: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "request_id": self.request_id,
            "created": self.created,
            "expires": self.expires,
            "status": self.status,
            "decided_by": self.decided_by,
            "decided_at": self.decided_at,
            "comment": self.comment,
            **self.payload,
        }


class Approvals:
    """The approvals table (by default in the audit log's file). Thread-safe."""

    def __init__(self, path: str | Path, clock: Clock | None = None, ttl_s: float = 3600.0) -> None:
        self.path = Path(path)
        self.clock = clock or SystemClock()
        self.ttl_s = ttl_s
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                self._conn = open_database(self.path, "approvals", _MIGRATIONS, synchronous="FULL")
            except StorageError as e:
                raise AuditError(str(e)) from e
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def create(self, request_id: str, payload: dict[str, Any]) -> Approval:
        """A new pending approval for ``request_id`` holding ``payload`` (JSON), expiring after ``ttl_s``."""
        now = self.clock.now()
        approval_id = "apr-" + secrets.token_hex(8)
        with self._lock, transaction(self._db()) as conn:
            conn.execute(
                f"INSERT INTO approvals ({_COLUMNS}) VALUES (?, ?, ?, ?, 'pending', NULL, NULL, NULL, ?)",
                (approval_id, request_id, now, now + self.ttl_s, canonical(payload)),
            )
        return Approval(approval_id, request_id, now, now + self.ttl_s, "pending", None, None, None, payload)

    def get(self, approval_id: str) -> Approval | None:
        self.expire_due()
        with self._lock:
            row = self._db().execute(f"SELECT {_COLUMNS} FROM approvals WHERE id = ?", (approval_id,)).fetchone()
        return _approval(row) if row else None

    def pending_count(self) -> int:
        """Approvals waiting for a human now (past-due ones are not counted)."""
        with self._lock:
            row = (
                self._db()
                .execute("SELECT COUNT(*) FROM approvals WHERE status = 'pending' AND expires > ?", (self.clock.now(),))
                .fetchone()
            )
        return int(row[0])

    def listed(self, status: Status | None = "pending", limit: int = 100) -> list[Approval]:
        """Approvals newest first (only ``status``'s when given)."""
        self.expire_due()
        sql, args = f"SELECT {_COLUMNS} FROM approvals", []
        if status is not None:
            sql, args = sql + " WHERE status = ?", [status]
        with self._lock:
            rows = self._db().execute(sql + " ORDER BY created DESC LIMIT ?", [*args, limit]).fetchall()
        return [_approval(r) for r in rows]

    def expire_due(self) -> list[Approval]:
        """Mark pending approvals past their expiry ``expired``; return them."""
        now = self.clock.now()
        with self._lock, transaction(self._db()) as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM approvals WHERE status = 'pending' AND expires <= ?", (now,)
            ).fetchall()
            conn.execute(
                "UPDATE approvals SET status = 'expired', decided_at = ? WHERE status = 'pending' AND expires <= ?",
                (now, now),
            )
        return [_approval(r) for r in rows]

    def withdraw_pending(self, who: str, reason: str) -> list[Approval]:
        """Mark every pending approval ``expired``, decided by ``who`` with ``reason`` as its comment (this
        Rootward may no longer act on them); return them."""
        now = self.clock.now()
        with self._lock, transaction(self._db()) as conn:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM approvals WHERE status = 'pending'").fetchall()
            conn.execute(
                "UPDATE approvals SET status = 'expired', decided_by = ?, decided_at = ?, comment = ? "
                "WHERE status = 'pending'",
                (who, now, reason),
            )
        return [replace(_approval(r), status="expired", decided_by=who, decided_at=now, comment=reason) for r in rows]

    def decide(self, approval_id: str, approve: bool, who: str, comment: str = "") -> Approval:
        """Approve or reject a pending approval, recording who and when.

        Raises:
            ApprovalExpired: it expired first (it is marked so).
            ApprovalError: there is none with this id, or it was already decided.
        """
        now = self.clock.now()
        status = "approved" if approve else "rejected"
        problem: ApprovalError | None = None
        with self._lock, transaction(self._db()) as conn:
            row = conn.execute(f"SELECT {_COLUMNS} FROM approvals WHERE id = ?", (approval_id,)).fetchone()
            current = _approval(row) if row else None
            if current is None:
                problem = UnknownApproval(f"no approval {approval_id!r}")
            elif current.status == "expired" or (current.status == "pending" and current.expires <= now):
                if current.status == "pending":
                    conn.execute(
                        "UPDATE approvals SET status = 'expired', decided_at = ? WHERE id = ?", (now, approval_id)
                    )
                why = current.comment if current.status == "expired" and current.comment else None
                problem = ApprovalExpired(
                    f"approval {approval_id} expired: {why}" if why else
                    f"approval {approval_id} expired (it was open for {self.ttl_s:g} s)"
                )  # fmt: skip
            elif current.status != "pending":
                problem = ApprovalError(f"approval {approval_id} was already {current.status} by {current.decided_by}")
            else:
                conn.execute(
                    "UPDATE approvals SET status = ?, decided_by = ?, decided_at = ?, comment = ? "
                    "WHERE id = ? AND status = 'pending'",
                    (status, who, now, comment, approval_id),
                )
        if problem is not None or current is None:
            raise problem or UnknownApproval(f"no approval {approval_id!r}")
        return replace(
            current, status="approved" if approve else "rejected", decided_by=who, decided_at=now, comment=comment
        )


def _approval(row: tuple[Any, ...]) -> Approval:
    approval_id, request_id, created, expires, status, decided_by, decided_at, comment, payload = row
    return Approval(
        approval_id, request_id, created, expires, status, decided_by, decided_at, comment, json.loads(payload)
    )
