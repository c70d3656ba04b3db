"""Missing spans: the log flow's tests (detector/logflow.py) over the spans of traces instead of their log lines.

A fault in code that writes no log line still changes which spans a trace holds: a handler that returns early never
makes the calls after it (a service that stopped calling another, an internal step that no longer runs). Each span
of a sampled trace is an event keyed by its span name and service, told to a :class:`LogFlow` under the service that
should have made it: the service of its parent span when that is another one (the caller that stopped calling is
the suspect, not the callee it no longer calls), else its own. The anomaly is ``span_missing:<service> <span name>``
on that service, with the flow's evidence as its score; incidents judge it as they judge ``log_missing``.

Only whole traces are told: a trace is told once its root span has come (spans are sent as they end, the root last)
and no span of it came for a whole window; one whose root has not come within ``max_age`` windows (a root outside
the telemetry, a streaming call), one that lost a span to the budget or grew past ``max_spans_per_trace``, is told
to no one (a partial trace would make its missing spans look missing). Spans of a trace told or dropped in the last
``max_open`` traces are ignored.

Bounded: traces are sampled by a keyed hash of their id (:func:`~rootward.detector.logflow.bucket`) to fit
``max_spans_per_window`` (a trace once taken keeps all its spans), at most
``max_open`` traces are held and ``max_names`` span names known (a span of a further name is left out of every trace
alike, so its absence is no news); what is set aside is counted in ``skipped`` (spans) and ``dropped`` (traces).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from rootward.clock import Clock, SystemClock, roll
from rootward.detector.detector import Anomaly
from rootward.detector.logflow import FlowSettings, LogFlow, buckets, sampling_key
from rootward.model import LogBatch, MetricBatch, SpanBatch, entity_of

#: The flow's settings for spans: a trace holds more span names than log templates.
SPAN_FLOW = FlowSettings(max_keys=64)

Span = tuple[int, int, str | None, int | None]  # span id, parent id, entity, name id (None: not told)
#: Characters of a span name kept (names are the sender's; the signal carries it).
MAX_NAME = 200


class SpanFlow:
    """A Consumer of spans; anomalies go to ``sink(now, anomalies)``."""

    def __init__(
        self,
        sink: Callable[[float, list[Anomaly]], None],
        clock: Clock | None = None,
        window_s: float = 10.0,
        settings: FlowSettings = SPAN_FLOW,
        max_spans_per_window: int = 5000,
        max_open: int = 20_000,
        max_names: int = 10_000,
        max_spans_per_trace: int = 256,
        max_age: int = 30,
        key: int | None = None,
    ) -> None:
        self.sink = sink
        self.clock = clock or SystemClock()
        self.window_s = window_s
        self.flow = LogFlow(settings, window_s)
        self.max_spans, self.max_open, self.max_names = max_spans_per_window, max_open, max_names
        self.max_per_trace, self.max_age = max_spans_per_trace, max_age
        self.keep = 1024  # of 1024: the share of traces whose spans are taken (see _adapt)
        self.key = (sampling_key() if key is None else key) | 1  # the traces' sampling hash (detector/logflow.py)
        self.names: dict[tuple[str, str], int] = {}
        self.texts: dict[int, str] = {}
        self.open: OrderedDict[int, Trace] = OrderedDict()  # by the window of their last span, oldest first
        self.done: OrderedDict[int, None] = OrderedDict()  # traces told or dropped: their late spans are ignored
        self.current: int | None = None
        self.skipped = 0  # spans set aside
        self.dropped = 0  # traces told to no one
        self._offered = self._taken = 0
        self._lock = threading.Lock()

    def consume_traces(self, batch: SpanBatch) -> None:
        with self._lock:
            self._roll(self.clock.now())
            if self.current is None or not len(batch):
                return
            entities = [entity_of(r) for r in batch.resources]
            ids = np.where(batch.trace_id[:, 1] != 0, batch.trace_id[:, 1], batch.trace_id[:, 0])
            chosen = ids != 0
            if self.keep < 1024:  # sampled by trace (a keyed hash of its id)
                chosen &= buckets(ids, self.key) < self.keep
                rest = np.flatnonzero(~chosen & (ids != 0))
                if self.open and len(rest):  # a trace once taken keeps all its spans, though the share fell since
                    chosen[rest] = [t in self.open for t in ids[rest].tolist()]
            rows = np.flatnonzero(chosen)
            traces = ids[rows].tolist()
            spans, parents, names, resources = (
                batch.span_id[rows].tolist(),
                batch.parent_id[rows].tolist(),
                batch.name[rows].tolist(),
                batch.resource[rows].tolist(),
            )
            for i, trace in enumerate(traces):
                entry = self.open.pop(trace, None)
                if entry is None and trace in self.done:
                    continue  # already told
                self._offered += 1
                if entry is None:
                    entry = Trace(self.current)
                entity = entities[resources[i]]
                name = self._name(entity, batch.strings[names[i]][:MAX_NAME]) if entity is not None else None
                if entry.spans is not None and (
                    self._taken >= self.max_spans or len(entry.spans) >= self.max_per_trace
                ):
                    self.skipped += len(entry.spans) + 1
                    entry.spans = None  # a trace missing a span says nothing
                elif entry.spans is not None:
                    entry.spans.append((spans[i], parents[i], entity, name))
                    entry.rooted |= parents[i] == 0
                    self._taken += 1
                else:
                    self.skipped += 1
                entry.last = self.current
                self.open[trace] = entry
                if len(self.open) > self.max_open:
                    self._retire(*self.open.popitem(last=False))

    def consume_metrics(self, batch: MetricBatch) -> None:
        pass

    def consume_logs(self, batch: LogBatch) -> None:
        pass

    def tick(self) -> None:
        with self._lock:
            self._roll(self.clock.now())

    def snapshot(self, entity: str) -> list[tuple[str, float, int]]:
        """The spans the flow learned under ``entity``: ``(<span's service> <span name>, its usual share of the
        spans told under the entity, how many came over the trailing window)``, those that stopped (0) first, then
        the most usual. What the agent's ``span_names`` tool reads beside the pipeline thread."""
        with self._lock:
            flow = self.flow
            learned = flow.learned.get(entity, {})
            total = flow.lines.get(entity, 0.0) or 1.0
            rows = [
                (self.texts.get(name, "?"), round(weight / total, 4), flow.trail.sum.get((entity, name), 0))
                for name, weight in learned.items()
            ]
        return sorted(rows, key=lambda row: (row[2] > 0, -row[1]))

    def _name(self, entity: str, name: str) -> int | None:
        key = (entity, name)
        found = self.names.get(key)
        if found is None and len(self.names) < self.max_names:
            found = self.names[key] = len(self.names) + 1
            self.texts[found] = f"{entity[:MAX_NAME]} {name}"
        return found

    def _roll(self, now: float) -> None:
        self.current = roll(self.current, now, self.window_s, self._close)

    def _close(self, number: int) -> None:
        """Tell the flow the whole traces no span of which came in this window (see the module), then let it judge
        the window."""
        for trace, entry in list(self.open.items()):
            if entry.last >= number:
                break  # the rest came later still
            if entry.rooted or entry.spans is None or number - entry.first >= self.max_age:
                del self.open[trace]
                self._retire(trace, entry, number)
        start, end = number * self.window_s, (number + 1) * self.window_s
        found = []
        for a in self.flow.close(number, start, end):
            text = self.texts[int(a.signal.rpartition(":")[2])]
            found.append(Anomaly(a.entity, f"span_missing:{text}", a.value, a.expected, a.score, a.start, a.end))
        self._adapt()
        if found:
            self.sink(end, found)

    def _retire(self, trace: int, entry: Trace, number: int | None = None) -> None:
        """Tell a whole trace to the flow (stamped with window ``number``: the flow learns its pairs at its next close;
        stamped with the window before, it lost the OnlineBoutique adservice return, whose trace file ends a minute in),
        or drop it; either way its late spans are ignored from now on."""
        self.done[trace] = None
        if len(self.done) > self.max_open:
            self.done.popitem(last=False)
        if entry.spans is None or not entry.rooted or number is None:
            self.dropped += 1
            return
        service = {span: entity for span, _, entity, _ in entry.spans if entity is not None}
        for _, parent, entity, name in entry.spans:
            if entity is not None and name is not None:
                self.flow.line(service.get(parent, entity), name, trace, number)

    def _adapt(self) -> None:
        """The share of traces taken is set from the last window's offer to fit 0.8 of the budget: at most doubled a
        window, and left as it was after a window without traffic."""
        if self._offered:
            offered = self._offered * 1024 / max(self.keep, 1)  # the spans of all traces, had all been sampled
            self.keep = max(1, min(1024, 2 * self.keep, int(1024 * 0.8 * self.max_spans / offered)))
        self._offered = self._taken = 0


@dataclass(slots=True)
class Trace:
    """One trace's spans as they come (None once it can say nothing), the windows of its first and last span, and
    whether its root has come."""

    first: int
    spans: list[Span] | None = field(default_factory=list)
    last: int = 0
    rooted: bool = False
