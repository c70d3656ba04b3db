"""Read-only investigation tools for the LLM reasoner (agent/llm.py), over what Rootward already holds in the process:
the topology graph (with the Kubernetes objects the Collector sent), the detector's series, the mined log templates,
the spans the span flow learned, and the incident's context. Nothing here calls the Kubernetes API or any other network.

One class per tool, each with a pydantic argument model whose JSON schema is the OpenAI tool definition; the model's
arguments are validated against it like any untrusted input. Every call returns a :class:`ToolResult` envelope
(``ok`` with data, ``no_data``, or ``error`` with a message) that the model sees instead of an exception, bounded in
size. Tools only read entities of the incident's scope (its anomalous entities, their services, pods, nodes and
workloads, and the call-graph neighbours): the model cannot widen what it looks at by naming something else.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rootward.agent.context import IncidentContext
from rootward.topology import queries

if TYPE_CHECKING:
    from rootward.detector.detector import Detector
    from rootward.detector.kube import KubeSignals
    from rootward.detector.spanflow import SpanFlow
    from rootward.detector.templates import LogTemplates
    from rootward.topology import TopologyGraph

logger = logging.getLogger(__name__)

#: Kubernetes Events one call returns at most (the newest).
MAX_EVENTS = 50

Entity = Field(min_length=1, max_length=300, description="An entity id, e.g. service:shop/cart or pod:shop/cart-7d9")


class ToolResult(BaseModel):
    """The envelope the model sees."""

    status: Literal["ok", "error", "no_data"]
    data: Any = None
    error: str | None = None

    def render(self, max_chars: int) -> str:
        """The envelope as JSON, its data cut to keep the whole within about ``max_chars``."""
        body: dict[str, Any] = {"status": self.status}
        if self.error is not None:
            body["error"] = self.error[:max_chars]
        if self.data is not None:
            text = json.dumps(self.data, default=str, sort_keys=True)
            if len(text) > max_chars:
                body["data"], body["truncated"] = text[:max_chars], True
            else:
                body["data"] = self.data
        return json.dumps(body, default=str)


def ok(data: Any) -> ToolResult:
    return ToolResult(status="ok", data=data)


def no_data(why: str) -> ToolResult:
    return ToolResult(status="no_data", error=why)


def error(why: str) -> ToolResult:
    return ToolResult(status="error", error=why)


S = TypeVar("S")


@dataclass(frozen=True)
class Sources:
    """What the tools read; any may be missing (then its tools answer ``no_data``)."""

    topology: TopologyGraph | None = None
    detector: Detector | None = None
    templates: LogTemplates | None = None
    span_flow: SpanFlow | None = None
    kube: KubeSignals | None = None


@dataclass
class Workspace:
    """One investigation's view: the context, the sources, and the entities it may look at."""

    context: IncidentContext
    sources: Sources
    scope: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, context: IncidentContext, sources: Sources) -> Workspace:
        seeds = {a.entity for a in context.anomalies} | set(context.service_of.values())
        seeds |= {c[0] for c in context.calls} | {c[1] for c in context.calls}
        seeds |= {ch.entity for ch in context.changes}
        scope = set(seeds)
        if sources.topology is not None:
            with sources.topology.read() as g:
                for entity in seeds:
                    if entity in g:
                        scope |= set(g.successors(entity)) | set(g.predecessors(entity))
        return cls(context, sources, scope)

    def check(self, entity: str) -> ToolResult | None:
        """An error envelope if ``entity`` is outside the incident's scope, else None."""
        if entity in self.scope:
            return None
        return error(f"{entity!r} is outside this incident's scope; entities in scope: {sorted(self.scope)[:40]}")

    def reach(self, entity: str | None, source: S | None, off: str) -> S | ToolResult:
        """``source``, to answer about ``entity`` (None: the whole incident); instead the envelope a tool returns as
        it is: an error for an entity outside the scope, ``no_data(off)`` when the source is off in this process."""
        if entity is not None and (bad := self.check(entity)) is not None:
            return bad
        return no_data(off) if source is None else source

    def query(self, entity: str, read: Callable[[Any], dict[str, Any]]) -> ToolResult:
        """``read(graph)`` for an entity in scope and in the graph, without the edges' latency histograms (bulky,
        and their sums and counts say enough)."""
        topology = self.reach(entity, self.sources.topology, "no topology in this process")
        if isinstance(topology, ToolResult):
            return topology
        with topology.read() as g:
            if entity not in g:
                return no_data("the entity is not in the graph (aged out or never seen)")
            data = read(g)
        for key in ("edges", "outgoing", "incoming"):
            for edge in data.get(key, ()):
                edge.pop("latency_buckets", None)
        return ok(data)


A = TypeVar("A", bound=BaseModel)


class Tool(Generic[A]):
    """A read-only tool. Subclasses set ``name``, ``description``, ``args_model`` and implement :meth:`run`."""

    name: str
    description: str
    args_model: type[A]

    def __init__(self, workspace: Workspace) -> None:
        self.ws = workspace

    def definition(self) -> dict[str, Any]:
        """The OpenAI tool definition: the argument model's JSON schema as the function's parameters."""
        schema = self.args_model.model_json_schema()
        schema.pop("title", None)
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": schema}}  # fmt: skip

    def invoke(self, raw_arguments: str) -> tuple[dict[str, Any], ToolResult]:
        """(the parsed arguments, the result): bad JSON or arguments, a bug, anything, becomes an error envelope."""
        try:
            parsed = json.loads(raw_arguments or "{}")
        except ValueError:
            return {}, error("arguments are not valid JSON")
        if not isinstance(parsed, dict):
            return {}, error("arguments must be a JSON object")
        try:
            args = self.args_model.model_validate(parsed)
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, x['loc'])) or '(root)'}: {x['msg']}" for x in e.errors())
            return parsed, error(f"invalid arguments: {problems}")
        try:
            return parsed, self.run(args)
        except Exception as e:  # a tool bug must not end the investigation: the model sees an error instead
            logger.exception("tool %s failed", self.name)
            return parsed, error(f"the tool failed: {type(e).__name__}")

    def run(self, args: A) -> ToolResult:
        raise NotImplementedError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MetricArgs(_Strict):
    entity: str = Entity
    signal: str | None = Field(default=None, max_length=200, description="A signal name; omit for all known ones")
    points: int = Field(default=30, ge=1, le=120, description="How many recent values, oldest first")


class MetricHistory(Tool[MetricArgs]):
    name = "metric_history"
    description = "Recent values (one per detector window, oldest first) of an entity's series: RED, resources, logs."
    args_model = MetricArgs

    def run(self, args: MetricArgs) -> ToolResult:
        if (bad := self.ws.check(args.entity)) is not None:
            return bad
        signals = [args.signal] if args.signal else self._signals(args.entity)
        detector = self.ws.sources.detector
        series: dict[str, list[float]] = {}
        for signal in signals[:20]:
            values = detector.recent(args.entity, signal, args.points) if detector is not None else ()
            if not values:
                values = next((w.values[-args.points :] for w in self.ws.context.windows
                               if w.entity == args.entity and w.signal == signal), ())  # fmt: skip
            if values:
                series[signal] = [round(v, 6) if math.isfinite(v) else None for v in values]  # type: ignore[misc]
        return ok({"entity": args.entity, "series": series}) if series else no_data("no series for this entity")

    def _signals(self, entity: str) -> list[str]:
        found = [a.signal for a in self.ws.context.anomalies if a.entity == entity]
        found += [w.signal for w in self.ws.context.windows if w.entity == entity]
        for common in ("rate", "error_ratio", "p50", "p95", "p99"):
            found.append(common)
        return list(dict.fromkeys(found))


class SubgraphArgs(_Strict):
    entity: str = Entity
    depth: int = Field(default=1, ge=1, le=2)
    direction: Literal["in", "out", "both"] = "both"


class Subgraph(Tool[SubgraphArgs]):
    name = "subgraph"
    description = "The topology around an entity: callers, callees, pods, workloads, nodes, with call RED counters."
    args_model = SubgraphArgs

    def run(self, args: SubgraphArgs) -> ToolResult:
        return self.ws.query(args.entity, lambda g: queries.subgraph(g, args.entity, args.depth, args.direction))


class EntityArgs(_Strict):
    entity: str = Entity


class EntityDetails(Tool[EntityArgs]):
    name = "entity_details"
    description = "One entity's attributes (kind, namespace, first/last seen, revision) and its edges."
    args_model = EntityArgs

    def run(self, args: EntityArgs) -> ToolResult:
        return self.ws.query(args.entity, lambda g: queries.entity(g, args.entity))


class KubernetesEvents(Tool[EntityArgs]):
    name = "kubernetes_events"
    description = (
        "An entity's (and for a service, its pods') recent Kubernetes Events, Normal and Warning, oldest first "
        "(as kubectl describe lists them), and the failure signals the incident holds for it (OOMKilled, BackOff, "
        "Unhealthy, node pressure...)."
    )
    args_model = EntityArgs

    def run(self, args: EntityArgs) -> ToolResult:
        if (bad := self.ws.check(args.entity)) is not None:
            return bad
        ctx = self.ws.context
        related = {args.entity} | {pod for pod, svc in ctx.service_of.items() if svc == args.entity}
        failures = [
            {"entity": a.entity, "reason": a.signal.removeprefix("k8s:"), "start": a.start, "end": a.end}
            for a in ctx.anomalies
            if a.signal.startswith("k8s:") and a.entity in related
        ]
        kube = self.ws.sources.kube
        events = [asdict(r) for r in kube.history.of(related)][-MAX_EVENTS:] if kube is not None else []
        if not failures and not events:
            return no_data("no Kubernetes Events or failure signals for this entity")
        return ok({"failures": failures, "events": events})


class ChangesArgs(_Strict):
    entity: str | None = Field(default=None, max_length=300, description="Only this entity's changes; omit for all")


class RecentChanges(Tool[ChangesArgs]):
    name = "recent_changes"
    description = "Rollouts (new ReplicaSet revisions) and Kubernetes API writes linked to the incident, oldest first."
    args_model = ChangesArgs

    def run(self, args: ChangesArgs) -> ToolResult:
        if args.entity is not None and (bad := self.ws.check(args.entity)) is not None:
            return bad
        changes = [
            {"time": c.time, "entity": c.entity, "kind": c.kind, "detail": c.detail, "who": c.who}
            for c in sorted(self.ws.context.changes, key=lambda c: c.time)
            if args.entity is None or args.entity in (c.entity, self.ws.context.service(c.entity))
        ]
        return ok({"changes": changes}) if changes else no_data("no rollouts or API writes linked to the incident")


class LogArgs(_Strict):
    text: str = Field(default="", max_length=200, description="Case-insensitive text the template contains")
    entity: str | None = Field(default=None, max_length=300)
    limit: int = Field(default=20, ge=1, le=50)


class SearchLogs(Tool[LogArgs]):
    name = "search_logs"
    description = (
        "Search the log templates mined per entity (text, template id, count: this window for WARN+ templates, the "
        "last minute for the others; a template whose lines stopped coming shows 0)."
    )
    args_model = LogArgs

    def run(self, args: LogArgs) -> ToolResult:
        mined = self.ws.reach(args.entity, self.ws.sources.templates, "log templates are not mined in this process")
        if isinstance(mined, ToolResult):
            return mined
        needle = args.text.lower()
        texts, counts, exemplars = mined.snapshot()
        keys = sorted(k for k in {*counts, *exemplars} if k[0] in self.ws.scope)
        found = [
            {"entity": e, "template": t, "text": texts.get(t, ""), "count": counts.get((e, t), 0)}
            for e, t in keys
            if (args.entity is None or e == args.entity) and needle in texts.get(t, "").lower()
        ]
        return ok({"templates": found[: args.limit]}) if found else no_data("no matching log templates")


class TraceExemplars(Tool[EntityArgs]):
    name = "trace_exemplars"
    description = "Trace ids that showed an entity's WARN+ log templates (open them in your tracing backend)."
    args_model = EntityArgs

    def run(self, args: EntityArgs) -> ToolResult:
        mined = self.ws.reach(args.entity, self.ws.sources.templates, "no trace exemplars in this process")
        if isinstance(mined, ToolResult):
            return mined
        exemplars = mined.snapshot()[2]
        found = [{"template": t, "trace_id": tid} for (e, t), tid in sorted(exemplars.items()) if e == args.entity]
        found = found[:20]
        return ok({"exemplars": found}) if found else no_data("no trace exemplars for this entity")


class SpanNames(Tool[EntityArgs]):
    name = "span_names"
    description = (
        "The spans a service makes and the calls it makes to others, as the span flow learned them from sampled "
        "traces: '<span's service> <span name>', its usual share of them, and how many came over the trailing "
        "window (0: stopped coming while the service's other spans went on; a span_missing anomaly names it), "
        "stopped ones first; 'sampled' is the share of traces sampled now."
    )
    args_model = EntityArgs

    def run(self, args: EntityArgs) -> ToolResult:
        flow = self.ws.reach(args.entity, self.ws.sources.span_flow, "the span flow is off in this process")
        if isinstance(flow, ToolResult):
            return flow
        rows = flow.snapshot(args.entity)
        if not rows:
            return no_data("no spans learned for this entity (none sampled, or not a service)")
        spans = [{"span": text, "usual_share": share, "trailing": count} for text, share, count in rows[:30]]
        # the share of traces sampled now: below 1, a 0 may be a span of traces not sampled
        return ok({"trail_s": flow.flow.settings.trail_s, "sampled": flow.keep / 1024, "spans": spans})


class PodArgs(_Strict):
    pod: str = Field(min_length=1, max_length=300, description="A pod entity id, pod:<namespace>/<name>")


class DescribePod(Tool[PodArgs]):
    name = "describe_pod"
    description = "A pod as the cluster's objects describe it: labels, node, owner, its workload and rollout revision."
    args_model = PodArgs

    def run(self, args: PodArgs) -> ToolResult:
        if not args.pod.startswith("pod:"):
            return error("pod must be a pod entity id, pod:<namespace>/<name>")
        topology = self.ws.reach(args.pod, self.ws.sources.topology, "no topology in this process")
        if isinstance(topology, ToolResult):
            return topology
        with topology.read() as g:
            known = topology.cluster.pods.get(args.pod)
            node = dict(g.nodes[args.pod]) if args.pod in g else None
            services = sorted(v for _, v, k in g.out_edges(args.pod, keys=True) if k == "instance_of") if node else []
            owner = known.get("owner") if known else None
            revision = topology.cluster.revisions.get(owner) if owner else None
        if known is None and node is None:
            return no_data("the cluster's objects never described this pod")
        data = {"pod": args.pod, "attributes": node, "services": services, "revision": revision}
        if known is not None:
            data |= {"labels": known["labels"], "node": known["node"], "owner": owner, "ips": sorted(known["ips"])}
        return ok(data)


#: The tools there are, listed explicitly (nothing the model says adds one).
TOOLS: tuple[type[Tool[Any]], ...] = (
    MetricHistory, Subgraph, EntityDetails, KubernetesEvents, RecentChanges, SearchLogs, TraceExemplars, SpanNames,
    DescribePod,
)  # fmt: skip


def toolbox(workspace: Workspace, names: Iterable[str] | None = None) -> Mapping[str, Tool[Any]]:
    """name -> tool for one investigation (all of :data:`TOOLS`, or those named)."""
    wanted = set(names) if names is not None else None
    return {cls.name: cls(workspace) for cls in TOOLS if wanted is None or cls.name in wanted}
