"""Missing spans: the log flow's tests (detector/logflow.py) over the spans of traces instead of their log lines.

A fault in code that writes no log line still changes which spans a trace holds: a handler that returns early never
makes the calls after it (a service that stopped calling another, an internal step that no longer runs). Each span
of a sampled trace is an event keyed by its span name and service, told to a :class:`LogFlow` under the service that
should have made it: the service of its parent span when that is another one (the caller that stopped calling is
the suspect, not the callee it no longer calls), else its own. A trace is told once no span of it came for a whole
window, so parents that arrive after their children (exporters send spans as they end) are known. The anomaly is
``span_missing:<service> <span name>`` on that service, with the flow's evidence as its score; incidents judge it as
they judge ``log_missing``.

Bounded: traces are sampled by id to fit ``max_spans_per_window`` (a kept trace keeps all its spans; a trace that
lost a span to the budget counts for nothing), at most ``max_open`` traces are held and ``max_names`` span names
known; what is set aside is counted in ``skipped``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from rootward.clock import Clock, SystemClock
from rootward.detector.detector import Anomaly
from rootward.detector.logflow import FlowSettings, LogFlow
from rootward.model import LogBatch, MetricBatch, SpanBatch, entity_of

#: The flow's settings for spans: a trace holds more span names than log templates.
SPAN_FLOW = FlowSettings(max_keys=64)

Span = tuple[int, int, str, int]  # span id, parent id, entity, name id
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
    ) -> None:
        self.sink = sink
        self.clock = clock or SystemClock()
        self.window_s = window_s
        self.flow = LogFlow(settings, window_s)
        self.max_spans, self.max_open, self.max_names = max_spans_per_window, max_open, max_names
        self.keep = 1024  # of 1024: the share of traces whose spans are taken (see _adapt)
        self.names: dict[tuple[str, str], int] = {}
        self.texts: dict[int, str] = {}
        self.open: OrderedDict[int, tuple[int, list[Span] | None]] = OrderedDict()  # None: spoiled
        self.current: int | None = None
        self.skipped = 0
        self._offered = self._taken = 0
        self._lock = threading.Lock()

    def consume_traces(self, batch: SpanBatch) -> None:
        with self._lock:
            self._roll(self.clock.now())
            if self.current is None or not len(batch):
                return
            entities = [entity_of(r) for r in batch.resources]
            hi, lo = batch.trace_id[:, 0].tolist(), batch.trace_id[:, 1].tolist()
            spans, parents, names, resources = (
                batch.span_id.tolist(),
                batch.parent_id.tolist(),
                batch.name.tolist(),
                batch.resource.tolist(),
            )
            for i in range(len(batch)):
                trace = lo[i] or hi[i]
                if not trace or trace & 1023 >= self.keep:
                    continue
                self._offered += 1
                entity = entities[resources[i]]
                name = self._name(entity, batch.strings[names[i]][:MAX_NAME]) if entity is not None else None
                entry = self.open.pop(trace, None)
                held = [] if entry is None else entry[1]
                if held is not None and (name is None or self._taken >= self.max_spans):
                    held = None  # a trace missing a span says nothing
                if held is not None and entity is not None and name is not None:
                    held.append((spans[i], parents[i], entity, name))
                    self._taken += 1
                else:
                    self.skipped += 1
                self.open[trace] = (self.current, held)
                if len(self.open) > self.max_open:
                    self.open.popitem(last=False)
                    self.skipped += 1

    def consume_metrics(self, batch: MetricBatch) -> None:
        pass

    def consume_logs(self, batch: LogBatch) -> None:
        pass

    def tick(self) -> None:
        with self._lock:
            self._roll(self.clock.now())

    def _name(self, entity: str, name: str) -> int | None:
        key = (entity, name)
        found = self.names.get(key)
        if found is None and len(self.names) < self.max_names:
            found = self.names[key] = len(self.names) + 1
            self.texts[found] = f"{entity} {name}"
        return found

    def _roll(self, now: float) -> None:
        number = int(now // self.window_s)
        if self.current is None:
            self.current = number
        elif number > self.current:
            self._close(self.current)
            self.current = number

    def _close(self, number: int) -> None:
        """Tell the flow the traces no span of which came in this window, then let it judge the window."""
        while self.open and next(iter(self.open.values()))[0] < number:
            trace, (_, held) = self.open.popitem(last=False)
            if held is None:
                continue
            service = {span: entity for span, _, entity, _ in held}
            for _, parent, entity, name in held:
                caller = service.get(parent, entity)
                self.flow.line(caller, name, trace, number)
        start, end = number * self.window_s, (number + 1) * self.window_s
        found = []
        for a in self.flow.close(number, start, end):
            text = self.texts[int(a.signal.rpartition(":")[2])]
            found.append(Anomaly(a.entity, f"span_missing:{text}", a.value, a.expected, a.score, a.start, a.end))
        self._adapt()
        if found:
            self.sink(end, found)

    def _adapt(self) -> None:
        """The share of traces taken is set from the last window's offer to fit the budget."""
        self.keep = max(1, min(1024, 1024 * self.max_spans // max(self._offered * 1024 // max(self.keep, 1), 1)))
        self._offered = self._taken = 0
