"""Where a replay sends its requests (rootward/replay.py): a real OTLP/gRPC client to a running receiver
(:class:`GrpcSink`: a grpc channel calling the TraceService / MetricsService / LogsService ``Export`` methods with
serialized requests, a bearer token when given, and the retries a Collector's exporter makes), or an in-process
:class:`~rootward.app.App` on free local ports (:class:`InProcess`) whose clock is a :class:`ReplayClock`:
:func:`~rootward.replay.replay` sets it to each request's event time before sending it (closing each detection window
it passes, as a live App's ticker would), and the sink waits for the pipeline queue to drain after it, so windows and
TTLs see replayed time, not the speed of the replay.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from rootward.app import App
from rootward.clock import ManualClock
from rootward.config import LOCAL_PORTS, NOTHING_ON_DISK, REPRODUCIBLE, Config, load_config
from rootward.errors import RootwardError
from rootward.model import Consumer
from rootward.receiver.queue import Signal

_METHODS: dict[Signal, tuple[str, Any]] = {
    "traces": ("/opentelemetry.proto.collector.trace.v1.TraceService/Export", ExportTraceServiceResponse),
    "metrics": ("/opentelemetry.proto.collector.metrics.v1.MetricsService/Export", ExportMetricsServiceResponse),
    "logs": ("/opentelemetry.proto.collector.logs.v1.LogsService/Export", ExportLogsServiceResponse),
}
_RETRIED = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE)
_FATAL = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNIMPLEMENTED)
#: Settings of the in-process App: free local ports, no files left behind (the history off), the same traces sampled
#: each run. ``--set`` and a configuration file can change everything else (windows, TTLs, limits).
IN_PROCESS = (*LOCAL_PORTS, *NOTHING_ON_DISK, *REPRODUCIBLE)


class ReplayError(RootwardError):
    """The replay cannot go on: a source that cannot be read at all, or a receiver that refuses every request
    (unreachable, or the token is wrong)."""


@dataclass(frozen=True, slots=True)
class Sent:
    """What the receiver said about one request: items it refused (partial success, or the whole request when it
    failed), and the failure's status code name (None on success)."""

    rejected: int
    error: str | None = None
    message: str = ""


class Sink(Protocol):
    def export(self, signal: Signal, payload: bytes, items: int) -> Sent: ...

    def close(self) -> None: ...


def _retry_delay(err: grpc.RpcError) -> float | None:
    """The RetryInfo delay of a failed call, in seconds, if the server sent one."""
    try:
        status = rpc_status.from_call(err)
    except ValueError:
        return None
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return float(info.retry_delay.seconds + info.retry_delay.nanos / 1e9)
    return None


class GrpcSink:
    """An OTLP/gRPC exporter: one channel, the three Export methods, bearer auth, retries.

    RESOURCE_EXHAUSTED and UNAVAILABLE are retried after the server's RetryInfo delay (else with exponential
    backoff from 0.1 s to 5 s) for at most ``max_retry_s``; a request still refused then counts as rejected, and one
    still UNAVAILABLE raises ReplayError (the receiver is gone). UNAUTHENTICATED, PERMISSION_DENIED and
    UNIMPLEMENTED raise ReplayError at once (every later request would fail the same way); any other error rejects
    that request only.
    """

    def __init__(
        self,
        target: str,
        token: str | None = None,
        tls: bool = False,
        ca_file: Path | None = None,
        timeout_s: float = 30.0,
        max_retry_s: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", 4 * 2**20)]
        if tls:
            roots = ca_file.read_bytes() if ca_file is not None else None
            self.channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(roots), options=options)
        else:
            self.channel = grpc.insecure_channel(target, options=options)
        self.target = target
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.timeout_s = timeout_s
        self.max_retry_s = max_retry_s
        self.sleep = sleep
        self.retries = 0
        self._calls = {
            signal: self.channel.unary_unary(method, response_deserializer=response.FromString)
            for signal, (method, response) in _METHODS.items()
        }

    def export(self, signal: Signal, payload: bytes, items: int) -> Sent:
        """Send one serialized Export*ServiceRequest. Raises ReplayError (see the class)."""
        call = self._calls[signal]
        deadline = time.monotonic() + self.max_retry_s
        backoff = 0.1
        while True:
            try:
                response = call(payload, metadata=self.metadata, timeout=self.timeout_s)
            except grpc.RpcError as err:
                code: grpc.StatusCode = err.code()
                details = str(err.details())
                if code in _FATAL:
                    raise ReplayError(f"{self.target} refused the replay: {code.name}: {details}") from err
                if code in _RETRIED:
                    delay = _retry_delay(err) or backoff
                    if time.monotonic() + delay <= deadline:
                        self.retries += 1
                        self.sleep(delay)
                        backoff = min(backoff * 2, 5.0)
                        continue
                    if code == grpc.StatusCode.UNAVAILABLE:
                        raise ReplayError(f"{self.target} unavailable for {self.max_retry_s:.0f} s: {details}") from err
                return Sent(items, code.name, details)
            partial = response.partial_success
            rejected = getattr(
                partial,
                {"traces": "rejected_spans", "metrics": "rejected_data_points", "logs": "rejected_log_records"}[signal],
            )
            return Sent(int(rejected), None, partial.error_message)

    def close(self) -> None:
        self.channel.close()


class ReplayClock(ManualClock):
    """A ManualClock that, set across window boundaries, stops at each and calls ``on_window`` there: the windows
    close one at a time as replayed time passes them, as a live App's ticker closes them, however far apart the
    requests are (set once to the far side of a silence, the open window closed late and the ones between not at
    all; a trace flow lost the traces of a trace file's last seconds with them). The first set (the first request's
    jump to replayed time) stops nowhere. An error in ``on_window`` ends the replay: a live ticker logs it and goes
    on, but a replay that skipped a window would score something that never runs live."""

    def __init__(self, window_s: float, start: float = 0.0) -> None:
        super().__init__(start)
        self.window_s = window_s
        self.on_window: Callable[[], None] | None = None
        self._started = False

    def set(self, t: float) -> None:
        if self.on_window is not None and self._started:
            k = math.floor(self.now() / self.window_s) + 1
            while (boundary := self._boundary(k)) <= t:
                super().set(boundary)
                self.on_window()
                k += 1
        self._started = True
        super().set(t)

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        self.set(self.now() + seconds)

    def _boundary(self, k: int) -> float:
        """The start of window ``k``: the least float whose window number (``t // window_s``) is ``k``."""
        t = k * self.window_s
        while t // self.window_s < k:
            t = math.nextafter(t, math.inf)
        return t


class InProcess:
    """A Rootward App on free local ports, on a ReplayClock at replayed time (each window passed is closed), and a
    sink to its OTLP/gRPC port that waits for the pipeline queue to drain after each request. A context manager::

        with InProcess() as target:
            stats = replay(source.requests, target.sink, clock=target.clock)
            target.app.topology.calls()

    ``config`` defaults to the built-in defaults with :data:`IN_PROCESS` applied; ``consumer`` replaces the
    App's pipeline (e.g. an evaluation's own stages)."""

    def __init__(self, config: Config | None = None, consumer: Consumer | None = None) -> None:
        self.config = config or load_config(environ={}, overrides=IN_PROCESS)
        self.clock = ReplayClock(self.config.detection.window_s)  # the first request moves it to replayed time
        self.app = App(self.config, self.clock, consumer)
        self.clock.on_window = self.app.tick
        self.sink: DrainingSink | None = None

    def __enter__(self) -> InProcess:
        self.app.start(timers=False)  # windows close as the clock passes them, the sink runs the graph's upkeep
        try:
            grpc_sink = GrpcSink(f"127.0.0.1:{self.app.receiver.grpc.port}", token=self._token())
        except Exception:
            self.app.shutdown()
            raise
        self.sink = DrainingSink(grpc_sink, self.app)
        return self

    def _token(self) -> str | None:
        tokens = self.config.receiver.auth.tokens
        return tokens[0].get_secret_value() if tokens else None

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        if self.sink is not None:
            self.sink.close()
        self.app.shutdown()


class DrainingSink:
    """A sink that, after each request, waits until the App's pipeline has consumed it, then runs the graph's upkeep
    when it is due on the App's clock (replayed time): a replay's outcome must not depend on how fast it ran."""

    def __init__(self, sink: GrpcSink, app: App) -> None:
        self.inner = sink
        self.app = app

    def export(self, signal: Signal, payload: bytes, items: int) -> Sent:
        sent = self.inner.export(signal, payload, items)
        self.app.receiver.queue.wait_idle()
        self.app.maintenance.upkeep_at(self.app.clock.now())
        return sent

    def close(self) -> None:
        self.inner.close()
