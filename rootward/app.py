"""The composition root: builds the components from a :class:`~rootward.config.Config` and wires them together.

The receiver feeds a :class:`FanOut` of the stages: a :class:`ReceivedSummary` and the topology graph today;
detection plugs in here as a further consumer when it lands (issue 6).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from rootward.api import build_api
from rootward.clock import Clock, SystemClock
from rootward.config import Config
from rootward.model import Consumer, LogBatch, MetricBatch, SpanBatch
from rootward.receiver import Receiver
from rootward.serving import ThreadedServer
from rootward.telemetry import Telemetry
from rootward.topology import TopologyGraph
from rootward.topology.metrics import ServiceGraphMetrics

logger = logging.getLogger(__name__)


#: Distinct service and metric names a ReceivedSummary keeps; the rest count under OTHER (senders choose names).
MAX_NAMES = 1000
OTHER = "(other)"


def _add(counter: Counter[str], name: str, count: int) -> None:
    counter[name if name in counter or len(counter) < MAX_NAMES else OTHER] += count


@dataclass
class ReceivedSummary:
    """A consumer that keeps totals of what arrived: items per signal, spans per service and kind, metric names,
    log severities. What the demo prints; cheap enough to run always (vectorised per batch), and bounded: at most
    MAX_NAMES names each."""

    items: Counter[str] = field(default_factory=Counter)
    services: Counter[str] = field(default_factory=Counter)
    span_kinds: Counter[int] = field(default_factory=Counter)
    metric_names: Counter[str] = field(default_factory=Counter)
    severities: Counter[int] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def consume_traces(self, batch: SpanBatch) -> None:
        res, counts = np.unique(batch.resource, return_counts=True)
        kinds, kind_counts = np.unique(batch.kind, return_counts=True)
        with self._lock:
            self.items["traces"] += len(batch)
            for r, c in zip(res.tolist(), counts.tolist(), strict=True):
                _add(self.services, batch.resources[r].service_name, c)
            for k, c in zip(kinds.tolist(), kind_counts.tolist(), strict=True):
                self.span_kinds[k] += c

    def consume_metrics(self, batch: MetricBatch) -> None:
        names, counts = np.unique(batch.metric, return_counts=True)
        with self._lock:
            self.items["metrics"] += len(batch)
            for m, c in zip(names.tolist(), counts.tolist(), strict=True):
                _add(self.metric_names, batch.metrics[m].name, c)

    def consume_logs(self, batch: LogBatch) -> None:
        sev, counts = np.unique(batch.severity, return_counts=True)
        with self._lock:
            self.items["logs"] += len(batch)
            for s, c in zip(sev.tolist(), counts.tolist(), strict=True):
                self.severities[s] += c


class FanOut:
    """A Consumer that hands each batch to several stages in turn (on the pipeline thread)."""

    def __init__(self, *consumers: Consumer) -> None:
        self.consumers = consumers

    def consume_traces(self, batch: SpanBatch) -> None:
        for c in self.consumers:
            c.consume_traces(batch)

    def consume_metrics(self, batch: MetricBatch) -> None:
        for c in self.consumers:
            c.consume_metrics(batch)

    def consume_logs(self, batch: LogBatch) -> None:
        for c in self.consumers:
            c.consume_logs(batch)


class App:
    """A running Rootward: receiver -> pipeline, plus its own API endpoint. ``start``/``shutdown`` are idempotent."""

    def __init__(self, config: Config, clock: Clock | None = None, consumer: Consumer | None = None) -> None:
        """``consumer`` replaces the pipeline (for embedding Rootward's receiver, and for tests)."""
        self.config = config
        self.clock = clock or SystemClock()
        self.telemetry = Telemetry()
        self.summary = ReceivedSummary()
        self.topology = TopologyGraph(clock=self.clock)
        self.telemetry.registry.register(ServiceGraphMetrics(self.topology))
        pipeline = consumer or FanOut(self.summary, self.topology)
        self.receiver = Receiver(config.receiver, pipeline, self.telemetry, self.clock)
        api = config.api.listen
        app = build_api(self.telemetry, self.health, self.topology)
        self.api = ThreadedServer(app, api.host, api.port, "API")

    def health(self) -> dict[str, object]:
        """Liveness and readiness with their reasons."""
        queued = self.receiver.queue.size
        capacity = self.config.receiver.queue.max_items
        running = self.receiver.running
        return {
            "alive": running,
            "ready": running and queued < capacity,
            "queue_items": queued,
            "queue_capacity": capacity,
        }

    def start(self) -> None:
        self.receiver.start()
        try:
            self.api.start()
        except Exception:
            self.receiver.shutdown()
            raise
        logger.info(
            "rootward ready: OTLP gRPC :%d, OTLP HTTP :%d, API :%d",
            self.receiver.grpc.port,
            self.receiver.http.port,
            self.api.port,
        )

    def shutdown(self) -> None:
        self.receiver.shutdown()
        self.topology.flush()
        self.api.shutdown()
