"""Gateway mode with real processes: three ``rootward serve`` replicas, each behind its own rotel, get the shop's
traces split by trace id; replicas 1 and 2 export their call edges to replica 0 (the aggregator, as rootward-0 in the
gateway overlay), which merges them with what it paired itself. A fourth Rootward, alone, gets all of the same
traffic. The aggregator's graph must equal the single instance's: the same entities and edges (pods, nodes,
workloads and their structural edges included), and on each call edge the same request and error counts and latency
histogram.

rotel has no loadbalancing exporter, so the split happens in the application's SDK: a span exporter sends each span
to the rotel of replica ``trace_id % 3`` (what the Collector's loadbalancing exporter does with a hash ring) and to
the single instance, all through real OTLP exporters.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families

from rootward.config import LOCAL_PORTS, NOTHING_ON_DISK
from rootward.synthetic import Shop

from collectors import Process, running_rotel, wait_until

REPLICAS = 3
#: How long a span waits for its other half: short, so the test need not wait long for the virtual edges (redis),
#: yet long enough for both halves of a call to arrive on a busy machine.
PENDING_TTL_S = 5.0

pytestmark = pytest.mark.slow


@dataclass
class Serving:
    process: Process
    grpc: int
    api: str

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.grpc}"


@contextmanager
def serve(name: str, workdir: Path, sets: Sequence[str] = ()) -> Iterator[Serving]:
    """``rootward serve`` on free local ports, with nothing on disk and no detection; stopped with SIGTERM (a clean
    shutdown, its last export included) on the way out."""
    settings = [*LOCAL_PORTS, *NOTHING_ON_DISK, "detection.enabled=false", f"topology.pending_ttl_s={PENDING_TTL_S}"]
    cmd = [sys.executable, "-m", "rootward.cli", "serve", *[a for s in (*settings, *sets) for a in ("--set", s)]]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOTWARD_")}
    process = Process(name, cmd, workdir / f"{name}.log", env)
    try:
        ready = re.compile(r"OTLP gRPC :(\d+), OTLP HTTP :\d+, API :(\d+)")
        assert wait_until(lambda: not process.running or bool(ready.search(process.output())), 60), process.describe()
        found = ready.search(process.output())
        assert found is not None, process.describe()
        yield Serving(process, int(found.group(1)), f"http://127.0.0.1:{found.group(2)}")
    finally:
        process.stop()


class ByTraceId(SpanExporter):
    """Each span to the replica ``trace_id % len(replicas)``, and every span to the single instance too."""

    def __init__(self, replicas: Sequence[str], single: str) -> None:
        self.replicas = [OTLPSpanExporter(endpoint=e, insecure=True) for e in replicas]
        self.single = OTLPSpanExporter(endpoint=single, insecure=True)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        parts: dict[int, list[ReadableSpan]] = {}
        for span in spans:
            assert span.context is not None
            parts.setdefault(span.context.trace_id % len(self.replicas), []).append(span)
        results = [self.single.export(spans)]
        results += [self.replicas[i].export(part) for i, part in parts.items()]
        ok = all(r == SpanExportResult.SUCCESS for r in results)
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

    def shutdown(self) -> None:
        for exporter in (*self.replicas, self.single):
            exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def topology(serving: Serving) -> dict[str, Any]:
    graph: dict[str, Any] = httpx.get(f"{serving.api}/api/v1/topology", timeout=10).json()
    return graph


def call_graph(serving: Serving) -> tuple[dict[tuple[str, str], dict[str, Any]], dict[str, dict[str, Any]]]:
    """The call edges by (source, target) with their RED, and the entities they join with their identity."""
    graph = topology(serving)
    edges = {(e["source"], e["target"]): e for e in graph["edges"] if e["kind"] == "calls"}
    ends = {end for edge in edges for end in edge}
    keep = ("kind", "name", "namespace", "virtual")
    entities = {e["id"]: {k: e[k] for k in keep} for e in graph["entities"] if e["id"] in ends}
    return edges, entities


def structure(serving: Serving) -> tuple[dict[str, dict[str, Any]], set[tuple[str, str, str]]]:
    """Every entity with its identity, and every edge (source, target, kind)."""
    graph = topology(serving)
    keep = ("kind", "name", "namespace", "virtual")
    entities = {e["id"]: {k: e[k] for k in keep} for e in graph["entities"]}
    return entities, {(e["source"], e["target"], e["kind"]) for e in graph["edges"]}


def counts(serving: Serving) -> dict[tuple[str, str], tuple[int, int]]:
    return {edge: (e["requests"], e["errors"]) for edge, e in call_graph(serving)[0].items()}


def accepted_spans(serving: Serving) -> float:
    text = httpx.get(f"{serving.api}/metrics", timeout=10).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "rootward_receiver_items_total"
        and s.labels["signal"] == "traces"
        and s.labels["outcome"] == "accepted"
    )


def nudge(serving: Serving) -> None:
    """One INTERNAL span (it pairs with nothing): a batch after the pending TTL, on which the graph expires the client
    spans nothing answered into edges to their virtual peers (redis), as continuing traffic would."""
    provider = TracerProvider(resource=Resource.create({"service.name": "frontend", "service.namespace": "shop"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=serving.endpoint, insecure=True)))
    with provider.get_tracer("nudge").start_as_current_span("tick", kind=SpanKind.INTERNAL):
        pass
    provider.shutdown()


def test_the_aggregators_merged_graph_equals_the_single_instance_graph_of_the_same_traffic(tmp_path: Path) -> None:
    with ExitStack() as stack:
        aggregator = stack.enter_context(
            serve("rootward-0", tmp_path, ["topology.export.enabled=true", "topology.export.replica=rootward-0"])
        )
        export = [
            "topology.export.enabled=true",
            f"topology.export.endpoint={aggregator.endpoint}",
            "topology.export.interval_s=0.5",
        ]
        replicas = [aggregator] + [
            stack.enter_context(serve(f"rootward-{i}", tmp_path, [*export, f"topology.export.replica=rootward-{i}"]))
            for i in range(1, REPLICAS)
        ]
        single = stack.enter_context(serve("single", tmp_path))
        rotels = [stack.enter_context(running_rotel(tmp_path, f"http://{r.endpoint}")) for r in replicas]

        shop = Shop(
            single.endpoint, span_exporter=lambda: ByTraceId([r.grpc_endpoint for r in rotels], single.endpoint)
        )
        for i in range(40):
            shop.request(payment_failing=i % 4 == 0)
        shop.close()
        spans = shop.sent["spans"]
        assert wait_until(lambda: accepted_spans(single) == spans, 30), f"single got {accepted_spans(single)}/{spans}"
        assert wait_until(lambda: sum(accepted_spans(r) for r in replicas) == spans, 30), [
            accepted_spans(r) for r in replicas
        ]
        time.sleep(PENDING_TTL_S + 1.5)
        for serving in (*replicas, single):
            nudge(serving)

        expected = counts(single)
        assert wait_until(lambda: counts(aggregator) == expected, 30), (counts(aggregator), expected)
        assert all(counts(r) for r in replicas), "every replica paired a share of the traces"
        assert all(counts(r) != expected for r in replicas[1:]), "no replica alone has the whole graph"

        assert wait_until(lambda: structure(aggregator) == structure(single), 10), "the pods, nodes, workloads too"
        entities, all_edges = structure(single)
        assert {kind for _, _, kind in all_edges} >= {"calls", "instance_of", "runs_on", "owned_by", "in"}
        assert {e["kind"] for e in entities.values()} >= {"service", "pod", "node", "workload", "namespace", "database"}

        (merged_edges, merged_entities), (edges, entities) = call_graph(aggregator), call_graph(single)
        assert merged_entities == entities
        assert (
            "service:shop/checkout",
            "service:shop/payment",
        ) in edges, "the shop's calls are there, failures included"
        assert edges["service:shop/checkout", "service:shop/payment"]["errors"] == 10
        assert ("service:shop/cart", "database:redis/redis") in edges, "and the virtual peer"
        for edge, red in edges.items():
            assert merged_edges[edge]["latency_buckets"] == red["latency_buckets"], edge
            assert merged_edges[edge]["latency_sum_s"] == pytest.approx(red["latency_sum_s"]), edge
