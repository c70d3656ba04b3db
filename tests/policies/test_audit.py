"""The audit log: hash chain, append-only triggers, HMAC, tamper detection, kill -9, and its commands."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from rootward.cli import main
from rootward.clock import ManualClock
from rootward.policies.audit import GENESIS, AuditLog, canonical, record_hash
from rootward.policies.errors import AuditError


@pytest.fixture
def log(tmp_path: Path) -> AuditLog:
    with AuditLog(tmp_path / "audit.db", ManualClock()) as log:
        yield log  # type: ignore[misc]


def _fill(log: AuditLog, n: int = 5) -> None:
    for i in range(n):
        log.append(
            "decision", {"result": "allow", "i": i, "reasons": ["ünïcode ok"]}, f"req-{i}", "Deployment/shop/cart"
        )


def test_records_chain_each_to_the_previous_hash(log: AuditLog) -> None:
    _fill(log, 3)
    records = list(log.records())
    assert [r.seq for r in records] == [1, 2, 3]
    assert records[0].prev == GENESIS
    assert records[1].prev == records[0].hash
    assert record_hash(records[2].body()) == records[2].hash
    assert log.verify().ok
    assert log.verify().head == records[-1].hash


@pytest.mark.parametrize("statement", ["UPDATE audit SET kind = 'x' WHERE seq = 1", "DELETE FROM audit WHERE seq = 2"])
def test_sqlite_refuses_to_update_or_delete_records(log: AuditLog, statement: str) -> None:
    _fill(log, 3)
    conn = sqlite3.connect(log.path)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute(statement)
    conn.close()
    assert log.verify().ok


def _tamper(path: Path, statement: str) -> None:
    """What someone with the file and the sqlite3 shell can do: drop the triggers, then edit."""
    conn = sqlite3.connect(path)
    conn.execute("DROP TRIGGER audit_no_update")
    conn.execute("DROP TRIGGER audit_no_delete")
    conn.execute(statement)
    conn.commit()
    conn.close()


@pytest.mark.parametrize(
    ("statement", "broken", "problem"),
    [
        pytest.param(
            "UPDATE audit SET data = replace(data, 'allow', 'deny') WHERE seq = 3",
            3,
            "content does not match",
            id="edited",
        ),
        pytest.param("DELETE FROM audit WHERE seq = 2", 2, "record 2 is missing", id="removed"),
        pytest.param("UPDATE audit SET actor = 'mallory' WHERE seq = 4", 4, "content does not match", id="actor"),
    ],
)
def test_verify_names_the_first_broken_record(log: AuditLog, statement: str, broken: int, problem: str) -> None:
    _fill(log, 5)
    _tamper(log.path, statement)
    result = log.verify()
    assert not result.ok
    assert result.broken_seq == broken
    assert result.problem is not None
    assert problem in result.problem
    assert result.records == broken - 1


def test_a_rebuilt_chain_passes_without_the_key_but_not_with_it(tmp_path: Path) -> None:
    key = b"k3y"
    with AuditLog(tmp_path / "audit.db", ManualClock(), hmac_key=key) as log:
        _fill(log, 3)
        assert log.verify(key).ok
        records = list(log.records())
    # Rewrite record 2 and recompute every hash after it: a consistent chain, but the MACs are the old ones.
    conn = sqlite3.connect(tmp_path / "audit.db")
    conn.execute("DROP TRIGGER audit_no_update")
    prev = records[0].hash
    for r in records[1:]:
        data = {**r.data, "result": "deny"} if r.seq == 2 else r.data
        body = {**r.body(), "data": data, "prev": prev}
        digest = record_hash(body)
        conn.execute(
            "UPDATE audit SET data = ?, prev = ?, hash = ? WHERE seq = ?", (canonical(data), prev, digest, r.seq)
        )
        prev = digest
    conn.commit()
    conn.close()
    with AuditLog(tmp_path / "audit.db") as log:
        assert log.verify().ok
        result = log.verify(key)
    assert not result.ok
    assert result.broken_seq == 2
    assert result.problem is not None
    assert "MAC" in result.problem


def test_data_that_is_not_json_is_refused(log: AuditLog) -> None:
    with pytest.raises(AuditError, match="JSON"):
        log.append("decision", {"x": float("nan")})
    assert list(log.records()) == []


def test_history_queries_find_the_last_action_on_a_target_and_count_recent_ones(tmp_path: Path) -> None:
    clock = ManualClock(1000.0)
    with AuditLog(tmp_path / "audit.db", clock) as log:
        log.append("executed", {}, "r1", "Deployment/shop/cart")
        clock.advance(10)
        log.append("executed", {}, "r2", "Deployment/shop/email")
        clock.advance(10)
        log.append("decision", {}, "r3", "Deployment/shop/cart")
        assert log.last_time(("executed",), "Deployment/shop/cart") == 1000.0
        assert log.last_time(("executed",), "Pod/shop/x") is None
        assert log.count_since(("executed",), 1005.0) == 1


_APPENDER = """
import sys
from rootward.policies.audit import AuditLog
log = AuditLog(sys.argv[1], synchronous=sys.argv[2]).open()
for i in range(1_000_000):
    record = log.append("intent" if i % 5 == 0 else "decision", {"i": i})
    print(record.seq, flush=True)  # acknowledged: append has returned
"""


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
def test_every_acknowledged_record_survives_kill_9_mid_append_and_the_chain_verifies(
    tmp_path: Path, synchronous: str
) -> None:
    path = tmp_path / "audit.db"
    child = subprocess.Popen(
        [sys.executable, "-c", _APPENDER, str(path), synchronous], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    acknowledged = 0
    while acknowledged < 300:  # past the first checkpointer nudge (every 200 appends)
        acknowledged = int(child.stdout.readline())
    time.sleep(0.2)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    acknowledged = int([str(acknowledged), *child.stdout.read().split()][-1])  # the last seq it saw committed
    child.stdout.close()
    with AuditLog(path) as log:
        result = log.verify()
        assert result.ok, result.problem
        assert result.records >= acknowledged > 300
        assert [r.seq for r in log.records()][:acknowledged] == list(range(1, acknowledged + 1))


def test_audit_verify_and_export_commands(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with AuditLog(path, ManualClock()) as log:
        _fill(log, 4)
    ok = CliRunner().invoke(main, ["audit", "verify", str(path)], env={})
    assert ok.exit_code == 0, ok.output
    assert "ok, 4 records" in ok.output
    out = tmp_path / "audit.jsonl"
    exported = CliRunner().invoke(main, ["audit", "export", str(path), "--output", str(out)], env={})
    assert exported.exit_code == 0, exported.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["seq"] for r in lines] == [1, 2, 3, 4]
    assert lines[0]["time"] == "2023-11-14T22:13:20.000000Z"
    _tamper(path, "UPDATE audit SET kind = 'approved' WHERE seq = 3")
    broken = CliRunner().invoke(main, ["audit", "verify", str(path)], env={})
    assert broken.exit_code == 1
    assert "BROKEN at record 3" in broken.output


def test_audit_verify_checks_macs_with_the_configured_key(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with AuditLog(path, ManualClock(), hmac_key=b"right") as log:
        _fill(log, 2)
    good = CliRunner().invoke(main, ["audit", "verify", str(path)], env={"ROOTWARD_POLICIES__AUDIT__HMAC_KEY": "right"})
    assert good.exit_code == 0
    assert "MACs checked" in good.output
    bad = CliRunner().invoke(main, ["audit", "verify", str(path)], env={"ROOTWARD_POLICIES__AUDIT__HMAC_KEY": "wrong"})
    assert bad.exit_code == 1
    assert "MAC does not match" in bad.output


def test_audit_verify_of_a_missing_file_says_so(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["audit", "verify", str(tmp_path / "nope.db")], env={})
    assert result.exit_code == 1
    assert "no such audit log" in result.output


def test_only_intent_records_wait_for_an_fsync_at_the_default_synchronous_normal(log: AuditLog) -> None:
    statements: list[str] = []
    log._db().set_trace_callback(statements.append)
    log.append("decision", {"i": 1})
    log.append("intent", {"i": 2})
    log.append("executed", {"i": 3})
    log._db().set_trace_callback(None)
    switches = [s for s in statements if s.startswith("PRAGMA synchronous")]
    assert switches == ["PRAGMA synchronous = FULL", "PRAGMA synchronous = NORMAL"]
    intent_insert = next(i for i, s in enumerate(statements) if s.startswith("INSERT") and "'intent'" in s)
    assert (
        statements.index("PRAGMA synchronous = FULL") < intent_insert < statements.index("PRAGMA synchronous = NORMAL")
    )
    assert log._db().execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL again


def test_a_burst_of_appends_leaves_a_bounded_write_ahead_log_once_checkpointed(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with AuditLog(path) as log:
        for i in range(1500):
            log.append("decision", {"i": i, "pad": "x" * 200})
        deadline = time.monotonic() + 10
        while Path(f"{path}-wal").stat().st_size > 4 << 20 and time.monotonic() < deadline:
            time.sleep(0.05)
            log.append("decision", {"after": True})  # a write after a complete checkpoint restarts the log
        assert Path(f"{path}-wal").stat().st_size <= 4 << 20
        assert log.verify().ok


def test_audit_export_into_a_pipe_that_stops_reading_is_no_error(tmp_path: Path) -> None:
    """`rootward audit export | head` printed "Error: [Errno 32] Broken pipe" and exited 1."""
    path = tmp_path / "audit.db"
    with AuditLog(path, ManualClock(1_700_000_000.0)) as log:
        for i in range(5000):
            log.append("decision", {"i": i, "pad": "x" * 200})
    rootward = Path(sys.executable).with_name("rootward")
    run = subprocess.run(
        f"'{rootward}' audit export '{path}' | head -1", shell=True, capture_output=True, text=True, timeout=120
    )
    assert json.loads(run.stdout)["seq"] == 1
    assert "Broken pipe" not in run.stderr
    assert "Error" not in run.stderr
