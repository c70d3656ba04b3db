"""The LLM reasoner in a running App: configured under agent.llm, diagnosing on the diagnoser's worker thread, its
diagnosis and reasoning trace served by the API, stored with the incident, re-run by ``rootward diagnose``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from rootward.agent.scripted import ScriptedLLM, answer, tool_calls
from rootward.app import App
from rootward.cli import main
from rootward.config import LOCAL_PORTS, NOTHING_ON_DISK, load_config
from rootward.detector.detector import Anomaly
from rootward.detector.incidents import Incident, Incidents
from rootward.detector.store import IncidentStore
from rootward.errors import ConfigError
from rootward.model import SpanBatch

POD = "pod:shop/cart-1"
ANSWER = {
    "hypotheses": [{"entity": POD, "kind": "pod", "fault_class": "resource_saturation", "confidence": 0.6}],
    "summary": "cart-1 runs out of memory",
}


def local(*overrides: str) -> list[str]:
    return [*LOCAL_PORTS, *NOTHING_ON_DISK, *overrides]


@pytest.fixture
def app(llm: ScriptedLLM) -> Iterator[App]:
    config = load_config(
        environ={"SCRIPTED_KEY": "sk-from-the-environment-123456"},
        overrides=local(
            "agent.llm.enabled=true",
            f"agent.llm.base_url={llm.base_url}",
            "agent.llm.model=scripted-model",
            "agent.llm.api_key_env=SCRIPTED_KEY",
            "agent.llm.max_retries=0",
        ),
    )
    app = App(config)
    app.start()
    yield app
    app.shutdown()


def open_incident(app: App) -> Incident:
    now = time.time()
    app.incidents.observe(now, [Anomaly(POD, "k8s:OOMKilled", 1.0, 0.0, 10.0, now - 10, now)])
    (incident,) = app.incidents.listed("open")
    assert app.diagnoser is not None
    app.diagnoser.flush()
    return incident


def test_an_incident_gets_an_llm_diagnosis_and_its_trace_is_served(
    app: App, llm: ScriptedLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCRIPTED_KEY", "read-at-start-only")  # the key was read when the app started
    llm.add(tool_calls(("kubernetes_events", {"entity": POD})), answer(ANSWER))
    incident = open_incident(app)
    api = f"http://127.0.0.1:{app.api.port}/api/v1/incidents/{incident.id}"
    diagnosis = httpx.get(f"{api}/diagnosis").json()
    assert diagnosis["reasoner"] == "llm"
    assert diagnosis["hypotheses"][0]["entity"] == POD
    trace = httpx.get(f"{api}/trace").json()
    assert trace["outcome"] == "answered"
    assert [s["type"] for s in trace["steps"]] == ["model", "tool", "model"]
    assert "trace" not in httpx.get(api).json()  # the incident itself stays short
    assert llm.headers[0]["authorization"] == "Bearer sk-from-the-environment-123456"
    # Again with the graph reasoner: no trace then; then with the LLM from the command line.
    again = httpx.post(f"{api}/diagnose", params={"llm": "false"}, timeout=30).json()
    assert again["reasoner"] == "graph"
    assert httpx.get(f"{api}/trace").status_code == 404
    llm.add(answer(ANSWER))
    result = CliRunner().invoke(main, ["diagnose", incident.id, "--llm", "--api", f"http://127.0.0.1:{app.api.port}"])
    assert result.exit_code == 0, result.output
    assert "by the llm reasoner: cart-1 runs out of memory" in result.output
    assert f"1. {POD}  resource_saturation  60%" in result.output
    assert httpx.get(f"{api}/trace").status_code == 200


def test_an_endpoint_failure_in_the_app_is_counted_and_the_graph_answers(app: App, llm: ScriptedLLM) -> None:
    incident = open_incident(app)  # nothing scripted: the endpoint answers 500
    assert incident.diagnosis is not None
    assert incident.diagnosis["reasoner"] == "graph"
    assert incident.diagnosis["fallback"].startswith("Unavailable: status 500")
    metrics = httpx.get(f"http://127.0.0.1:{app.api.port}/metrics").text
    assert 'rootward_agent_llm_fallbacks_total{reason="Unavailable"} 1.0' in metrics
    # Updates of the open incident within agent.llm.min_interval_s cost no further investigation.
    later = incident.updated + 30
    app.incidents.observe(later, [Anomaly(POD, "k8s:OOMKilled", 1.0, 0.0, 10.0, later - 10, later)])
    assert app.diagnoser is not None
    app.diagnoser.flush()
    assert incident.updated == later
    assert len(llm.requests) == 1


def test_without_an_llm_the_api_refuses_llm_diagnoses_and_has_no_trace() -> None:
    app = App(load_config(environ={}, overrides=local()))
    app.start()
    try:
        now = time.time()
        app.incidents.observe(now, [Anomaly(POD, "k8s:OOMKilled", 1.0, 0.0, 10.0, now - 10, now)])
        (incident,) = app.incidents.listed("open")
        api = f"http://127.0.0.1:{app.api.port}/api/v1/incidents/{incident.id}"
        assert httpx.get(f"{api}/diagnosis").json()["reasoner"] == "graph"
        assert httpx.get(f"{api}/trace").status_code == 404
        refused = httpx.post(f"{api}/diagnose", params={"llm": "true"})
        assert refused.status_code == 409
        assert "agent.llm.enabled" in refused.json()["message"]
        assert httpx.post(f"{api[: -len(incident.id)]}nope/diagnose").status_code == 404
    finally:
        app.shutdown()


def test_a_resolved_incidents_new_diagnosis_is_stored_and_survives_a_restart(llm: ScriptedLLM, tmp_path: Path) -> None:
    """``rootward diagnose --llm`` on a resolved incident: stored (memory no longer holds its trace), not told to
    Slack or the responder; a restarted App serves it from the store."""
    sets = [
        *LOCAL_PORTS,
        "topology.history.enabled=false",
        f"storage.data_dir={tmp_path}",
        "agent.llm.enabled=true",
        f"agent.llm.base_url={llm.base_url}",
        "agent.llm.model=scripted-model",
        "agent.llm.max_retries=0",
    ]
    app = App(load_config(environ={}, overrides=sets))
    app.start()
    try:
        incident = open_incident(app)  # nothing scripted: the graph answers
        assert app.incidents.resolve(incident.id, time.time()) is incident
        told: list[str] = []
        app.incidents.sinks.append(type("Sink", (), {"incident_changed": lambda _, i, change: told.append(change)})())
        llm.add(answer(ANSWER))
        api = f"http://127.0.0.1:{app.api.port}/api/v1/incidents/{incident.id}"
        assert httpx.post(f"{api}/diagnose", params={"llm": "true"}, timeout=30).json()["reasoner"] == "llm"
        assert told == []
    finally:
        app.shutdown()
    again = App(load_config(environ={}, overrides=sets))
    again.start()
    try:
        api = f"http://127.0.0.1:{again.api.port}/api/v1/incidents/{incident.id}"
        assert httpx.get(f"{api}/diagnosis").json()["reasoner"] == "llm"
        assert httpx.get(f"{api}/trace").json()["outcome"] == "answered"
    finally:
        again.shutdown()


def test_the_trace_is_stored_with_the_incident_and_loaded_back(tmp_path: Path) -> None:
    incident = Incident("inc-7", 100.0, 110.0)
    incident.diagnosis = {"incident": "inc-7", "reasoner": "llm", "at": 110.0, "hypotheses": [], "summary": ""}
    incident.trace = {"incident": "inc-7", "outcome": "answered", "steps": [{"type": "model", "step": 0}]}
    store = IncidentStore(tmp_path / "incidents.db")
    store.open()
    store.incident_changed(incident, "opened")
    store.close()
    again = IncidentStore(tmp_path / "incidents.db")
    again.open()
    incidents = Incidents(topology=_NoGraph())
    assert again.load(incidents) == 1
    again.close()
    (loaded,) = incidents.listed()
    assert loaded.trace == incident.trace
    assert "trace" not in loaded.as_json()


class _NoGraph:
    def related(self, a: str, b: str) -> bool:
        return a == b

    def depends_on(self, a: str, b: str) -> bool:
        return False

    def neighbourhood(self, entity: str) -> tuple[set[str], set[str]]:
        return {entity}, {entity}


def test_the_llm_section_is_off_by_default_and_checks_its_patterns() -> None:
    config = load_config(environ={})
    assert config.agent.llm.enabled is False
    assert config.agent.llm.redaction.defaults is True
    with pytest.raises(ConfigError, match="redaction pattern 'bad' does not compile"):
        load_config(environ={}, overrides=["agent.llm.redaction.patterns={bad: '(unclosed'}"])
    with pytest.raises(ConfigError) as refused:
        load_config(environ={"ROOTWARD_AGENT__LLM__API_KEY": "[sk-secret-value"}, overrides=["agent.llm.max_steps=0"])
    assert "sk-secret-value" not in str(refused.value)
    shown = json.dumps(load_config(environ={"ROOTWARD_AGENT__LLM__API_KEY": "sk-secret-value"}).model_dump(mode="json"))
    assert "sk-secret-value" not in shown


def test_the_detector_and_the_incidents_share_one_lock_so_no_thread_waits_on_another_for_ever(app: App) -> None:
    """A closing window (the ticker's thread) folds anomalies into incidents under the detector's lock; the log
    miner, the Kubernetes signals and a diagnosis on demand tell incidents on other threads, whose sinks (the
    diagnoser) read series windows. With two locks those were taken in both orders. Both threads here run at once."""
    import threading

    assert app.detector.held() is app.incidents.held()
    errors: list[BaseException] = []

    def run(step: Callable[[int], object]) -> None:
        try:
            for n in range(200):
                step(n)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    def observe(n: int) -> None:
        now = time.time()
        app.incidents.observe(now, [Anomaly(f"pod:shop/cart-{n % 3}", "k8s:OOMKilled", 1.0, 0.0, 10.0, now - 10, now)])

    threads = [
        threading.Thread(target=run, args=(lambda n: app.detector.tick(),), daemon=True),
        threading.Thread(target=run, args=(observe,), daemon=True),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    incident = app.incidents.listed("open")[0]
    assert app.diagnose(incident.id, llm=False) is not None


class Spans:
    """A pipeline that keeps the spans' (service, name, gen_ai.operation.name) it is sent."""

    def __init__(self) -> None:
        self.seen: list[tuple[str | None, str]] = []

    def consume_traces(self, batch: SpanBatch) -> None:
        for row in range(len(batch)):
            resource = batch.resources[batch.resource[row]]
            self.seen.append((resource.get("service.name"), batch.strings[batch.name[row]]))

    def consume_metrics(self, batch: object) -> None:
        pass

    def consume_logs(self, batch: object) -> None:
        pass


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_the_agents_genai_spans_are_sent_over_otlp_when_traces_endpoint_is_set(llm: ScriptedLLM, protocol: str) -> None:
    """Another Rootward's receiver stands in for the node's Collector: the spans of one LLM diagnosis reach it,
    a chat span per model call and an execute_tool span per tool call, under service.name rootward."""
    spans = Spans()
    collector = App(load_config(environ={}, overrides=local()), consumer=spans)
    collector.start()
    port = collector.receiver.http.port if protocol != "grpc" else collector.receiver.grpc.port
    endpoint = f"http://127.0.0.1:{port}" if protocol != "grpc" else f"127.0.0.1:{port}"
    config = load_config(
        environ={},
        overrides=local(
            "agent.llm.enabled=true",
            f"agent.llm.base_url={llm.base_url}",
            "agent.llm.model=scripted-model",
            "agent.llm.max_retries=0",
            f"traces.endpoint={endpoint}",
            f"traces.protocol={protocol}",
        ),
    )
    app = App(config)
    app.start()
    try:
        llm.add(tool_calls(("kubernetes_events", {"entity": POD})), answer(ANSWER))
        open_incident(app)
    finally:
        app.shutdown()  # flushes the batch
    try:
        collector.receiver.queue.wait_idle()
        assert ("rootward", "chat scripted-model") in spans.seen
        assert ("rootward", "execute_tool kubernetes_events") in spans.seen
        assert {service for service, _ in spans.seen} == {"rootward"}
    finally:
        collector.shutdown()


def test_without_a_traces_endpoint_no_provider_is_made() -> None:
    app = App(load_config(environ={}, overrides=local()))
    try:
        assert app.tracer_provider is None
    finally:
        app.shutdown()
