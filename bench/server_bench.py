"""``server_spans_per_s`` and ``server_vs_raw``: Rootward's real gRPC server against a raw-bytes grpcio server.

Why this shape: a Python gRPC server's Python work is held to one core by the GIL, and on a 2-core box a client in
the same process would take the server's GIL and half its CPU. So each server runs in its own process, and one
client process (a raw ``unary_unary`` channel sending pre-serialized bytes from a few threads) drives both, with
the same requests, in interleaved rounds (raw, real, real, raw, ...). The raw server (a generic handler that only
counts bytes and returns an empty response) is the ceiling of grpcio itself on this machine: the ratio says what
fraction of it Rootward keeps after authorising, decoding, queueing and counting.

Two figures per server: wall-clock spans/s as the client saw it (used for the ratio), and spans per server
CPU-second (the server process's own user + system time over the round, read with ``resource.getrusage`` in that
process, so the client's CPU does not count).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import resource
import statistics
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class NullConsumer:
    """Counts spans and does nothing else: the server benchmark measures the receiver, not a pipeline."""

    def __init__(self) -> None:
        self.spans = 0

    def consume_traces(self, batch: Any) -> None:
        self.spans += len(batch)

    def consume_metrics(self, batch: Any) -> None:
        pass

    def consume_logs(self, batch: Any) -> None:
        pass


def _start_raw() -> tuple[int, Any, Any, Any]:
    """A grpcio server with the same thread pool as Rootward's and a handler that only counts bytes."""
    import grpc

    lock = threading.Lock()
    total = [0]

    def export(request: bytes, context: Any) -> bytes:
        with lock:
            total[0] += len(request)
        return b""  # an empty ExportTraceServiceResponse

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=[("grpc.so_reuseport", 0)])
    handler = grpc.method_handlers_generic_handler(
        "opentelemetry.proto.collector.trace.v1.TraceService",
        {"Export": grpc.unary_unary_rpc_method_handler(export)},
    )
    server.add_generic_rpc_handlers([handler])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return port, lambda: server.stop(1).wait(), lambda: total[0], lambda: None


def _start_real() -> tuple[int, Any, Any, Any]:
    """Rootward's Receiver (both transports, queue, pipeline thread) feeding a :class:`NullConsumer`."""
    from rootward.receiver import Receiver
    from rootward.telemetry import Telemetry
    from rootward.testing import local_receiver_config

    consumer = NullConsumer()
    receiver = Receiver(local_receiver_config(**{"queue.max_items": 10_000_000}), consumer, Telemetry())
    receiver.start()  # warms up the decoder before any request
    return receiver.grpc.port, receiver.shutdown, lambda: consumer.spans, lambda: receiver.queue.wait_idle(30)


def server_main(kind: str, conn: Connection) -> None:
    """Child process: start a ``kind`` ("raw" or "real") server, send its port, then answer ``cpu`` (this
    process's CPU seconds after the queue drained), ``count`` and ``stop``."""
    logging.basicConfig(level=logging.WARNING)
    port, stop, count, idle = _start_raw() if kind == "raw" else _start_real()
    conn.send(port)
    while True:
        command = conn.recv()
        if command == "cpu":
            idle()
            conn.send(_cpu_seconds())
        elif command == "count":
            conn.send(count())
        else:
            stop()
            conn.send(None)
            return


def _send_all(call: Any, requests: list[bytes], n: int, streams: int) -> tuple[float, float] | str:
    """Send ``n`` requests (cycling through ``requests``) over ``streams`` threads, each keeping one call in
    flight; return (wall seconds, this process's CPU seconds), or the first error as a string."""
    next_index = iter(range(n))
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker() -> None:
        while True:
            with lock:
                i = next(next_index, None)
            if i is None:
                return
            try:
                call(requests[i % len(requests)], timeout=30)
            except Exception as e:  # noqa: BLE001 - reported to the parent, which fails the benchmark
                errors.append(e)
                return

    threads = [threading.Thread(target=worker) for _ in range(streams)]
    cpu_before = _cpu_seconds()
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    return f"error: {errors[0]!r}" if errors else (elapsed, _cpu_seconds() - cpu_before)


def client_main(requests: list[bytes], streams: int, conn: Connection) -> None:
    """Child process: for each ``(port, n)`` received, send ``n`` requests to that port (see :func:`_send_all`)
    and reply with its result; ``None`` ends it. Channels are made once per port and kept warm."""
    import grpc

    channels: dict[int, Any] = {}
    while True:
        job = conn.recv()
        if job is None:
            for channel in channels.values():
                channel.close()
            conn.send(None)
            return
        port, n = job
        if port not in channels:
            channels[port] = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.so_reuseport", 0)])
        conn.send(_send_all(channels[port].unary_unary(EXPORT), requests, n, streams))


@dataclass(frozen=True)
class ServerResult:
    real_spans_per_s: float
    raw_spans_per_s: float
    ratio: float
    real_cpu_us_per_span: float
    raw_cpu_us_per_span: float
    client_cpu_us_per_span: dict[str, float]
    rounds: int


class _Child:
    """One child process and its end of a pipe; ``stop_message`` asks it to end cleanly."""

    def __init__(self, target: Any, args: tuple[Any, ...], stop_message: Any) -> None:
        ctx = mp.get_context("spawn")  # no fork: the parent holds grpc state that must not be copied
        self.conn, child_conn = ctx.Pipe()
        self.stop_message = stop_message
        self.proc = ctx.Process(target=target, args=(*args, child_conn), daemon=True)
        self.proc.start()

    def receive(self, timeout: float = 120.0) -> Any:
        if not self.conn.poll(timeout):
            raise RuntimeError(f"benchmark child {self.proc.pid} did not answer within {timeout} s")
        return self.conn.recv()

    def ask(self, message: Any, timeout: float = 120.0) -> Any:
        self.conn.send(message)
        return self.receive(timeout)

    def close(self) -> None:
        try:
            if self.proc.is_alive():
                self.ask(self.stop_message, 30)
        except (OSError, EOFError, RuntimeError):
            pass  # already gone or stuck: terminated below
        finally:
            self.proc.join(10)
            if self.proc.is_alive():
                self.proc.terminate()
                self.proc.join(5)


def run(requests: list[bytes], spans_per_request: int, calls: int, rounds: int, streams: int = 4) -> ServerResult:
    """``rounds`` interleaved rounds of ``calls`` requests to each server; medians of wall throughput and of server
    CPU per span. The first call of each server is a warm-up (connection set-up, first-request costs)."""
    children: list[_Child] = []
    try:
        servers = {kind: _Child(server_main, (kind,), "stop") for kind in ("raw", "real")}
        children += servers.values()
        client = _Child(client_main, (requests, streams), None)
        children.append(client)
        ports = {kind: child.receive() for kind, child in servers.items()}
        for kind in servers:
            _check(client.ask((ports[kind], 2 * streams)), kind)
        wall: dict[str, list[float]] = {"raw": [], "real": []}
        cpu: dict[str, list[float]] = {"raw": [], "real": []}
        client_cpu: dict[str, list[float]] = {"raw": [], "real": []}
        spans = calls * spans_per_request
        for r in range(rounds):
            for kind in ("raw", "real") if r % 2 == 0 else ("real", "raw"):
                before = servers[kind].ask("cpu")
                elapsed, client_seconds = _check(client.ask((ports[kind], calls)), kind)
                after = servers[kind].ask("cpu")  # after the real server's queue drained into the consumer
                wall[kind].append(spans / elapsed)
                cpu[kind].append((after - before) / spans * 1e6)
                client_cpu[kind].append(client_seconds / spans * 1e6)
        expected = (rounds * calls + 2 * streams) * spans_per_request
        got = servers["real"].ask("count")
        if got != expected:
            raise RuntimeError(f"the real server's consumer saw {got} spans, {expected} were sent")
    finally:
        for child in children:
            child.close()
    real, raw = statistics.median(wall["real"]), statistics.median(wall["raw"])
    return ServerResult(
        real_spans_per_s=real,
        raw_spans_per_s=raw,
        ratio=real / raw,
        real_cpu_us_per_span=statistics.median(cpu["real"]),
        raw_cpu_us_per_span=statistics.median(cpu["raw"]),
        client_cpu_us_per_span={kind: statistics.median(values) for kind, values in client_cpu.items()},
        rounds=rounds,
    )


def _check(answer: Any, kind: str) -> tuple[float, float]:
    if isinstance(answer, str):
        raise RuntimeError(f"client sending to the {kind} server failed: {answer}")
    return float(answer[0]), float(answer[1])
