"""The default reasoner: ranks root-cause candidates from the incident context alone (no network, deterministic).

Ideas taken from the published methods (Nezha, MicroRank, MicroRCA, BARO; ../shared/data/published-results):

1. Evidence per candidate. Each anomaly of the incident's current episode counts for the service it belongs to
   (a pod's anomalies for its service; nodes and peers stand for themselves) with weight log1p(min(|z|, ``z_cap``) /
   ``z0``): a big deviation matters more, but one huge series cannot drown the rest (BARO's robust scoring,
   saturated; past z 25 a deviation says no more about the cause, and a pod's client latency at z 1,000 outweighed
   the error logs of the service that failed). The quantiles of one distribution (p50/p95/p99, a pod metric's
   p90/p95/p99) are one piece of evidence, counted once at the largest. A caller's
   client-side latency is also evidence against what it calls, shared among its anomalous callees (the delay may be
   theirs or the network's), and only at ``client_weight`` for the caller itself. A slower network into a
   service (``net_in``: its callers' client spans outlast its server spans by more than usual) is a delay on its
   network, or a CPU-starved caller whose client stretches every call it makes: each caller that measured it (anomalous
   or not: a gap alone opens an incident) takes the share of it that the share of its callees showing it says (all
   of them: the caller; one of six: the callee; a single callee: half). One caller's slower calls to a callee
   (``in:<caller>.latency`` on the callee) are shared the same way between that caller and the callee; a drop in
   its calls (``in:<caller>.rate``) is the caller's. A caller whose calls to half or more of its callees (two of
   them at least, or three whatever their number when its own latency rose) slowed is likely starved itself: what
   those callees hold only from its measurements does not draw its mass in the walk (below). The gaps of a caller's
   calls seen from its side (``client_net``) are its callees' network when a callee's ``net_in`` shows them, else
   its own (starved, or its node's network). What a service stopped logging and tracing because its callers stopped
   calling it is theirs (``_stopped_callers``).
2. Propagation (MicroRCA/MicroRank's personalised PageRank): a random walk over the call graph that moves from a
   caller to its callees in proportion to their own evidence, and restarts at candidates in proportion to theirs.
   A symptom that only propagated up from a callee hands its mass down to the callee; the upstream-most anomalous
   service keeps its own. Where the rises are known, a caller hands down only the share of its own slowdown (its
   server latency's rise, seconds) that the rises of its calls explain: a starved caller 2.4 s slower whose calls
   are 0.2 s slower each keeps most of its mass.
3. Time: the candidate whose first anomaly came first gets ``first_bonus`` (a cause precedes its effects), and one
   whose first evidence came later (its own anomaly, or its share of another's) is discounted by
   exp(-lateness / ``late_s``): a minute later, to 0.37.
4. Changes: a rollout of the candidate shortly before the incident multiplies its score by ``change_bonus`` and
   makes its fault class ``bad_rollout``.

Fault class from the winning candidate's evidence: resource signals (CPU, memory, syscalls, restarts) ->
resource_saturation; node signals -> node_problem; errors (error ratio, error logs and templates, missing log
lines, success rate) -> code_error; client-side latency or a slower network into it (``net_in``: its callers'
client spans outlast its server spans by more than usual) without resource signals -> network_delay; only others'
symptoms -> dependency_failure. Confidence is the candidate's share of the total score, sharpened by ``sharpness``,
times ``1 - unexplained``: even an incident with one candidate names the wrong service sometimes (the cause sent
nothing, or only its effects crossed the thresholds). 0.08 is the share of the shared Nezha days' detected faults
whose first-ranked service was wrong although its share was above 0.8 (3 of 34): the calibration error over both
days' 37 scored faults falls from 0.10 to 0.07 (bench/README.md, with what fitting it on one day gives the other).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import numpy as np

from rootward.agent.context import IncidentContext
from rootward.agent.schema import Diagnosis, EntityKind, Evidence, FaultClass, Hypothesis
from rootward.detector.baseline import edge_of
from rootward.detector.detector import Anomaly

_CLIENT = re.compile(r"client")
_SERVER_LATENCY = ("p50", "p95", "p99")
_NETWORK = re.compile(r"^(net_in|client_net)$")
_RESOURCE = re.compile(r"cpu|memory|syscall|oom|restart|throttl|k8s:(OOMKilled|Evicted)", re.I)
_NODE = re.compile(r"^nezha\.node\.|node\.|k8s:Node", re.I)
_ERROR = re.compile(
    r"error|exception|success|log_warn|log_template|log_missing|k8s:(CrashLoopBackOff|BackOff|Unhealthy)", re.I
)


@dataclass(frozen=True)
class GraphReasonerSettings:
    z0: float = 5.0
    z_cap: float = 25.0
    client_weight: float = 0.5
    alpha: float = 0.85
    first_bonus: float = 0.2
    late_s: float = 60.0
    change_bonus: float = 2.0
    sharpness: float = 2.0
    unexplained: float = 0.08
    max_hypotheses: int = 10


def category(signal: str) -> str:
    """client, network, node, resource, error or other."""
    if signal.startswith("span_missing:"):  # the rest is a service's and a span's name: the sender's words
        return "error"
    if _NETWORK.search(signal):
        return "network"
    if _CLIENT.search(signal):
        return "client"
    if _NODE.search(signal):
        return "node"
    if _RESOURCE.search(signal):
        return "resource"
    if _ERROR.search(signal):
        return "error"
    return "other"


def kind_of(entity: str) -> EntityKind:
    prefix = entity.split(":", 1)[0]
    return prefix if prefix in ("service", "pod", "node") else "peer"  # type: ignore[return-value]


class GraphReasoner:
    name = "graph"

    def __init__(self, settings: GraphReasonerSettings | None = None) -> None:
        self.settings = settings or GraphReasonerSettings()

    def diagnose(self, context: IncidentContext) -> Diagnosis:
        s = self.settings
        g = _gather(context, s)
        own, first, rise = g.own, g.first, g.rise
        callees: dict[str, set[str]] = defaultdict(set)
        callers: dict[str, set[str]] = defaultdict(set)
        for src, dst, _, _ in context.calls:
            if src != dst:
                callees[src].add(dst)
                callers[dst].add(src)
        # what a callee holds only from a caller's measurements of its calls to it (a gap, slower calls): when
        # the caller's calls to half or more of its callees slowed, it is likely starved itself, and that evidence
        # does not draw its mass in the walk (the caller's own slowness coming back to explain it)
        measured: dict[tuple[str, str], float] = defaultdict(float)  # (caller, callee) -> such evidence
        slower = {c: {t for t in ts if t in g.network or (c, t) in g.slowed} for c, ts in callees.items()}
        risen = {c for c, r in rise.items() if r > 0}  # services whose own server latency rose
        onset = dict(first)  # candidate -> the first evidence about it, its own or a share of another's

        def share_of(to: str, w: float, source: str) -> None:
            own[to] += w
            if source in first:
                onset[to] = min(onset.get(to, math.inf), first[source])

        for caller, w in g.client_gap.items():  # the gap on its calls with none of its callees' showing it: its own
            if not any(t in g.network for t in callees.get(caller, ())):  # (a starved caller, or its node's network)
                own[caller] += w
        for callee, w in g.network.items():  # longer between the spans: the callee's network, or a starved caller
            suspects = sorted(callers.get(callee, ()))  # who measured the gap: each may be the one too slow
            kept = w
            for t in suspects:  # a caller whose calls to most of its callees slowed is the likelier cause
                share = w * _starved(callees[t], g.network, t in risen) / len(suspects)
                share_of(t, share, callee)
                kept -= share
            own[callee] += kept
            for t in suspects:
                measured[(t, callee)] += kept
        for (caller, callee), w in g.slowed.items():  # the callee, or a starved caller slowing all its calls
            share = w * _starved(callees[caller], slower.get(caller, set()), caller in risen)
            share_of(caller, share, callee)
            own[callee] += w - share
            measured[(caller, callee)] += w - share
        for caller, w in g.client.items():  # a caller's slow calls: evidence against its anomalous callees
            suspects = [t for t in callees.get(caller, ()) if own.get(t, 0) > 0]
            for t in suspects:
                share_of(t, w / len(suspects), caller)
                measured[(caller, t)] += w / len(suspects)
        starved = {c for c, ts in slower.items() if len(ts) >= 2 and _starved(callees[c], ts, c in risen) >= 0.5}
        measured = {pair: w for pair, w in measured.items() if pair[0] in starved}
        candidates = sorted(own)
        if not candidates:
            return Diagnosis(incident=context.incident, reasoner=self.name, at=context.at, summary="no anomalies")
        explained = {c: _explained(r, [v for (x, _), v in g.edge_rise.items() if x == c]) for c, r in rise.items()}
        score = self._walk(candidates, callees, own, explained, measured)
        if first:
            earliest = min(first.values())
            for c in candidates:
                if first.get(c) == earliest:
                    score[c] *= 1 + s.first_bonus
                elif c in onset and s.late_s > 0:  # a share of a later anomaly is as late as the anomaly
                    score[c] *= math.exp(-max(0.0, onset[c] - earliest) / s.late_s)
        rolled = {self._changed_entity(ch.entity, context) for ch in context.changes}
        for c in candidates:
            if c in rolled:
                score[c] *= s.change_bonus
        ranked = sorted(candidates, key=lambda c: (-score[c], first.get(c, math.inf), c))[: s.max_hypotheses]
        weights = [score[c] ** s.sharpness for c in ranked]
        total = sum(weights) or 1.0
        hypotheses = []
        for c, w in zip(ranked, weights, strict=True):
            fault = "bad_rollout" if c in rolled else self._fault_class(g.by_category[c], own[c])
            hypotheses.append(
                Hypothesis(
                    entity=c,
                    kind=kind_of(c),
                    fault_class=fault,
                    confidence=round(min(1.0, w / total) * (1 - s.unexplained), 4),
                    evidence=sorted(g.evidence[c], key=lambda e: -abs(e.score))[:20],
                    falsified_by=_falsifiers(c, fault),
                )
            )
        top = hypotheses[0]
        summary = f"{top.entity}: {top.fault_class.replace('_', ' ')} ({top.confidence:.0%})"
        return Diagnosis(incident=context.incident, reasoner=self.name, at=context.at, hypotheses=hypotheses,
                         summary=summary)  # fmt: skip

    def _walk(
        self,
        candidates: list[str],
        callees: dict[str, set[str]],
        own: dict[str, float],
        explained: dict[str, float],
        measured: dict[tuple[str, str], float],
    ) -> dict[str, float]:
        """Personalised PageRank by power iteration (numpy; the graphs are small): from a caller to itself and its
        anomalous callees in proportion to their own evidence (a callee's network gap only as far as the share rule
        left it to the callee), and only as far as its slower calls explain its own slowdown; restarts in proportion
        to own evidence."""
        n = len(candidates)
        index = {c: i for i, c in enumerate(candidates)}
        restart = np.array([own[c] for c in candidates])
        if restart.sum() <= 0:
            return {c: 1.0 for c in candidates}
        restart = restart / restart.sum()
        move = np.zeros((n, n))
        for c, i in index.items():
            move[i, i] = own[c]
            for t in callees.get(c, ()):
                if t in index and t != c:
                    move[i, index[t]] = max(0.0, own[t] - measured.get((c, t), 0.0)) * explained.get(c, 1.0)
        totals = move.sum(axis=1, keepdims=True)
        move = np.divide(move, totals, out=np.eye(n), where=totals > 0)  # nothing of its own to go by: it stays
        rank = restart.copy()
        alpha = self.settings.alpha
        for _ in range(100):
            new = alpha * rank @ move + (1 - alpha) * restart
            if np.abs(new - rank).sum() < 1e-10:
                rank = new
                break
            rank = new
        return {c: float(rank[i]) for c, i in index.items()}

    @staticmethod
    def _fault_class(categories: dict[str, float], own: float) -> FaultClass:
        if not categories:
            return "dependency_failure"
        top = max(categories, key=lambda k: categories[k])
        if categories.get("resource", 0) > 0 and top in ("resource", "other", "client", "network"):
            return "resource_saturation"
        return {  # type: ignore[return-value]
            "node": "node_problem",
            "error": "code_error",
            "client": "network_delay",
            "network": "network_delay",
            "resource": "resource_saturation",
        }.get(top, "network_delay" if own > 0 else "dependency_failure")

    @staticmethod
    def _changed_entity(entity: str, context: IncidentContext) -> str:
        return context.service(entity)


_QUANTILE = re.compile(r"^(|.*[._])p\d\d$")


@dataclass
class _Gathered:
    """Each anomaly's evidence, placed: on its own candidate, or where the sharing rules (diagnose) take it from."""

    own: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # candidate -> its own evidence
    by_category: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(float)))
    evidence: dict[str, list[Evidence]] = field(default_factory=lambda: defaultdict(list))
    client: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # caller -> client-side evidence
    network: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # callee -> slower network into it
    client_gap: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # caller -> its calls' gaps
    slowed: dict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))  # (caller, callee)
    first: dict[str, float] = field(default_factory=dict)  # candidate -> its first anomaly's start
    rise: dict[str, float] = field(default_factory=dict)  # service -> its server latency's rise (seconds)
    edge_rise: dict[tuple[str, str], float] = field(default_factory=dict)  # (caller, callee) -> its calls' rise


def _gather(context: IncidentContext, s: GraphReasonerSettings) -> _Gathered:
    g = _Gathered()
    stopped = _stopped_callers(context)
    for a, w in zip(context.anomalies, _weights(context.anomalies, s.z0, s.z_cap), strict=True):
        c = context.service(_owner(a.entity, a.signal))
        found = Evidence(entity=a.entity, signal=a.signal, value=a.value, expected=a.expected, score=a.score)
        if c in stopped and _absent(a.signal):  # its lines and spans stopped as its callers stopped calling it
            sources = stopped[c]
            for caller in sources:
                g.own[caller] += w / len(sources)
                g.by_category[caller][category(a.signal)] += w / len(sources)
                g.first[caller] = min(g.first.get(caller, a.start), a.start)
                g.evidence[caller].append(found)
            continue
        edge = edge_of(a.signal)
        cat = category(edge[1] if edge else a.signal)  # not the caller's name
        g.by_category[c][cat] += w
        g.evidence[c].append(found)
        g.first[c] = min(g.first.get(c, a.start), a.start)
        if cat == "client":
            g.client[c] += w
            g.own[c] += s.client_weight * w
        elif edge and edge[1] == "latency":  # one caller saw it slower
            pair = (context.service(edge[0]), c)
            g.slowed[pair] += w
            g.edge_rise[pair] = max(g.edge_rise.get(pair, 0.0), a.value - a.expected)
        elif cat == "network":  # client_net is the same gap seen from the caller: the callees' (diagnose)
            if a.signal == "net_in":
                g.network[c] += w
            else:
                g.client_gap[c] += w
        else:
            g.own[c] += w
            if a.signal in _SERVER_LATENCY:
                g.rise[c] = max(g.rise.get(c, 0.0), a.value - a.expected)
    return g


def _weights(anomalies: Sequence[Anomaly], z0: float, z_cap: float) -> list[float]:
    """Each anomaly's weight, log1p(min(|z|, z_cap) / z0); the quantiles of one distribution (an entity's
    p50/p95/p99, a pod metric's p90/p95/p99) are one piece of evidence, counted once at the largest of them."""
    weights = [math.log1p(min(abs(a.score), z_cap) / z0) for a in anomalies]
    best: dict[tuple[str, str], int] = {}
    for i, a in enumerate(anomalies):
        m = _QUANTILE.match(a.signal)
        if m is None:
            continue
        key = (a.entity, m.group(1))
        j = best.get(key)
        if j is None or weights[i] > weights[j]:
            best[key] = i
    keep = set(best.values())
    return [
        w if i in keep or _QUANTILE.match(a.signal) is None else 0.0
        for i, (a, w) in enumerate(zip(anomalies, weights, strict=True))
    ]


def _owner(entity: str, signal: str) -> str:
    """Whose evidence an anomaly is: its entity's, but a drop in an edge's rate (``in:<caller>.rate`` on the callee)
    is the caller calling less."""
    edge = edge_of(signal)
    return edge[0] if edge and edge[1] == "rate" else entity


def _absent(signal: str) -> bool:
    """A usual log line or span that stopped coming."""
    return signal.startswith(("span_missing:", "log_missing:"))


def _stopped_callers(context: IncidentContext) -> dict[str, list[str]]:
    """Services whose calls stopped coming, with the callers that stopped making them: a caller's ``span_missing``
    naming a span of another service (``span_missing:<service> <name>`` on the caller). What such a service stopped
    logging and tracing is no fault of its own: nobody asked (TrainTicket's ts-basic-service return: ts-travel2-service
    failed, stopped calling ts-seat-service, which stopped calling ts-order-other-service; the missing lines and spans
    of seat and order-other named order-other first), and its weight goes to where the silence began: the callers that
    stopped, or their callers when they were silenced too. Not when anything says it was called and did not answer (a
    hung callee's spans are missing too): evidence of its own other than missing lines and spans, its callers' slower
    or failing calls to it (``in:<caller>.latency`` / ``.error_ratio``), a slower network into it, or a caller's
    client latency or failing requests (``error_ratio``: its calls may have timed out)."""
    entities = {context.service(a.entity) for a in context.anomalies}
    entities |= {context.service(e) for src, dst, _, _ in context.calls for e in (src, dst)}
    stopped: dict[str, set[str]] = {}
    for a in context.anomalies:
        if a.signal.startswith("span_missing:"):
            text = a.signal.removeprefix("span_missing:")  # "<service> <span name>": both may hold spaces
            named = max((e for e in entities if text.startswith(f"{e} ")), key=len, default=None)
            caller = context.service(a.entity)
            if named is not None and named != caller:
                stopped.setdefault(named, set()).add(caller)
    answered = set()  # callees something says were called and did not answer
    for a in context.anomalies:
        owner = context.service(a.entity)
        edge = edge_of(a.signal)
        if not _absent(a.signal) and (edge is None or edge[1] != "rate"):
            answered.add(owner)  # its own evidence, or a caller's slower or failing calls to it (on it, in:<caller>.*)
        if category(a.signal) == "client" or a.signal == "error_ratio":  # its calls were slow or failed
            answered.update(t for t, callers in stopped.items() if owner in callers)
    stopped = {callee: callers for callee, callers in stopped.items() if callee not in answered}
    memo: dict[str, set[str]] = {}

    def sources(service: str, seen: frozenset[str]) -> set[str]:
        """Where the silence began: the callers that stopped, or theirs when they were not called either."""
        if service in memo:
            return memo[service]
        found: set[str] = set()
        for caller in stopped[service]:
            if caller in stopped and caller not in seen:
                found |= sources(caller, seen | {caller})
            else:
                found.add(caller)
        memo[service] = found
        return found

    return {callee: sorted(sources(callee, frozenset({callee}))) for callee in stopped}


def _explained(rise: float, calls: list[float]) -> float:
    """How much of a service's slowdown (its server latency's rise) the slower calls it makes explain: the sum of
    their rises over its own, at most 1; 1 when nothing is known (no rise of its own or of its calls measured)."""
    if rise <= 0 or not calls:
        return 1.0
    return min(1.0, sum(calls) / rise)


def _starved(callees: set[str], network: Collection[str], slower_itself: bool = False) -> float:
    """How much a slower network into its callees points at the caller: the share of its callees that show it (a
    caller with a single callee: half), and at least half when three or more do and the caller's own server latency
    rose too: three callees' networks slowing at once is no likelier than their one caller starved (OnlineBoutique's
    frontend under a CPU fault: 3 of its 7 callees' gaps rose, and its p50), where two may share a node with a
    network fault, and a caller that did not slow may just be measuring three callees on such a node."""
    if len(callees) < 2:
        return 0.5
    slowed = sum(1 for t in callees if t in network)
    return max(slowed / len(callees), 0.5 if slowed >= 3 and slower_itself else 0.0)


def _falsifiers(entity: str, fault: FaultClass) -> list[str]:
    what = {
        "resource_saturation": f"CPU and memory of {entity}'s pods within their baselines while the incident lasts",
        "network_delay": f"{entity}'s callers see normal client latency towards it while it is anomalous",
        "code_error": f"error logs, error ratio and success rate of {entity} at their baseline",
        "bad_rollout": f"rolling {entity} back leaves the anomalies in place",
        "dependency_failure": f"{entity}'s own server-side signals normal while its callees recover",
        "node_problem": f"other pods on {entity} unaffected",
    }[fault]
    return [what, f"an entity {entity} calls deviated first and {entity} recovers when it does"]
