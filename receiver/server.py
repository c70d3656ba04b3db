"""The receiver as one component: the OTLP/gRPC and OTLP/HTTP servers, the shared ingest, and the pipeline queue.

Lifecycle (safe to call twice, in any order): ``start`` warms up the decoder, starts the pipeline thread and binds
both ports; ``shutdown`` stops accepting (calls in flight finish), drains the queue into the consumer within the
drain deadline, and stops the thread. Items still queued at the deadline are counted as dropped.
"""

from __future__ import annotations

import logging
import threading

from rootward import config
from rootward.clock import Clock, SystemClock
from rootward.model import Consumer
from rootward.receiver.grpc_server import GrpcServer
from rootward.receiver.http_server import HttpServer
from rootward.receiver.ingest import Ingest
from rootward.receiver.queue import BatchQueue
from rootward.telemetry import Telemetry

logger = logging.getLogger(__name__)


class Receiver:
    """OTLP in, columnar batches out to ``consumer``."""

    def __init__(
        self,
        cfg: config.Receiver,
        consumer: Consumer,
        telemetry: Telemetry | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.cfg = cfg
        self.telemetry = telemetry or Telemetry()
        self.queue = BatchQueue(
            consumer, self.telemetry, cfg.queue.max_items, cfg.queue.retry_after_s, clock or SystemClock()
        )
        self.ingest = Ingest(cfg, self.queue, self.telemetry)
        self.grpc = GrpcServer(cfg.grpc, cfg, self.ingest)
        self.http = HttpServer(cfg.http, cfg, self.ingest)
        self._lock = threading.Lock()
        self._running = False

    @property
    def running(self) -> bool:
        return self._running

    def start(self) -> None:
        """Start the pipeline thread and both servers. Raises StartupError when a port cannot be bound."""
        with self._lock:
            if self._running:
                return
            self.ingest.warm_up()
            self.queue.start()
            try:
                self.grpc.start()
                self.http.start()
            except Exception:
                self.grpc.shutdown(0)
                self.http.shutdown()
                self.queue.shutdown(0)
                raise
            self._running = True

    def shutdown(self) -> int:
        """Stop accepting, drain the queue within ``queue.drain_timeout_s``; return the items dropped."""
        with self._lock:
            if not self._running:
                return 0
            self._running = False
            grace = min(5.0, self.cfg.queue.drain_timeout_s)
            self.grpc.shutdown(grace)
            self.http.shutdown(grace)
            lost = self.queue.shutdown(self.cfg.queue.drain_timeout_s)
            logger.info("receiver stopped (%d items dropped at shutdown)", lost)
            return lost
