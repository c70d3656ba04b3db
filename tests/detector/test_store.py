"""Incidents in SQLite: what is stored comes back the same after a restart; a damaged file is a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from rootward.detector.detector import Anomaly
from rootward.detector.incidents import Incidents
from rootward.detector.store import IncidentStore
from rootward.storage import StorageError


class Flat:
    def related(self, a: str, b: str) -> bool:
        return a == b

    def depends_on(self, a: str, b: str) -> bool:
        return False

    def neighbourhood(self, entity: str) -> tuple[set[str], set[str]]:
        return {entity}, {entity}


def anomaly(entity: str, t: float) -> Anomaly:
    return Anomaly(entity, "p95", 1.0, 0.1, 7.5, t - 10, t)


def test_incidents_survive_a_restart_open_ones_still_open(tmp_path: Path) -> None:
    store = IncidentStore(tmp_path / "incidents.db")
    store.open()
    before = Incidents(Flat(), [store], hold_s=60)
    before.observe(100, [anomaly("db", 100), anomaly("cache", 100)])
    before.observe(170, [anomaly("db", 170)])  # cache went quiet at 100: resolved at 170
    before.acknowledge(before.open[0].id)
    store.close()

    again = IncidentStore(tmp_path / "incidents.db")
    again.open()
    after = Incidents(Flat(), [again], hold_s=60)
    assert again.load(after) == 2
    assert [i.as_json() for i in after.listed()] == [i.as_json() for i in before.listed()]
    (still,) = after.open
    assert still.acknowledged
    after.observe(180, [anomaly("db", 180)])  # it goes on as the same incident
    assert len(after.listed()) == 2
    again.close()


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "incidents.db"
    path.write_bytes(b"not a database" * 100)
    with pytest.raises(StorageError, match=r"incidents\.db"):
        IncidentStore(path).open()


def test_a_write_that_fails_is_counted_not_raised(tmp_path: Path) -> None:
    failures: list[int] = []
    store = IncidentStore(tmp_path / "incidents.db", failed=lambda: failures.append(1))
    store.open()
    assert store.conn is not None
    store.conn.execute("DROP TABLE incidents")  # the file changed under us
    incidents = Incidents(Flat(), [store])
    incidents.observe(100, [anomaly("db", 100)])
    assert failures == [1]
    assert len(incidents.open) == 1
    store.close()


def test_a_reasoning_trace_is_written_when_it_is_new_not_on_every_update(tmp_path: Path) -> None:
    store = IncidentStore(tmp_path / "incidents.db")
    store.open()
    assert store.conn is not None
    statements: list[str] = []
    store.conn.set_trace_callback(statements.append)
    incidents = Incidents(Flat(), [store], hold_s=600)
    incidents.observe(100, [anomaly("db", 100)])
    (incident,) = incidents.open
    incident.trace = {"steps": [{"tool": "metric_history", "summary": "x" * 1000}]}
    for t in (110, 120, 130):
        incidents.observe(t, [anomaly("db", t)])
    incident.trace = {"steps": []}  # a new diagnosis brings a new trace
    incidents.observe(140, [anomaly("db", 140)])
    assert sum("SET trace" in s for s in statements) == 2
    store.close()

    again = IncidentStore(tmp_path / "incidents.db")
    again.open()
    restored = Incidents(Flat(), [again])
    again.load(restored)
    assert restored.open[0].trace == {"steps": []}
    again.close()


def test_a_resolved_incidents_trace_leaves_memory_and_is_read_from_the_store(tmp_path: Path) -> None:
    store = IncidentStore(tmp_path / "incidents.db")
    store.open()
    incidents = Incidents(Flat(), [store], hold_s=60)
    incidents.observe(100, [anomaly("db", 100)])
    (incident,) = incidents.open
    incident.trace = {"steps": [{"tool": "subgraph"}]}
    incidents.observe(110, [anomaly("db", 110)])  # stored with the trace
    incidents.observe(200, [])  # quiet past the hold: resolved
    assert incident.status == "resolved"
    assert incident.trace is None
    assert store.trace(incident.id) == {"steps": [{"tool": "subgraph"}]}
    assert store.trace("nope") is None
    store.close()
