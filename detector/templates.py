"""Log templates: log lines mined into templates with drain3, per service, counted per window. A WARN-and-above
template never seen before (once the miner has warmed up) or one surging past 4x its busiest window of the last
``history`` (a template that comes in bursts is judged by its bursts) is an anomaly,
``log_template:<id>`` on the service, with a trace id that showed it (for trace exemplars). Lines of every severity
that name a trace also feed the log flow (detector/logflow.py): a template that stopped coming while its service
and its traces go on is ``log_missing:<id>``.

The miner masks ids (UUIDs, long hex), times, IP addresses and free-standing numbers (with a unit), keeps other
tokens with digits literal, and routes lines by their first three tokens (``drain_depth`` 6): in a ``<time> <level>
<logger#line> ...`` layout two code locations are then two templates however alike their text (with drain3's
defaults, TrainTicket's ``TravelServiceImpl#451`` and ``#457`` lines were one template, and the missing one could
not be told).

Signals name templates by id, never by their text: log text is untrusted and may carry secrets, so it stays in
the process (:attr:`LogTemplates.templates`) and never reaches Slack; in gateway mode and on the DaemonSet the text
of a template a forwarded anomaly names goes to the Rootward that acts, redacted (rootward/forwarded.py). Mining is
bounded: at most ``max_lines_per_window`` lines a window are mined (the rest counted in ``skipped``), at most
``max_templates``.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable

from drain3 import TemplateMiner
from drain3.masking import MaskingInstruction
from drain3.template_miner_config import TemplateMinerConfig

from rootward.clock import Clock, SystemClock, roll
from rootward.detector.detector import Anomaly
from rootward.detector.kube_metrics import Bounded
from rootward.detector.logflow import FlowSettings, LogFlow, bucket, sampling_key
from rootward.detector.windows import WARN
from rootward.model import LogBatch, MetricBatch, SpanBatch, entity_of

logging.getLogger("drain3").setLevel(logging.WARNING)

#: Other Rootwards' template texts kept (``LogTemplates.remember``): up to ~2.5 KiB each with their keys.
MAX_FOREIGN = 2000
#: A template id of this miner's, as a signal names it (ASCII digits: ``str.isdigit`` takes "²", which int() refuses).
_LOCAL_ID = re.compile(r"[0-9]{1,18}")

#: What the miner replaces before it compares lines: ids, times and numbers standing on their own (not the digits of
#: a ``Class#123`` or ``G1234`` token, which name a place or a thing).
MASKS = (
    MaskingInstruction(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b", "ID"),
    MaskingInstruction(r"\b[0-9a-fA-F]{16,}\b", "ID"),
    MaskingInstruction(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?Z?|\d{1,2}:\d{2}:\d{2}(?:[.,]\d+)?", "TIME"),
    MaskingInstruction(r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?(?![\w.])", "IP"),
    MaskingInstruction(r"(?<![\w#.])[-+]?\d+(?:\.\d+)?(?:ms|us|ns|s|m|h|%|[KMG]i?B)?(?!\w|\.\d)", "NUM"),
)


def miner(max_templates: int) -> TemplateMiner:
    """A drain3 miner configured for service logs (see the module's docstring)."""
    config = TemplateMinerConfig()
    config.profiling_enabled = False
    config.drain_max_clusters = max_templates
    config.drain_depth = 6
    config.parametrize_numeric_tokens = False
    config.masking_instructions = list(MASKS)
    return TemplateMiner(config=config)


class LogTemplates:
    """A Consumer of logs; anomalies go to ``sink(now, anomalies)``."""

    def __init__(
        self,
        sink: Callable[[float, list[Anomaly]], None],
        clock: Clock | None = None,
        window_s: float = 10.0,
        warmup_windows: int = 12,
        history: int = 30,
        surge_factor: float = 4.0,
        min_count: int = 5,
        max_lines_per_window: int = 5000,
        max_templates: int = 2000,
        flow: FlowSettings | None = None,
        key: int | None = None,
    ) -> None:
        self.sink = sink
        self.key = (sampling_key() if key is None else key) | 1  # the traces' sampling hash (detector/logflow.py)
        self.clock = clock or SystemClock()
        self.window_s, self.warmup_windows, self.history = window_s, warmup_windows, history
        self.surge_factor, self.min_count = surge_factor, min_count
        self.max_lines, self.max_templates = max_lines_per_window, max_templates
        self.miner = miner(max_templates)
        self.flow = LogFlow(flow, window_s) if flow is not None else None
        self.keep = 1024  # of 1024: the share of traces whose lines below WARN are mined (see _adapt)
        self._offered = 0
        self._mined_info = 0
        self.templates: dict[int, str] = {}
        self.exemplars: dict[tuple[str, int], str] = {}  # (entity, template) -> a trace id (hex) that showed it
        self.counts: Counter[tuple[str, int]] = Counter()
        self.past: dict[tuple[str, int], deque[int]] = {}
        self.known: set[tuple[str, int]] = set()
        self.windows = 0
        self.skipped = 0
        self.current: int | None = None
        self._mined = 0
        self._lock = threading.Lock()
        self.foreign: Bounded[str, str] = Bounded(MAX_FOREIGN)  # "<replica>/<id>" -> another Rootward's template

    def texts(self, keys: Iterable[str]) -> dict[str, str]:
        """The texts of templates by key: this miner's (``"17"``) and other Rootwards' (``"rootward-1/17"``, as
        forwarded); unknown keys are left out. Takes no lock, so that a sink the miner calls while it holds its lock
        (the App's, forwarding a window's anomalies with their texts) may ask: one dict read is atomic, and the
        miner only adds and replaces texts."""
        found = {k: self.templates.get(int(k)) if _LOCAL_ID.fullmatch(k) else self.foreign.get(k) for k in keys}
        return {k: v for k, v in found.items() if v is not None}

    def remember(self, key: str, text: str) -> None:
        """Keep another Rootward's template text (its anomaly was forwarded here): the newest MAX_FOREIGN."""
        with self._lock:
            self.foreign.put(key, text)

    def consume_traces(self, batch: SpanBatch) -> None:
        pass

    def consume_metrics(self, batch: MetricBatch) -> None:
        pass

    def consume_logs(self, batch: LogBatch) -> None:
        with self._lock:
            self._roll(self.clock.now())
            entities = [entity_of(r) for r in batch.resources]
            severe = batch.severity >= WARN
            rows = severe if self.flow is None else severe | (batch.trace_id != 0).any(axis=1)
            for i in rows.nonzero()[0].tolist():
                body, entity = batch.body[i], entities[int(batch.resource[i])]
                if not isinstance(body, str) or entity is None:
                    continue
                hi, lo = batch.trace_id[i].tolist()
                trace, warn = lo or hi, bool(severe[i])
                sampled = bucket(trace, self.key) < self.keep  # the log flow's lines are sampled by trace: all or none
                if not warn:
                    self._offered += 1
                    if not sampled or self._mined_info >= self.max_lines // 2:
                        self.skipped += 1
                        if sampled and self.flow is not None and self.current is not None:
                            self.flow.spoil(trace, self.current)  # a trace missing lines says nothing
                        continue
                    self._mined_info += 1
                if self._mined >= self.max_lines:
                    self.skipped += 1
                    continue
                self._mined += 1
                result = self.miner.add_log_message(body[:2000])
                template = int(result["cluster_id"])
                self.templates[template] = str(result["template_mined"])
                key = (entity, template)
                if self.flow is not None and self.current is not None:
                    self.flow.line(entity, template, trace if sampled else 0, self.current, warn)
                if not warn:
                    continue
                self.counts[key] += 1
                if trace and key not in self.exemplars and len(self.exemplars) < 4 * self.max_templates:
                    self.exemplars[key] = f"{hi:016x}{lo:016x}"

    def tick(self) -> None:
        with self._lock:
            self._roll(self.clock.now())

    def snapshot(self) -> tuple[dict[int, str], dict[tuple[str, int], int], dict[tuple[str, int], str]]:
        """Copies of (template texts, counts per (entity, template), trace exemplars): what the agent's tools read
        beside the pipeline thread. A WARN-and-above template's count is this window's; the log flow's other
        templates count their lines over its trailing window (0 for one that went missing)."""
        with self._lock:
            counts = {key: self.counts.get(key, 0) for key in {*self.counts, *self.known}}
            if self.flow is not None:
                for entity, learned in self.flow.learned.items():
                    for template in learned:
                        counts.setdefault((entity, template), self.flow.trail.sum.get((entity, template), 0))
            return dict(self.templates), counts, dict(self.exemplars)

    def _roll(self, now: float) -> None:
        self.current = roll(self.current, now, self.window_s, self._close)

    def _close(self, number: int) -> None:
        start, end = number * self.window_s, (number + 1) * self.window_s
        warm = self.windows >= self.warmup_windows
        anomalies = []
        for key, count in self.counts.items():
            past = self.past.get(key)
            if key not in self.known:
                if warm and count >= 1:
                    anomalies.append(Anomaly(key[0], f"log_template:{key[1]}", float(count), 0.0, 8.0, start, end))
                if len(self.known) < 4 * self.max_templates:
                    self.known.add(key)
            elif past is not None and len(past) >= 3:
                typical = float(max(past))  # a template that comes in bursts surges past its bursts only
                if count >= max(self.min_count, self.surge_factor * max(typical, 1.0)):
                    score = min(20.0, count / max(typical, 1.0))
                    anomalies.append(
                        Anomaly(key[0], f"log_template:{key[1]}", float(count), typical, score, start, end)
                    )
        for key in self.known:
            ring = self.past.setdefault(key, deque(maxlen=self.history))
            ring.append(self.counts.get(key, 0))
        self.counts.clear()
        if self.flow is not None:
            self._evicted()
            anomalies.extend(self.flow.close(number, start, end))
            self._adapt()
        self._mined = 0
        self.windows += 1
        if anomalies:
            self.sink(end, anomalies)

    def _evicted(self) -> None:
        """Once the miner is full it evicts its least recently seen template, and that template's next line makes a
        new one under a new id: the old id must not then look missing to the log flow, nor its text stay here."""
        alive = self.miner.drain.id_to_cluster
        if len(alive) < self.max_templates or self.windows % 6:
            return
        gone = [t for t in self.templates if t not in alive]
        for template in gone:
            del self.templates[template]
        if gone and self.flow is not None:
            self.flow.drop_templates(set(gone))

    def _adapt(self) -> None:
        """Lines below WARN may take half the mining budget: the share of traces whose lines are mined is set from
        the last window's offer to fit it (and at most half is mined in any window, whatever the share)."""
        budget = self.max_lines // 2
        self.keep = max(1, min(1024, 1024 * budget // max(self._offered, 1)))
        self._offered = self._mined_info = 0
