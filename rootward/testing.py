"""Test fakes of Rootward's own interfaces (never of third-party components): a recording Consumer and a running
receiver on free ports. Used by tests/ and bench/; safe to use from other projects' tests too."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rootward import config
from rootward.model import LogBatch, MetricBatch, SpanBatch
from rootward.receiver import Receiver
from rootward.telemetry import Telemetry


class RecordingConsumer:
    """Keeps every batch it is given. ``delay`` (seconds per batch) makes it a slow consumer for backpressure
    tests; ``fail`` makes it raise on every batch."""

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.traces: list[SpanBatch] = []
        self.metrics: list[MetricBatch] = []
        self.logs: list[LogBatch] = []
        self.delay = delay
        self.fail = fail
        self._cond = threading.Condition()

    def _add(self, target: list[SpanBatch] | list[MetricBatch] | list[LogBatch], batch: object) -> None:
        if self.delay:
            time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("consumer failure requested by the test")
        with self._cond:
            target.append(batch)  # type: ignore[arg-type]
            self._cond.notify_all()

    def consume_traces(self, batch: SpanBatch) -> None:
        self._add(self.traces, batch)

    def consume_metrics(self, batch: MetricBatch) -> None:
        self._add(self.metrics, batch)

    def consume_logs(self, batch: LogBatch) -> None:
        self._add(self.logs, batch)

    def count(self, signal: str) -> int:
        """Items received so far for ``signal`` (traces, metrics, logs)."""
        with self._cond:
            return sum(len(b) for b in getattr(self, signal))

    def wait_for(self, signal: str, n: int, timeout: float = 20.0) -> int:
        """Wait until at least ``n`` items of ``signal`` arrived (or ``timeout``); return the count."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while sum(len(b) for b in getattr(self, signal)) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return sum(len(b) for b in getattr(self, signal))


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports on 127.0.0.1 that were free a moment ago, for programs that cannot bind port 0 and
    report the port they got (rotel, ``rootward serve`` in a subprocess). The sockets stay bound until all are
    picked, so the kernel cannot hand out one port twice."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def accepts_connections(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on ``host:port`` (a subprocess's server is up)."""
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def local_receiver_config(**overrides: object) -> config.Receiver:
    """A receiver config on 127.0.0.1 with both ports 0; ``overrides`` are dotted keys, e.g.
    ``{"auth.tokens": ["s3cret"], "queue.max_items": 100}``."""
    data: dict[str, object] = {"grpc": {"host": "127.0.0.1", "port": 0}, "http": {"host": "127.0.0.1", "port": 0}}
    for key, value in overrides.items():
        node = data
        *path, last = key.split(".")
        for part in path:
            node = node.setdefault(part, {})  # type: ignore[assignment]
        node[last] = value
    return config.Receiver.model_validate(data)


@contextmanager
def running_receiver(
    consumer: RecordingConsumer | None = None, **overrides: object
) -> Iterator[tuple[Receiver, RecordingConsumer]]:
    """A started receiver on free ports and its recording consumer; shut down on exit."""
    consumer = consumer or RecordingConsumer()
    receiver = Receiver(local_receiver_config(**overrides), consumer, Telemetry())
    receiver.start()
    try:
        yield receiver, consumer
    finally:
        receiver.shutdown()
