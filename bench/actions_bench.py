"""Guarded-executor figures: a policy decision on the shipped bundle, and a durable audit append.

- ``policy_decision_ms``: ``PolicyEngine.decide`` on a realistic input document (a medium-risk patch of a
  Deployment with blast radius, diagnosis, history), the bundle compiled once; median of rounds of 200 decisions.
  It includes the worker-thread hand-off that enforces the timeout, setting the input, the compiled plan and
  reading the decision.
- ``audit_append_us``: ``AuditLog.append`` of a ~300-byte ``decision`` record as the executor writes it (read the
  head, hash, insert, commit in WAL mode at the default ``synchronous=NORMAL``: survives ``kill -9``, no fsync; the
  checkpoints on their own thread) on the local disk; median of rounds of 500. ``audit_append_hmac_us`` with an
  HMAC key, ``audit_append_signed_us`` with an Ed25519 signing key.
- ``audit_intent_us``: the same log appending ``intent`` records, which commit with ``synchronous=FULL`` (an fsync:
  they survive a power loss, and so does every record before them); one in six records of an executed action.
- ``audit_append_full_us``: every record at ``synchronous=FULL`` (``policies.audit.synchronous: FULL``, and what
  every append cost before).
- ``audit_append_autocheckpoint_us``: ``NORMAL`` with SQLite's own checkpoints inside the commits (1,000 pages),
  to show what moving them to a thread saves.
- ``sqlite_full_commit_us``: the floor under the FULL figures, measured in the same run on the same disk: a bare
  300-byte INSERT committed with ``synchronous=FULL`` (one fsync of the write-ahead log).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from rootward.policies.audit import AuditLog
from rootward.policies.engine import PolicyEngine
from rootward.policies.signing import Signer
from rootward.storage import Checkpointer, open_database, transaction

DOCUMENT: dict[str, Any] = {
    "schema": 1,
    "mode": "autonomous",
    "action": {
        "kind": "patch_resources",
        "tier": "medium",
        "read_only": False,
        "target": {"kind": "Deployment", "namespace": "shop", "name": "cart"},
        "target_id": "Deployment/shop/cart",
        "params": {"container": "cart", "limits": {"memory": "256Mi"}},
    },
    "blast_radius": {
        "pods_total": 5,
        "pods_affected": 5,
        "pods_at_once": 1,
        "replicas_before": 5,
        "replicas_after": 5,
        "namespaces": ["shop"],
        "pdbs": [{"name": "cart", "disruptions_allowed": 1}],
        "dependents": ["service:shop/frontend", "service:shop/checkout"],
    },
    "diagnosis": {"incident_id": "inc-1", "summary": "cart OOMKilled 4 times in 10 min", "confidence": 0.9},
    "history": {"last_action_on_target_s_ago": 7200.0, "actions_last_hour": 2},
    "now": {"unix": 1_700_000_000.0, "rfc3339": "2023-11-14T22:13:20Z"},
    "approval": None,
}


@dataclass(frozen=True)
class ActionsFigures:
    policy_decision_ms: float
    audit_append_us: float
    audit_append_hmac_us: float
    audit_append_signed_us: float
    audit_intent_us: float
    audit_append_full_us: float
    audit_append_autocheckpoint_us: float
    sqlite_full_commit_us: float


def _median_per_call(fn: Any, calls: int, rounds: int) -> float:
    per_call = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(calls):
            fn()
        per_call.append((time.perf_counter() - started) / calls)
    return statistics.median(per_call)


def run(rounds: int = 7) -> ActionsFigures:
    engine = PolicyEngine()
    assert engine.ok, engine.error
    assert engine.decide(DOCUMENT).result == "allow"
    decision_s = _median_per_call(lambda: engine.decide(DOCUMENT), 200, rounds)
    engine.close()
    data = {"decision": DOCUMENT["action"], "result": "allow", "reasons": ["approved by alice"]}
    appends = {}
    signer = Signer(Ed25519PrivateKey.generate())
    variants: dict[str, tuple[str, dict[str, Any]]] = {
        "plain": ("decision", {}),
        "hmac": ("decision", {"hmac_key": b"bench-key"}),
        "signed": ("decision", {"signer": signer}),
        "intent": ("intent", {}),
        "full": ("decision", {"synchronous": "FULL"}),
        "autocheckpoint": ("decision", {}),
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, (kind, options) in variants.items():
            with AuditLog(Path(tmp) / f"{name}.db", **options) as log:
                log.append(kind, data, "req", "Deployment/shop/cart")
                if name == "autocheckpoint":  # SQLite's default: a commit past 1,000 log pages checkpoints itself
                    log.close()
                    log.open()
                    log._db().execute("PRAGMA wal_autocheckpoint = 1000")
                    log._checkpointer = _NoCheckpointer(log.path)
                appends[name] = _median_per_call(
                    lambda log=log, kind=kind: log.append(kind, data, "req", "Deployment/shop/cart"), 500, rounds
                )
        conn = open_database(
            Path(tmp) / "floor.db", "floor", ["CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT)"], "FULL"
        )

        def commit() -> None:
            with transaction(conn):
                conn.execute("INSERT INTO t (b) VALUES (?)", ("x" * 300,))

        floor = _median_per_call(commit, 500, rounds)
        conn.close()
    us = {name: seconds * 1e6 for name, seconds in appends.items()}
    return ActionsFigures(
        decision_s * 1e3,
        us["plain"],
        us["hmac"],
        us["signed"],
        us["intent"],
        us["full"],
        us["autocheckpoint"],
        floor * 1e6,
    )


class _NoCheckpointer(Checkpointer):
    """Leaves checkpoints to SQLite (for ``audit_append_autocheckpoint_us``)."""

    def start(self) -> None:
        pass


if __name__ == "__main__":
    print(run())
