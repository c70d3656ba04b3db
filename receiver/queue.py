"""The bounded queue between the receiver and the pipeline: backpressure instead of unbounded memory.

Request handlers ``put`` decoded batches without blocking; when the queue holds ``max_items`` items, ``put``
raises :class:`QueueFull` and the sender is told to retry (RESOURCE_EXHAUSTED with RetryInfo, or HTTP 429 with
Retry-After). One pipeline thread hands batches to the :class:`~rootward.model.Consumer` in arrival order. A consumer
that raises loses that batch only: it is logged and counted as dropped, and the thread goes on.
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import Literal

from rootward.clock import Clock, SystemClock
from rootward.model import Consumer, LogBatch, MetricBatch, SpanBatch
from rootward.receiver.errors import QueueFull, ShuttingDown
from rootward.telemetry import Telemetry

logger = logging.getLogger(__name__)

Signal = Literal["traces", "metrics", "logs"]
Batch = SpanBatch | MetricBatch | LogBatch


class BatchQueue:
    """A bounded, item-counted FIFO with one consumer thread. ``start``/``shutdown`` are safe to repeat."""

    def __init__(
        self,
        consumer: Consumer,
        telemetry: Telemetry,
        max_items: int = 200_000,
        retry_after_s: float = 1.0,
        clock: Clock | None = None,
    ) -> None:
        self._consumer = consumer
        self._telemetry = telemetry
        self._max = max_items
        self._retry_after = retry_after_s
        self._clock = clock or SystemClock()
        self._items: collections.deque[tuple[Signal, Batch]] = collections.deque()
        self._size = 0
        self._busy = 0  # items handed to the consumer and not yet done
        self._busy_signal: Signal = "traces"
        self._cond = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        telemetry.queue_capacity.set(max_items)

    @property
    def size(self) -> int:
        """Items queued or being consumed."""
        with self._cond:
            return self._size + self._busy

    def start(self) -> None:
        with self._cond:
            if self._thread is not None:
                return
            self._closing = False
            self._thread = threading.Thread(target=self._run, name="rootward-pipeline", daemon=True)
            self._thread.start()

    def put(self, signal: Signal, batch: Batch) -> None:
        """Queue ``batch`` for the pipeline.

        Raises:
            QueueFull: no room for the batch's items now (a batch larger than the whole queue is accepted
                only into an empty queue, so that no request is refused forever).
            ShuttingDown: the queue is closing.
        """
        n = len(batch)
        with self._cond:
            if self._closing:
                raise ShuttingDown("rootward is shutting down; retry on another instance", self._retry_after)
            queued = self._size + self._busy
            if queued and queued + n > self._max:
                raise QueueFull(f"pipeline queue full ({queued} of {self._max} items); retry later", self._retry_after)
            self._items.append((signal, batch))
            self._size += n
            self._telemetry.queue_items.set(self._size + self._busy)
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._items and not self._closing:
                    self._cond.wait()
                if not self._items:
                    return
                signal, batch = self._items.popleft()
                n = len(batch)
                self._size -= n
                self._busy = n
                self._busy_signal = signal
            try:
                if signal == "traces":
                    self._consumer.consume_traces(batch)  # type: ignore[arg-type]
                elif signal == "metrics":
                    self._consumer.consume_metrics(batch)  # type: ignore[arg-type]
                else:
                    self._consumer.consume_logs(batch)  # type: ignore[arg-type]
            except Exception:
                logger.exception("pipeline stage failed on a %s batch of %d items; batch dropped", signal, n)
                self._telemetry.consumer_errors.labels(signal).inc()
                self._telemetry.items.labels(signal, "dropped", "consumer_error").inc(n)
            with self._cond:
                self._busy = 0
                self._telemetry.queue_items.set(self._size)
                self._cond.notify_all()

    def shutdown(self, timeout: float = 10.0) -> int:
        """Stop taking batches, let the pipeline drain for at most ``timeout`` seconds, and stop the thread.

        Returns the number of items still queued at the deadline; they are counted as dropped. Safe to call twice.
        """
        deadline = self._clock.monotonic() + timeout
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            while (self._items or self._busy) and self._clock.monotonic() < deadline:
                self._cond.wait(timeout=min(0.05, max(0.0, deadline - self._clock.monotonic())))
            left = list(self._items)
            self._items.clear()
            self._size = 0
            thread, self._thread = self._thread, None
        lost = 0
        for signal, batch in left:
            lost += len(batch)
            self._telemetry.items.labels(signal, "dropped", "shutdown_deadline").inc(len(batch))
        if lost:
            logger.warning("shutdown deadline passed with %d items still queued; counted as dropped", lost)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=max(0.0, deadline - self._clock.monotonic()) + 1.0)
            if thread.is_alive():  # a consumer still busy past the deadline: its batch dies with the process
                with self._cond:
                    busy = self._busy
                if busy:
                    lost += busy
                    self._telemetry.items.labels(self._busy_signal, "dropped", "shutdown_deadline").inc(busy)
                    logger.warning(
                        "a %s batch of %d items was still being consumed at shutdown", self._busy_signal, busy
                    )
        return lost

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until the queue is empty and the consumer idle; True when that happened before ``timeout``."""
        deadline = self._clock.monotonic() + timeout
        with self._cond:
            while self._items or self._busy:
                left = deadline - self._clock.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(timeout=min(left, 0.05))
            return True
