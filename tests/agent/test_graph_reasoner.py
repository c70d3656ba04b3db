"""The default reasoner on hand-made incident contexts, its schema, and the agent as an incident sink."""

from __future__ import annotations

import logging
import math

import networkx as nx
import pytest
from pydantic import ValidationError

from rootward.agent import ContextBuilder, Diagnoser, Diagnosis, GraphReasoner, Hypothesis, IncidentContext
from rootward.agent.context import Call
from rootward.detector.detector import Anomaly
from rootward.detector.incidents import Incident, Incidents

FRONTEND, CHECKOUT, PAYMENT = "service:shop/frontend", "service:shop/checkout", "service:shop/payment"
PAYMENT_POD = "pod:shop/payment-1"
CALLS: tuple[Call, ...] = ((FRONTEND, CHECKOUT, 100, 0), (CHECKOUT, PAYMENT, 100, 0))


def anomaly(entity: str, signal: str, score: float, t: float = 100.0) -> Anomaly:
    return Anomaly(entity, signal, 1.0, 0.1, score, t, t + 10)


def context(*anomalies: Anomaly, calls: tuple[Call, ...] = CALLS) -> IncidentContext:
    return IncidentContext("inc-1", 200.0, 100.0, anomalies, {PAYMENT_POD: PAYMENT}, calls)


def test_a_saturated_callee_comes_first_above_the_callers_that_feel_it() -> None:
    diagnosis = GraphReasoner().diagnose(
        context(
            anomaly(FRONTEND, "p95", 8),
            anomaly(CHECKOUT, "p95", 9),
            anomaly(CHECKOUT, "client_p95", 9),
            anomaly(PAYMENT_POD, "k8s.pod.cpu.usage", 30, t=90),
            anomaly(PAYMENT, "p95", 12),
        )
    )
    first = diagnosis.hypotheses[0]
    assert diagnosis.services()[:1] == [PAYMENT]
    assert first.fault_class == "resource_saturation"
    assert first.kind == "service"
    assert {e.entity for e in first.evidence} == {PAYMENT_POD, PAYMENT}
    assert first.falsified_by
    confidences = [h.confidence for h in diagnosis.hypotheses]
    assert confidences == sorted(confidences, reverse=True)
    assert 0 < sum(confidences) <= 1.0001


def test_equal_latency_along_a_chain_points_at_its_deepest_callee() -> None:
    diagnosis = GraphReasoner().diagnose(
        context(anomaly(FRONTEND, "p95", 8), anomaly(CHECKOUT, "p95", 8), anomaly(PAYMENT, "p95", 8))
    )
    assert diagnosis.services()[0] == PAYMENT


def test_error_signals_make_a_code_error() -> None:
    errors = GraphReasoner().diagnose(
        context(anomaly(PAYMENT, "log_template:7", 9), anomaly(PAYMENT, "error_ratio", 9))
    )
    assert errors.hypotheses[0].fault_class == "code_error"


def test_the_same_context_gives_the_same_diagnosis() -> None:
    ctx = context(anomaly(FRONTEND, "p95", 8), anomaly(PAYMENT, "p95", 8), anomaly(CHECKOUT, "p95", 8))
    assert GraphReasoner().diagnose(ctx) == GraphReasoner().diagnose(ctx)


def test_no_anomalies_give_no_hypotheses() -> None:
    assert GraphReasoner().diagnose(context()).hypotheses == []


def test_the_schema_refuses_confidences_outside_0_1_and_unknown_fields() -> None:
    with pytest.raises(ValidationError):
        Hypothesis(entity=PAYMENT, kind="service", fault_class="code_error", confidence=1.5)
    with pytest.raises(ValidationError):
        Diagnosis.model_validate({"incident": "i", "reasoner": "llm", "at": 0, "verdict": "scale to 0"})


class Graph:
    def __init__(self, calls: list[tuple[str, str]]) -> None:
        self.g = nx.DiGraph(calls)

    def related(self, a: str, b: str) -> bool:
        return a == b or self.g.has_edge(a, b) or self.g.has_edge(b, a)

    def depends_on(self, a: str, b: str) -> bool:
        return self.g.has_edge(a, b)

    def neighbourhood(self, entity: str) -> tuple[set[str], set[str]]:
        return {entity}, {entity, *(nx.all_neighbors(self.g, entity) if entity in self.g else ())}


def test_the_diagnoser_stores_the_latest_diagnosis_on_the_incident() -> None:
    builder = ContextBuilder(lambda: CALLS)
    incidents = Incidents(Graph([(FRONTEND, CHECKOUT), (CHECKOUT, PAYMENT)]), [Diagnoser(GraphReasoner(), builder)])
    incidents.observe(110, [anomaly(CHECKOUT, "p95", 8), anomaly(PAYMENT, "p95", 20)])
    (incident,) = incidents.open
    assert incident.diagnosis is not None
    assert incident.diagnosis["hypotheses"][0]["entity"] == PAYMENT
    assert incident.as_json()["diagnosis"] == incident.diagnosis


class Broken:
    name = "broken"

    def diagnose(self, context: IncidentContext) -> Diagnosis:
        raise RuntimeError("boom")


def test_a_failing_reasoner_is_logged_and_counted_and_incidents_go_on(caplog: pytest.LogCaptureFixture) -> None:
    diagnoser = Diagnoser(Broken(), ContextBuilder(lambda: ()))
    incidents = Incidents(Graph([]), [diagnoser])
    with caplog.at_level(logging.ERROR):
        incidents.observe(110, [anomaly(PAYMENT, "p95", 8)])
    assert diagnoser.failures == 1
    assert incidents.open[0].diagnosis is None
    assert "diagnosis of incident" in caplog.text


def test_the_context_keeps_the_current_episode_and_bounds_its_size() -> None:
    incident = Incident("inc-1", 100, 500)
    for i in range(80):
        incident.add(anomaly(f"service:shop/s{i}", "p95", 6 + i, t=100), 110)
    incident.add(anomaly(PAYMENT, "p95", 7, t=480), 490)
    ctx = ContextBuilder(lambda: CALLS, max_anomalies=50, lookback_s=60).build(incident, 500, episode_start=480)
    assert [a.entity for a in ctx.anomalies] == [PAYMENT]
    ctx = ContextBuilder(lambda: CALLS, max_anomalies=50).build(incident, 500, episode_start=100)
    assert len(ctx.anomalies) == 50
    assert ctx.anomalies[0].score == 85


def test_the_context_bounds_a_hubs_calls_keeping_the_incidents_own_and_the_busiest() -> None:
    """Payment is called by 1,000 services, each of which also calls 2 others: 3,000 edges, 600 kept."""
    calls = [(f"service:shop/c{i}", PAYMENT, i, 0) for i in range(1000)]
    calls += [(f"service:shop/c{i}", f"service:shop/x{i}-{j}", 10**6, 0) for i in range(1000) for j in range(2)]
    incident = Incident("inc-1", 100, 110)
    incident.add(anomaly(PAYMENT, "p95", 9, t=100), 110)
    ctx = ContextBuilder(lambda: calls, max_calls=600).build(incident, 110)
    assert len(ctx.calls) == 600
    assert all(callee == PAYMENT for _, callee, _, _ in ctx.calls)  # the incident's own edges before busier others
    assert min(requests for _, _, requests, _ in ctx.calls) == 400  # the busiest 600 of them
    assert list(ctx.calls) == sorted(ctx.calls)


def test_a_slower_network_into_a_service_makes_it_the_first_network_delay_suspect() -> None:
    """Checkout's calls to payment spend longer between the spans (payment's net_in, checkout's client_net), and
    checkout and frontend are slower for it: payment, whose own spans are not slower, comes first."""
    diagnosis = GraphReasoner().diagnose(
        context(
            anomaly(FRONTEND, "p95", 7),
            anomaly(CHECKOUT, "p95", 8),
            anomaly(CHECKOUT, "client_net", 20),
            anomaly(PAYMENT, "net_in", 20),
        )
    )
    first = diagnosis.hypotheses[0]
    assert first.entity == PAYMENT
    assert first.fault_class == "network_delay"


def test_a_starved_caller_whose_every_callee_sees_a_slower_network_comes_first() -> None:
    """CPU contention on frontend: its own latency rises and every service it calls sees its calls arrive later."""
    cart, ads = "service:shop/cart", "service:shop/ads"
    calls: tuple[Call, ...] = ((FRONTEND, CHECKOUT, 100, 0), (FRONTEND, cart, 100, 0), (FRONTEND, ads, 100, 0))
    diagnosis = GraphReasoner().diagnose(
        context(
            anomaly(FRONTEND, "p50", 12),
            *(anomaly(callee, "net_in", 20) for callee in (CHECKOUT, cart, ads)),
            calls=calls,
        )
    )
    assert diagnosis.services()[0] == FRONTEND


def measured(entity: str, signal: str, value: float, expected: float, score: float) -> Anomaly:
    return Anomaly(entity, signal, value, expected, score, 100.0, 110.0)


SHIPPING, EMAIL, CART = "service:shop/shipping", "service:shop/email", "service:shop/cart"
FAN_OUT: tuple[Call, ...] = (
    (FRONTEND, CHECKOUT, 100, 0),
    *((CHECKOUT, callee, 100, 0) for callee in (PAYMENT, SHIPPING, EMAIL, CART)),
)


def test_a_caller_slower_than_its_slower_calls_explain_is_the_cause() -> None:
    """CPU contention on checkout (the shared OnlineBoutique day): its median rises 2.4 s, and its calls to two of
    its four callees take 0.2 s longer (its client spans stretch; the others' rises were too small to flag): those
    rises explain a sixth of its own, so the walk keeps checkout's slowdown with checkout."""
    diagnosis = GraphReasoner().diagnose(
        context(
            measured(CHECKOUT, "p50", 2.6, 0.17, 28),
            measured(CHECKOUT, f"in:{FRONTEND}.latency", 2.6, 0.23, 20),
            measured(PAYMENT, f"in:{CHECKOUT}.latency", 0.2, 0.009, 29),
            measured(SHIPPING, f"in:{CHECKOUT}.latency", 0.2, 0.008, 19),
            calls=FAN_OUT,
        )
    )
    assert diagnosis.services()[0] == CHECKOUT


def test_a_callee_whose_slower_calls_explain_its_caller_is_the_cause() -> None:
    """A network delay into payment: checkout's calls to it take 0.3 s longer and checkout is 0.3 s slower for it,
    shipping's calls are as usual. The slowdown flows down to payment."""
    diagnosis = GraphReasoner().diagnose(
        context(
            measured(CHECKOUT, "p50", 0.5, 0.2, 12),
            measured(PAYMENT, f"in:{CHECKOUT}.latency", 0.31, 0.01, 25),
            calls=FAN_OUT,
        )
    )
    assert diagnosis.services()[0] == PAYMENT
    assert diagnosis.hypotheses[0].fault_class == "network_delay"  # its own spans are not slower


def test_an_edge_whose_calls_dropped_is_evidence_about_the_caller() -> None:
    diagnosis = GraphReasoner().diagnose(context(measured(PAYMENT, f"in:{CHECKOUT}.rate", 0.1, 2.0, 9)))
    (only,) = diagnosis.hypotheses
    assert only.entity == CHECKOUT
    assert [e.entity for e in only.evidence] == [PAYMENT]


def test_a_lone_candidate_is_not_certain() -> None:
    """Even one candidate is the wrong service sometimes: 3 of 34 confident first ranks on the Nezha days."""
    (only,) = GraphReasoner().diagnose(context(anomaly(PAYMENT, "error_ratio", 9))).hypotheses
    assert only.confidence == pytest.approx(0.92)


def test_an_edge_signal_is_read_by_its_last_part_not_by_the_callers_name() -> None:
    """A caller named checkout-client: its calls' errors are still the callee's errors, not client latency."""
    caller = "service:shop/checkout-client"
    calls: tuple[Call, ...] = ((caller, PAYMENT, 100, 0), (caller, SHIPPING, 100, 0))
    diagnosis = GraphReasoner().diagnose(
        context(
            measured(caller, "p50", 0.5, 0.2, 6),
            measured(PAYMENT, f"in:{caller}.error_ratio", 0.2, 0.0, 9),
            calls=calls,
        )
    )
    first = diagnosis.hypotheses[0]
    assert first.entity == PAYMENT
    assert first.fault_class == "code_error"  # its callers' errors: an error of its own, whatever the caller's name


def test_the_context_holds_all_the_calls_of_the_incidents_callers() -> None:
    """Payment's gap (net_in) may be a starved caller's: how many of checkout's calls slowed needs all of them, not
    only those to the incident's services. Checkout calls payment and four others; a gap into payment alone points at
    payment (a single known callee would have split it half and half)."""
    others = tuple((CHECKOUT, f"service:shop/s{i}", 100, 0) for i in range(4))
    calls = (*CALLS, *others, ("service:shop/s0", "service:shop/db", 100, 0))
    incident = Incident("inc-1", 100, 110)
    incident.add(anomaly(PAYMENT, "net_in", 20), 110)
    ctx = ContextBuilder(lambda: calls).build(incident, 120)
    assert set(ctx.calls) == {CALLS[1], *others}  # not the calls of a callee's callee, nor of its caller's caller
    first = GraphReasoner().diagnose(ctx).hypotheses[0]
    assert first.entity == PAYMENT
    assert first.confidence > 0.8


def test_the_quantiles_of_one_distribution_count_once_and_a_huge_z_is_capped() -> None:
    from rootward.agent.graph_reasoner import _weights

    pod = "pod:shop/train-1"
    weights = _weights(
        [
            anomaly(pod, "nezha.pod.client.latency.p90", 760),
            anomaly(pod, "nezha.pod.client.latency.p99", 990),
            anomaly(pod, "nezha.pod.client.latency.p95", 900),
            anomaly(PAYMENT, "p95", 10),
            anomaly(PAYMENT, "p99", 12),
            anomaly(PAYMENT, "log_missing:12", 5),
        ],
        z0=5.0,
        z_cap=25.0,
    )
    capped = pytest.approx(math.log1p(25 / 5))
    assert weights[:3] == [capped, 0.0, 0.0]  # one of the three, at the cap (the largest are all capped alike)
    assert weights[3:] == [0.0, pytest.approx(math.log1p(12 / 5)), pytest.approx(math.log1p(5 / 5))]


def test_a_callee_whose_evidence_comes_a_minute_later_does_not_take_its_callers_errors() -> None:
    """A return fault in basic (the shared TrainTicket day): its new error template and error lines come first; a
    minute later the pod of train, which basic calls, reports its calls 28 s slow. basic is the cause."""
    basic, train = "service:tt/basic", "service:tt/train"
    train_pod = "pod:tt/train-1"
    calls: tuple[Call, ...] = ((basic, train, 100, 0), (basic, PAYMENT, 100, 0))
    ctx = IncidentContext(
        "inc-1",
        200.0,
        90.0,
        (
            anomaly(basic, "log_template:215", 8, t=90),
            anomaly(basic, "log_errors", 17, t=140),
            anomaly(train_pod, "nezha.pod.client.latency.p99", 990, t=150),
            anomaly(train_pod, "nezha.pod.client.latency.p95", 900, t=150),
            anomaly(train_pod, "nezha.pod.client.latency.p90", 760, t=150),
        ),
        {train_pod: train},
        calls,
    )
    assert GraphReasoner().diagnose(ctx).services()[0] == basic


def test_a_starved_caller_keeps_its_mass_from_callees_that_hold_only_its_own_measurements() -> None:
    """CPU contention on food: two of its four callees see its calls arrive later (net_in), and its callers see
    the same of food. What the callees hold came from food's calls: it does not pull food's mass down to them."""
    food, train, station, travel, delivery = (f"service:tt/{n}" for n in ("food", "train", "station", "travel", "d"))
    calls: tuple[Call, ...] = (
        (FRONTEND, food, 100, 0),
        *((food, callee, 100, 0) for callee in (train, station, travel, delivery)),
    )
    diagnosis = GraphReasoner().diagnose(
        context(
            anomaly(food, "net_in", 18, t=90),
            anomaly(food, "client_net", 22),
            anomaly(train, "net_in", 35),
            anomaly(station, "net_in", 16),
            calls=calls,
        )
    )
    assert diagnosis.services()[0] == food


def test_a_share_of_a_later_anomaly_is_as_late_as_the_anomaly() -> None:
    """A caller with no anomaly of its own that takes a share of its callee's later network gap is discounted for
    lateness like the callee, not left undiscounted above it."""
    c, p, f, x = (f"service:shop/{n}" for n in ("c", "p", "f", "x"))
    ctx = IncidentContext(
        "inc-1",
        300.0,
        60.0,
        (anomaly(x, "log_template:3", 8, t=60), anomaly(p, "net_in", 20, t=200)),
        {},
        ((c, p, 100, 0), (f, x, 100, 0)),
    )
    ranked = GraphReasoner().diagnose(ctx).services()
    assert ranked[0] == x
    assert ranked.index(p) < ranked.index(c)


def test_two_slowed_callees_of_ten_do_not_make_their_caller_starved() -> None:
    """A network fault on the node of two of a gateway's ten callees: their gaps are theirs, and the gateway's
    slowdown still flows down to them."""
    front, b, c = "service:shop/front", "service:shop/b", "service:shop/c"
    calls: tuple[Call, ...] = tuple((front, t, 100, 0) for t in (b, c, *(f"service:shop/o{i}" for i in range(8))))
    diagnosis = GraphReasoner().diagnose(
        context(
            anomaly(front, "p95", 9),
            anomaly(front, "client_p95", 9),
            anomaly(b, "net_in", 20),
            anomaly(c, "net_in", 20),
            calls=calls,
        )
    )
    assert diagnosis.services()[0] in (b, c)


def test_three_slowed_callees_of_seven_make_their_caller_starved() -> None:
    """OnlineBoutique's frontend under a CPU fault: its own p50 rose, and the gaps of its calls to 3 of its 7 callees
    (no other caller's): three networks slowing at once is no likelier than one starved caller."""
    front = "service:shop/frontend"
    slowed = [f"service:shop/{n}" for n in ("ads", "checkout", "recommendation")]
    others = [f"service:shop/o{i}" for i in range(4)]
    calls: tuple[Call, ...] = tuple((front, t, 100, 0) for t in (*slowed, *others))
    diagnosis = GraphReasoner().diagnose(
        context(anomaly(front, "p50", 5), *(anomaly(t, "net_in", 12) for t in slowed), calls=calls)
    )
    assert diagnosis.services()[0] == front


def test_three_slowed_callees_of_ten_under_a_caller_that_did_not_slow_are_theirs() -> None:
    """A node's network fault under 3 of a gateway's 10 callees: their gaps, and the same gaps seen from the gateway's
    side (client_net), but the gateway's own latency did not rise: the callees are named, not the gateway."""
    front = "service:shop/front"
    slowed = [f"service:shop/{n}" for n in ("a", "b", "c")]
    calls: tuple[Call, ...] = tuple((front, t, 100, 0) for t in (*slowed, *(f"service:shop/o{i}" for i in range(7))))
    diagnosis = GraphReasoner().diagnose(
        context(anomaly(front, "client_net", 12), *(anomaly(t, "net_in", 12) for t in slowed), calls=calls)
    )
    assert diagnosis.services()[0] in slowed


def test_what_a_service_stopped_logging_and_tracing_because_nobody_called_it_is_its_callers() -> None:
    """Shaped on ts-basic-service's return on TrainTicket: travel2 stops calling seat, which stops calling order-other.
    Seat's and order-other's usual lines and spans stop (strong: they come in every trace), basic logs a few errors
    40 s later. The services that merely went quiet are not named: the silence began at travel2, named first with
    their silence as its evidence (the real day's basic is then second, its errors later than travel2's)."""
    travel2, seat, other, basic = (f"service:ts/{n}" for n in ("travel2", "seat", "order-other", "basic"))
    calls: tuple[Call, ...] = ((travel2, basic, 100, 0), (travel2, seat, 100, 0), (seat, other, 100, 0))
    diagnosis = GraphReasoner().diagnose(
        context(
            anomaly(travel2, f"span_missing:{seat} /api/v1/seatservice/seats", 10),
            anomaly(seat, f"span_missing:{other} /api/v1/orderOtherService", 7),
            anomaly(seat, "log_missing:42", 6),
            anomaly(other, f"span_missing:{other} OrderOtherRepository.find", 7),
            anomaly(other, "log_missing:56", 6),
            anomaly(basic, "log_errors", 6, t=140),
            calls=calls,
        )
    )
    assert diagnosis.services() == [travel2, basic]
    first = diagnosis.hypotheses[0]
    assert first.fault_class == "code_error"
    assert {(e.entity, e.signal) for e in first.evidence} >= {(other, "log_missing:56"), (seat, "log_missing:42")}


@pytest.mark.parametrize("caller_shows", ["client_p95", "error_ratio"])
def test_a_hung_callees_silence_stays_its_own(caller_shows: str) -> None:
    """Payment hangs: its spans and lines stop, checkout's calls to it are missing their server side and time out
    (slower, or failing). The silence is payment's, not checkout having stopped calling."""
    diagnosis = GraphReasoner().diagnose(
        context(
            anomaly(CHECKOUT, f"span_missing:{PAYMENT} /charge", 10),
            anomaly(PAYMENT, "log_missing:7", 8),
            anomaly(PAYMENT, f"span_missing:{PAYMENT} db.query", 8),
            anomaly(CHECKOUT, caller_shows, 12),
        )
    )
    assert diagnosis.services()[0] == PAYMENT


def test_a_callers_gap_that_no_callee_shows_is_its_own() -> None:
    """TrainTicket's ts-preserve-service under a CPU fault: the gaps on its calls rose (client_net) and no callee's
    net_in did, so no callee's network explains them: the caller is a candidate of its own (starved, or its node's
    network). With the callee's gap too, it is the callee's network first, as before."""
    alone = GraphReasoner().diagnose(context(anomaly(CHECKOUT, "client_net", 12)))
    assert alone.services() == [CHECKOUT]
    both = GraphReasoner().diagnose(context(anomaly(CHECKOUT, "client_net", 12), anomaly(PAYMENT, "net_in", 12)))
    assert both.services()[0] == PAYMENT


def test_a_starved_callers_gaps_beside_its_cpu_make_a_resource_saturation() -> None:
    """The gaps on its calls (client_net) outweigh its pod's CPU, yet with resource evidence the class is resource
    saturation, not a network delay (the module's rule: network_delay without resource signals)."""
    diagnosis = GraphReasoner().diagnose(
        context(anomaly(CHECKOUT, "client_net", 12), anomaly(CHECKOUT, "k8s.pod.cpu.usage", 7))
    )
    first = diagnosis.hypotheses[0]
    assert (first.entity, first.fault_class) == (CHECKOUT, "resource_saturation")
