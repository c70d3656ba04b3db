"""A Nezha day as a stream of OTLP export requests, in time order and in bounded memory (rootward/nezha.py has the
layout, the rows and the messages).

Every event of a day comes out in time order across signals and files: spans by their end (when a Collector
would export them), log records and metric points by their time. Each signal is its own stream (minute files read
one at a time and sorted, merged with the neighbours they overlap: :func:`sliding_merge`; the metric files merged
row by row), and a heapq merge of the three orders them. Requests are cut at :class:`Chunking` sizes, or once their
first event is ``timeout_s`` older than the replayed time, as the Collector's batch processor does.

Memory: the minute files that overlap the current time (two or three of about a minute each), :data:`HOLD_S` of
spans twice over (the kind window, and the ids of released spans for late parents and duplicates), a few seconds
of log keys, one row per metric file, and the request being built. Never a whole day.
"""

from __future__ import annotations

import csv
import heapq
import math
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import Any, TypeVar

from rootward.nezha import (
    HOLD_S,
    LOG_HEADER,
    METRIC_HEADER,
    TRACE_HEADER,
    BadRow,
    Day,
    IdStats,
    Log,
    Span,
    go_time_ns,
    metric_columns,
    missing_minutes,
    parse_log,
    parse_span,
)
from rootward.nezha_otlp import MetricRow, Resources, log_request, metric_request, trace_request
from rootward.receiver.queue import Signal
from rootward.recorded import Issues, Request

T = TypeVar("T")

#: Distinct pod and operation names interned per day (past it names are kept per span).
MAX_NAMES = 100_000
#: Log lines seen again within this many seconds of replayed time are duplicates (adjacent files overlap).
LOG_DEDUP_S = 5.0
#: The first fields of a log line: Timestamp, TimeUnixNano, Node, PodName (for the node pre-scan).
_LOG_LINE_START = re.compile(rb"\d{4}-\d\d-\d\dT[^,\n]*,-?\d+,([^,\n\"]+),([^,\n\"]+),")
#: Longest CSV field read (a log line); the csv module's default is 128 KiB.
MAX_FIELD = 16 * 2**20


@dataclass(frozen=True, slots=True)
class Chunking:
    """Items per request, and how long the first event of a request may wait for the rest (replayed seconds)."""

    spans: int = 500
    points: int = 2000
    logs: int = 1000
    timeout_s: float = 1.0


def sliding_merge(files: Iterable[Path], load: Callable[[Path], list[T]], key: Callable[[T], int]) -> Iterator[T]:
    """The items of ``files`` in ``key`` order, each file loaded (by ``load``, sorted by ``key``) only once the
    merge reaches the first item of the file before it: files in name order that overlap their neighbours, never all
    at once. A file that starts before items already given out (more than one file of overlap) comes out late,
    never lost."""
    heap: list[tuple[int, int, int, list[T]]] = []  # (key of the next item, file number, its position, items)
    numbered = enumerate(files)

    def next_file() -> tuple[int, list[T]] | None:
        for n, path in numbered:
            items = load(path)
            if items:
                return n, items
        return None

    ahead = next_file()
    while heap or ahead is not None:
        while ahead is not None and (not heap or key(ahead[1][0]) <= heap[0][0]):
            n, items = ahead
            heapq.heappush(heap, (key(items[0]), n, 0, items))
            ahead = next_file()
        _, n, pos, items = heapq.heappop(heap)
        bound = min(heap[0][0] if heap else 1 << 63, key(ahead[1][0]) if ahead is not None else 1 << 63)
        yield items[pos]
        pos += 1
        while pos < len(items) and key(items[pos]) <= bound:  # a run of this file before any other's next item
            yield items[pos]
            pos += 1
        if pos < len(items):
            heapq.heappush(heap, (key(items[pos]), n, pos, items))


class KindInference:
    """Decides span kinds from parent links (see :class:`~rootward.nezha.Span`.kind), holding each span until the
    replayed time is ``hold_s`` past its end; :meth:`add` gives the spans released by the newcomer, in end order.
    Drops spans seen again (``span_duplicate``), counts spans released before their parent came
    (``span_parent_unseen``) and parents released before a cross-service child came (``span_late_child``)."""

    def __init__(self, issues: Issues, hold_s: float = HOLD_S) -> None:
        self.issues = issues
        self.hold = int(hold_s * 1e9)
        self.index: dict[bytes, Span] = {}  # trace id + span id -> the span, held or released within hold_s
        self.waiting: dict[bytes, list[Span]] = {}  # trace id + parent id -> children that came before it
        self.held: deque[Span] = deque()
        self.gone: deque[Span] = deque()
        self.now = 0

    def add(self, span: Span) -> Iterator[Span]:
        key = span.trace_id + span.span_id
        if key in self.index:
            self.issues.skip("span_duplicate", f"{span.pod} {span.name} span {span.span_id.hex()}")
        else:
            self.index[key] = span
            if span.parent_id:
                parent_key = span.trace_id + span.parent_id
                parent = self.index.get(parent_key)
                if parent is not None:
                    self._link(parent, span)
                else:
                    self.waiting.setdefault(parent_key, []).append(span)
            for child in self.waiting.pop(key, ()):
                self._link(span, child)
            self.held.append(span)
            self.now = max(self.now, span.end)
        return self._release(self.now - self.hold)

    def finish(self) -> Iterator[Span]:
        """Release every span still held (the end of the stream)."""
        return self._release(1 << 63)

    def _link(self, parent: Span, child: Span) -> None:
        """What a parent link says about both spans; a span already released keeps the kind it went out with."""
        other = parent.service != child.service
        if child.released:
            self.issues.caveat("span_late_parent", f"{parent.service} -> {child.service}")
        else:
            child.parent_seen = True
            child.server |= other
        if other and parent.released:
            if not parent.client:
                self.issues.caveat("span_late_child", f"{parent.service} -> {child.service}")
        elif other:
            parent.client = True

    def _release(self, cutoff: int) -> Iterator[Span]:
        released: list[Span] = []
        held = self.held
        while held and held[0].end <= cutoff:
            span = held.popleft()
            span.released = True
            if not span.parent_seen:
                self.issues.caveat("span_parent_unseen", f"{span.pod} {span.name}")
            elif span.server and span.client:
                self.issues.caveat("span_server_and_client", f"{span.pod} {span.name}")
            self.gone.append(span)
            released.append(span)
        gone = self.gone
        while gone and gone[0].end <= cutoff - self.hold:
            span = gone.popleft()
            key = span.trace_id + span.span_id
            if self.index.get(key) is span:
                del self.index[key]
            if not span.parent_seen:
                self.waiting.pop(span.trace_id + span.parent_id, None)
        return iter(released)


def _rows(path: Path, header: list[str], issues: Issues, what: str) -> Iterator[list[str]]:
    """The header of a CSV file, then its rows; an unreadable file or a header of another kind is counted
    (``<what>_file_unreadable`` / ``<what>_file_bad_header``) and gives the rows read so far."""
    if csv.field_size_limit() < MAX_FIELD:
        csv.field_size_limit(MAX_FIELD)
    try:
        with path.open(newline="", encoding="utf-8", errors="replace") as f:
            reader = csv.reader(f)
            first = next(reader, None)
            if first is None or [h.strip().lstrip("\ufeff") for h in first[: len(header)]] != header:
                issues.skip(f"{what}_file_bad_header", f"{path}: {first!r:.200}")
                return
            yield first
            yield from (row for row in reader if row)
    except (OSError, csv.Error) as e:
        issues.skip(f"{what}_file_unreadable", f"{path}: {e}")


def _example(path: Path, row: list[str]) -> str:
    return f"{path.name}: {','.join(row)[:160]}"


def spans(day: Day, ids: IdStats, issues: Issues, hold_s: float = HOLD_S) -> Iterator[Span]:
    """The day's spans, deduplicated, with kinds decided, in end order."""
    names: dict[str, str] = {}

    def load(path: Path) -> list[Span]:
        found = []
        for row in islice(_rows(path, TRACE_HEADER, issues, "trace"), 1, None):
            try:
                found.append(parse_span(row, ids, names if len(names) < MAX_NAMES else None))
            except BadRow as e:
                issues.skip(e.reason, _example(path, row))
        return sorted(found, key=attrgetter("end"))

    inference = KindInference(issues, hold_s)
    for span in sliding_merge(day.minute_files("trace"), load, attrgetter("end")):
        yield from inference.add(span)
    yield from inference.finish()


def logs(day: Day, ids: IdStats, issues: Issues) -> Iterator[Log]:
    """The day's log records in time order, lines seen again within LOG_DEDUP_S dropped (``log_duplicate``)."""

    def load(path: Path) -> list[Log]:
        found = []
        for row in islice(_rows(path, LOG_HEADER, issues, "log"), 1, None):
            try:
                found.append(parse_log(row, ids, issues))
            except BadRow as e:
                issues.skip(e.reason, _example(path, row))
        return sorted(found, key=attrgetter("time"))

    window = int(LOG_DEDUP_S * 1e9)
    seen: set[tuple[int, str, int]] = set()
    recent: deque[tuple[int, tuple[int, str, int]]] = deque()
    for log in sliding_merge(day.minute_files("log"), load, attrgetter("time")):
        while recent and recent[0][0] < log.time - window:
            seen.discard(recent.popleft()[1])
        key = (log.time, log.pod, hash(log.body))
        if key in seen:
            issues.skip("log_duplicate", f"{log.pod} {log.body[:120]}")
            continue
        seen.add(key)
        recent.append((log.time, key))
        yield log


def _metric_file(path: Path, issues: Issues) -> Iterator[MetricRow]:
    rows = _rows(path, METRIC_HEADER, issues, "metric")
    header = next(rows, None)
    if header is None:
        return
    columns = metric_columns(header)
    last = 0
    for row in rows:
        try:
            t = go_time_ns(row[0])
        except ValueError:
            issues.skip("metric_time_bad", _example(path, row))
            continue
        if t <= last:
            issues.skip("metric_row_out_of_order", _example(path, row))
            continue
        last = t
        points = []
        for pos, (i, _, _) in enumerate(columns):
            text = row[i].strip() if i < len(row) else ""
            try:
                value = float(text)
            except ValueError:
                issues.skip("metric_value_bad", _example(path, row))
                continue
            if not math.isfinite(value):
                issues.skip("metric_value_nan")  # a latency quantile of a minute without requests
                continue
            points.append((pos, value))
        if points:
            pod = row[2].strip() if len(row) > 2 and row[2].strip() else path.name.removesuffix("_metric.csv")
            yield MetricRow(t, pod, points, columns)


def metric_rows(day: Day, issues: Issues) -> Iterator[MetricRow]:
    """Every pod's metric rows in time order (one open file and one row per pod)."""
    return heapq.merge(*(_metric_file(p, issues) for p in day.metric_files()), key=attrgetter("time"))


def node_names(day: Day) -> dict[str, str]:
    """Pod -> node, from the Node column of the day's log files (only the first fields of each line are read)."""
    nodes: dict[str, str] = {}
    for path in day.minute_files("log"):
        try:
            with path.open("rb") as f:
                for line in f:
                    m = _LOG_LINE_START.match(line)
                    if m:
                        pod = m[2].decode(errors="replace")
                        if pod not in nodes:
                            nodes[pod] = m[1].decode(errors="replace")
        except OSError:
            continue  # counted when the file is read for its records
    return nodes


def _minute_ns(day: Day, path: Path) -> int:
    hh, mm = path.name.split("_")[:2]
    return int(datetime.fromisoformat(f"{day.date}T{hh}:{mm}:00+00:00").timestamp()) * 1_000_000_000


def time_range(day: Day) -> tuple[int, int] | None:
    """About when the day's events start and end (Unix ns): its first metric file's first and last rows and its
    minute files' names; for progress, not for selecting events."""
    times: list[int] = []
    for kind in ("trace", "log"):
        files = day.minute_files(kind)
        if files:
            times += [_minute_ns(day, files[0]) - 60_000_000_000, _minute_ns(day, files[-1]) + 60_000_000_000]
    for path in day.metric_files()[:1]:
        try:
            with path.open("rb") as f:
                head = f.read(4096).splitlines()
                f.seek(max(0, f.seek(0, 2) - 4096))
                tail = f.read().splitlines()
            for line in (head[1:2] + tail[-1:]) if len(head) > 1 else []:
                times.append(go_time_ns(line.decode(errors="replace")))
        except (OSError, ValueError):
            pass
    return (min(times), max(times)) if times else None


def chunked(events: Iterable[tuple[int, int, Any]], resources: Resources, chunking: Chunking) -> Iterator[Request]:
    """Requests of ``events`` ((time, 0 span | 1 metric row | 2 log, item), in time order)."""
    signals: tuple[Signal, ...] = ("traces", "metrics", "logs")
    build: tuple[Callable[[Any, Resources], Any], ...] = (trace_request, metric_request, log_request)
    limits = (chunking.spans, chunking.points, chunking.logs)
    timeout = int(chunking.timeout_s * 1e9)
    buffers: list[list[Any]] = [[], [], []]
    counts, first, last = [0, 0, 0], [0, 0, 0], [0, 0, 0]
    oldest = 1 << 63  # the first event time of the oldest non-empty buffer

    def flush(c: int) -> Request:
        request = Request(signals[c], build[c](buffers[c], resources), counts[c], last[c])
        buffers[c], counts[c], last[c] = [], 0, 0
        return request

    def flush_all(before: int) -> Iterator[Request]:
        for c in sorted((c for c in range(3) if buffers[c] and first[c] <= before), key=first.__getitem__):
            yield flush(c)

    for t, c, item in events:
        if t - oldest >= timeout:
            yield from flush_all(t - timeout)
            oldest = min((first[o] for o in range(3) if buffers[o]), default=1 << 63)
        n = len(item.points) if c == 1 else 1
        if buffers[c] and counts[c] + n > limits[c]:
            yield flush(c)
            oldest = min((first[o] for o in range(3) if buffers[o]), default=1 << 63)
        if not buffers[c]:
            first[c] = t
            oldest = min(oldest, t)
        buffers[c].append(item)
        counts[c] += n
        last[c] = max(last[c], t)
    yield from flush_all(1 << 63)


def day_requests(
    day: Day, issues: Issues | None = None, chunking: Chunking | None = None, hold_s: float = HOLD_S
) -> Iterator[Request]:
    """The export requests of ``day``: every span, log record and metric point in time order. What could not be
    used is counted in ``issues`` (see rootward/nezha.py)."""
    issues = issues if issues is not None else Issues()
    ids = IdStats()
    resources = Resources(day.namespace, node_names(day))
    missing_minutes(day, issues)
    events = heapq.merge(
        ((s.end, 0, s) for s in spans(day, ids, issues, hold_s)),
        ((r.time, 1, r) for r in metric_rows(day, issues)),
        ((g.time, 2, g) for g in logs(day, ids, issues)),
        key=itemgetter(0),
    )
    yield from chunked(events, resources, chunking or Chunking())
    for what, n in ids.hashed.items():
        issues.caveat(f"{what}_id_hashed", n=n)


def requests(days: Iterable[Day], issues: Issues | None = None, chunking: Chunking | None = None) -> Iterator[Request]:
    """The requests of several days, one day after the other (in date order)."""
    for day in sorted(days, key=attrgetter("date", "system")):
        yield from day_requests(day, issues, chunking)
