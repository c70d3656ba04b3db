"""The live graph on real traces: Nezha's OnlineBoutique spans of 2022-08-22 (all 43 trace minutes), replayed as
OTLP requests through the trace decoder and the topology graph, against the service call graph the data set ships
(``metric/dependency.csv``).

The spans have no kinds and no status (../shared/data/nezha/README.md), so the edges come from the graph's kind-less
pairing: a child span pairs with its parent, and a change of service between them is a call. The archive is
extracted once into ``$XDG_CACHE_HOME/rootward/nezha`` (``~/.cache`` by default) by :func:`rootward.nezha.extract`,
and the rows become OTLP through rootward/nezha.py, kind-less as the data is, except in the last test.

- ``test_edges_against_dependency_csv``: precision and recall against dependency.csv, printed (``pytest -s``).
  xfail: the traces never show checkoutservice -> currencyservice (:data:`MISSING_FROM_TRACES`), so recall is 13/14.
- ``test_edges_are_the_parent_links``: the graph's edges are exactly the service changes along the CSV's parent
  links, counted by a plain dict (:func:`parent_links`): holds the graph to the data, which the xfail cannot.
- ``test_requests_at_span_time``: with a clock at the spans' time, requests equal the parent-link counts.
- ``test_requests_at_replay_speed``: on the system clock the pending store fills, evicts its oldest, and still pairs
  every link.
- ``test_inferred_kinds_give_the_same_edges``: the replay's conversion, SERVER/CLIENT inferred from the parent links
  across minute files, gives the same edges, each distinct link counted once.
"""

from __future__ import annotations

import csv
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import pytest

from rootward import nezha_stream
from rootward.clock import ManualClock
from rootward.model import KIND_CLIENT, KIND_SERVER
from rootward.nezha import Day, IdStats, extract, parse_span, service_name
from rootward.nezha_otlp import Resources, trace_request
from rootward.receiver import TraceDecoder
from rootward.recorded import Issues
from rootward.topology import TopologyGraph
from rootward.topology.graph import USER

from shared_data import SHARED_DATA

ARCHIVE = SHARED_DATA / "nezha" / "ob-2022-08-22.tar.gz"
DAY = "rca_data/2022-08-22"
HEADER = ["TraceID", "SpanID", "ParentID", "PodName", "OperationName", "StartTimeUnixNano", "EndTimeUnixNano"]
SPANS_PER_REQUEST = 500
NAMESPACE = "online-boutique"
SERVICE_PREFIX = "service:/"  # service.namespace unset
MIN_PRECISION = MIN_RECALL = 0.95

#: In dependency.csv, never in the traces: checkoutservice's 2,337 ``hipstershop.CheckoutService/ConvertCurrency``
#: spans have no child span in any minute, and every currencyservice span's parent is a frontend span: checkoutservice's
#: gRPC calls to currencyservice were apparently not instrumented in Nezha's deployment.
MISSING_FROM_TRACES = {("checkoutservice", "currencyservice")}


@pytest.fixture(scope="module")
def day_dir() -> Path:
    return extract(ARCHIVE) / DAY


# --- the CSV rows as OTLP requests -----------------------------------------------------------------------------------


def rows(trace_files: Iterable[Path]) -> Iterator[list[str]]:
    """The span rows of ``trace_files``, one file open at a time."""
    for path in trace_files:
        with path.open(newline="") as f:
            reader = csv.reader(f)
            header = next(reader)
            assert header[: len(HEADER)] == HEADER, f"{path.name}: unexpected header {header}"
            yield from reader


def chunks(items: Iterator[list[str]], size: int) -> Iterator[list[list[str]]]:
    while chunk := list(islice(items, size)):
        yield chunk


def request(chunk: list[list[str]], ids: IdStats) -> bytes:
    """One ExportTraceServiceRequest: a ResourceSpans per pod, spans without kind or status (as the data has them)."""
    spans = [parse_span(row, ids) for row in chunk]
    return trace_request(spans, Resources(NAMESPACE), kinds=False).SerializeToString()


# --- the oracle: the CSV's own parent links ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def trace_files(day_dir: Path) -> list[Path]:
    files = sorted((day_dir / "trace").glob("*_trace.csv"))
    assert files, f"no trace minutes in {day_dir}"
    return files


@pytest.fixture(scope="module")
def links(trace_files: list[Path]) -> tuple[Counter[tuple[str, str]], Counter[tuple[str, str]]]:
    """(parent service, child service) -> child rows, for every row whose parent is of another service; and the same
    counting each distinct child span once. The first is what a kind-less pairing must count, duplicated rows
    (adjacent minutes overlap) included; the second what the replay's conversion sends (it drops duplicates). One
    pass, keyed by a hash of (trace id, span id) to keep it small; a child that comes before its parent waits for
    it."""
    names: dict[str, str] = {}
    service_of: dict[int, str] = {}
    waiting: defaultdict[int, list[tuple[str, bool]]] = defaultdict(list)
    rows_: Counter[tuple[str, str]] = Counter()
    distinct: Counter[tuple[str, str]] = Counter()
    for trace_id, span_id, parent_id, pod, *_ in rows(trace_files):
        service = names.get(pod) or names.setdefault(pod, service_name(pod))
        key = hash((trace_id, span_id))
        first = key not in service_of
        service_of[key] = service
        for child, child_first in waiting.pop(key, ()):
            rows_[service, child] += service != child
            distinct[service, child] += service != child and child_first
        if parent_id != "root":
            parent = service_of.get(hash((trace_id, parent_id)))
            if parent is None:
                waiting[hash((trace_id, parent_id))].append((service, first))
            else:
                rows_[parent, service] += parent != service
                distinct[parent, service] += parent != service and first
    orphans = sum(map(len, waiting.values()))
    print(f"\nparent links: {len(service_of)} distinct spans, {orphans} children whose parent never comes")
    return +rows_, +distinct  # without the zero counts of same-service links


@pytest.fixture(scope="module")
def parent_links(links: tuple[Counter[tuple[str, str]], Counter[tuple[str, str]]]) -> Counter[tuple[str, str]]:
    return links[0]


# --- the replay --------------------------------------------------------------------------------------------------


@dataclass
class Replay:
    spans: int
    rejected: int
    seconds: float
    graph: TopologyGraph
    services: set[str]  # service names seen in the traces
    calls: dict[tuple[str, str], int]  # (source service, target service) -> requests
    other_calls: list[tuple[str, str, int, int]]  # call edges that are not service -> service (virtual peers)


def replay(trace_files: list[Path], graph: TopologyGraph, clock: ManualClock | None = None) -> Replay:
    """Feed the trace minutes to ``graph`` as OTLP requests of SPANS_PER_REQUEST spans; with ``clock``, move it to
    the latest span end seen before each request (replay at the spans' own time)."""
    decoder, ids = TraceDecoder(), IdStats()
    services: set[str] = set()
    spans = rejected = 0
    latest = 0
    began = time.perf_counter()
    for chunk in chunks(rows(trace_files), SPANS_PER_REQUEST):
        decoded = decoder.decode(request(chunk, ids))
        spans += len(chunk)
        rejected += decoded.rejected
        services.update(resource.get("service.name") for resource in decoded.batch.resources)
        if clock is not None:
            latest = max(latest, *(int(row[6]) for row in chunk))
            clock.set(latest / 1e9)
        graph.consume_traces(decoded.batch)
    graph.flush()
    seconds = time.perf_counter() - began
    calls: dict[tuple[str, str], int] = {}
    other: list[tuple[str, str, int, int]] = []
    for source, target, requests, errors in graph.calls():
        if source == USER.id:
            continue
        if source.startswith(SERVICE_PREFIX) and target.startswith(SERVICE_PREFIX):
            calls[source.removeprefix(SERVICE_PREFIX), target.removeprefix(SERVICE_PREFIX)] = requests
        else:
            other.append((source, target, requests, errors))
    print(
        f"\nreplayed {spans} spans of {len(trace_files)} trace minutes ({trace_files[0].name} .. "
        f"{trace_files[-1].name}) {'at span time' if clock else 'on the system clock'} in {seconds:.1f} s; "
        f"rejected by the decoder: {rejected}; ids hashed (not hex of the OTLP size): {dict(ids.hashed) or 0}; "
        f"graph refused: {dict(graph.refused) or 0}; expired pending: {graph.expired_pending}"
    )
    return Replay(spans, rejected, seconds, graph, services, calls, other)


@pytest.fixture(scope="module")
def replayed(trace_files: list[Path]) -> Replay:
    """The graph as the brief has it: ``TopologyGraph()``, default limits, the system clock."""
    return replay(trace_files, TopologyGraph())


@pytest.fixture(scope="module")
def replayed_at_span_time(trace_files: list[Path]) -> Replay:
    """The same replay with the graph's clock at the spans' own time, so pending_ttl_s means 10 s of traffic."""
    clock = ManualClock(0.0)
    return replay(trace_files, TopologyGraph(clock=clock), clock)


def true_edges(path: Path, traced: set[str]) -> set[tuple[str, str]]:
    """dependency.csv's (Source, Target) pairs, as service names; self-edges and edges to or from what never shows
    in the traces (the load generator, bare IP addresses) are left out and printed."""
    edges: set[tuple[str, str]] = set()
    skipped: list[str] = []
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            source, target = service_name(row["Source"].strip()), service_name(row["Target"].strip())
            if source == target:
                skipped.append(f"{source} -> {target} (self)")
            elif source not in traced or target not in traced:
                absent = ", ".join(name for name in (source, target) if name not in traced)
                skipped.append(f"{source} -> {target} (not in the traces: {absent})")
            else:
                edges.add((source, target))
    print(f"dependency.csv: {len(edges)} service edges kept, {len(skipped)} skipped:")
    for line in skipped:
        print(f"  skipped {line}")
    return edges


def print_counts(replay: Replay, links: Counter[tuple[str, str]]) -> None:
    paired, total = sum(replay.calls.values()), sum(links.values())
    print(f"graph requests / parent links in the CSV: {paired} / {total} ({paired / total:.1%})")
    for edge in sorted(links.keys() | replay.calls.keys()):
        print(f"  {edge[0]} -> {edge[1]}: {replay.calls.get(edge, 0)} / {links.get(edge, 0)}")


# --- the checks --------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason=(
        "recall 13/14 = 0.929 < 0.95 (precision 13/13 = 1.000): dependency.csv has checkoutservice -> "
        "currencyservice, but no span of the 43 trace minutes shows it (checkoutservice's ConvertCurrency spans have "
        "no children, and every currencyservice span's parent is a frontend span): the call was not traced"
    ),
)
def test_edges_against_dependency_csv(replayed: Replay, day_dir: Path) -> None:
    truth = true_edges(day_dir / "metric" / "dependency.csv", replayed.services)
    found = set(replayed.calls)
    hits = found & truth
    precision = len(hits) / len(found) if found else 0.0
    recall = len(hits) / len(truth) if truth else 0.0
    print(f"precision {len(hits)}/{len(found)} = {precision:.3f}, recall {len(hits)}/{len(truth)} = {recall:.3f}")
    for source, target in sorted(found - truth):
        print(f"  false positive: {source} -> {target} ({replayed.calls[source, target]} requests)")
    for source, target in sorted(truth - found):
        why = " (never in the traces: see MISSING_FROM_TRACES)" if (source, target) in MISSING_FROM_TRACES else ""
        print(f"  false negative: {source} -> {target}{why}")
    assert precision >= MIN_PRECISION
    assert recall >= MIN_RECALL


@pytest.mark.slow
def test_edges_are_the_parent_links(replayed: Replay, parent_links: Counter[tuple[str, str]]) -> None:
    """The graph finds every service change along the spans' parent links and nothing else: the graph held to the
    data it was given, which the xfail above would not notice."""
    assert replayed.rejected == 0
    assert replayed.other_calls == []
    assert set(replayed.calls) == set(parent_links)


@pytest.mark.slow
def test_requests_at_span_time(replayed_at_span_time: Replay, parent_links: Counter[tuple[str, str]]) -> None:
    """With its clock at the spans' time, the graph pairs every parent link once: requests equal the link counts."""
    print_counts(replayed_at_span_time, parent_links)
    assert replayed_at_span_time.graph.refused == Counter()
    assert replayed_at_span_time.calls == dict(parent_links)


@pytest.mark.slow
def test_requests_at_replay_speed(replayed: Replay, parent_links: Counter[tuple[str, str]]) -> None:
    """On the system clock at ~120k spans/s the pending store fills (kind-less spans are all held as possible
    parents); it evicts its oldest spans, so every parent link still pairs. (Before eviction it refused newcomers and
    counted 47,993 of 204,422 links.)"""
    print_counts(replayed, parent_links)
    assert replayed.calls == dict(parent_links)


@pytest.mark.slow
def test_inferred_kinds_give_the_same_edges(
    day_dir: Path, links: tuple[Counter[tuple[str, str]], Counter[tuple[str, str]]]
) -> None:
    """The replay's conversion (rootward/nezha_stream.py: minute files merged by time, duplicates dropped,
    SERVER/CLIENT inferred from the parent links) gives the graph the same edges as the parent links, each distinct
    link counted once, with nothing left unpaired."""
    day = Day("2022-08-22", "ob", day_dir, None)
    ids, issues = IdStats(), Issues()
    resources = Resources(day.namespace)
    clock = ManualClock(0.0)
    graph, decoder = TopologyGraph(clock=clock), TraceDecoder()
    kinds: Counter[int] = Counter()
    began = time.perf_counter()
    spans = nezha_stream.spans(day, ids, issues)
    while chunk := list(islice(spans, SPANS_PER_REQUEST)):
        kinds.update(s.kind for s in chunk)
        clock.set(max(s.end for s in chunk) / 1e9)
        graph.consume_traces(decoder.decode(trace_request(chunk, resources).SerializeToString()).batch)
    graph.flush()
    seconds = time.perf_counter() - began
    calls = {
        (src.removeprefix(SERVICE_PREFIX), dst.removeprefix(SERVICE_PREFIX)): requests
        for src, dst, requests, _ in graph.calls()
        if src != USER.id
    }
    print(
        f"\n{sum(kinds.values())} spans converted and graphed in {seconds:.1f} s; kinds {dict(kinds)}; "
        f"skipped {dict(issues.skipped)}; caveats {dict(issues.caveats)}; expired pending {graph.expired_pending}"
    )
    assert issues.skipped.keys() <= {"span_duplicate"}
    assert kinds[KIND_SERVER] == sum(links[1].values()) + calls_from_user(graph)
    assert kinds[KIND_CLIENT] > 0
    assert calls == dict(links[1])
    assert graph.expired_pending == 0


def calls_from_user(graph: TopologyGraph) -> int:
    return sum(requests for src, _, requests, _ in graph.calls() if src == USER.id)
