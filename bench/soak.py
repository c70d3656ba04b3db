"""``soak_*``: a steady 10k spans/s through a real sender (rotel) into a separate ``rootward serve`` process.

Why this shape: the figures that matter for a sidecar are its own CPU share, its memory, and that nothing is lost
at a realistic node rate. So Rootward runs exactly as deployed (the ``rootward`` command, its own pipeline, its
``/metrics`` endpoint), and the spans reach it through rotel, a real Rust OTLP collector that batches, gzips and
retries as a node agent does. A pacer thread in this process feeds rotel with pre-serialized 100-span requests on
an absolute schedule (so a slow call does not lower the rate). Rotel and the pacer share the 2 cores with Rootward,
so Rootward's CPU is read from ``/proc/PID/stat`` (its own user + system time), not inferred from wall time.

Measured over the pacing window: Rootward's CPU seconds / wall seconds (fraction of one core); its peak RSS
(``VmHWM``, the kernel's high-water mark over the whole life of the process, start-up included; the largest
polled ``VmRSS`` during the window is kept too); and dropped spans = spans rotel acknowledged - spans Rootward
accepted (``rootward_receiver_items_total{outcome="accepted"}``, after letting rotel flush) + spans Rootward
counted as ``dropped`` after accepting them.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import rotel
from prometheus_client.parser import text_string_to_metric_families
from workload import make_request, make_resources

from rootward.testing import accepts_connections, free_ports

ROTEL_AGENT = Path(os.path.dirname(rotel.__file__)) / "rotel-agent"
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
SPANS_PER_SEND = 100
_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class SoakResult:
    cpu_core_fraction: float
    peak_rss_mib: float
    window_max_rss_mib: float
    rss_anon_mib: float
    sent: int
    accepted: int
    dropped: int
    refused: int
    send_failures: int
    seconds: float
    rate: float


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime: fields 14 and 15 of stat(5)


def status_kib(pid: int, key: str) -> int:
    """A ``kB`` line of /proc/PID/status, e.g. VmRSS or VmHWM."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read()
    except OSError as e:
        return getattr(e, "code", 0), b""


def item_counts(api_port: int) -> dict[str, float]:
    """``rootward_receiver_items_total`` for traces, summed by outcome (accepted, refused, dropped)."""
    status, body = _get(f"http://127.0.0.1:{api_port}/metrics")
    if status != 200:
        raise RuntimeError(f"GET /metrics on port {api_port} answered {status}")
    counts = {"accepted": 0.0, "refused": 0.0, "dropped": 0.0}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == "rootward_receiver_items_total" and sample.labels.get("signal") == "traces":
                outcome = sample.labels.get("outcome", "")
                counts[outcome] = counts.get(outcome, 0.0) + sample.value
    return counts


def _wait(predicate: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Poll ``predicate`` until true; raise with the tail of ``log`` when ``proc`` exits or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{what} did not come up (exit code {proc.poll()}):\n{tail}")
        time.sleep(0.05)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (Rootward drains on it), then SIGKILL; only ever the process this module started."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class Pacer(threading.Thread):
    """Sends ``rate`` spans/s to ``port`` for ``seconds``, as 100-span requests on an absolute schedule; counts
    the spans the receiving end acknowledged and the ones whose call failed."""

    def __init__(self, port: int, rate: float, seconds: float) -> None:
        super().__init__(name="soak-pacer", daemon=True)
        rng = random.Random(7)
        resources = make_resources(rng)
        self.requests = [make_request(SPANS_PER_SEND, rng, resources).SerializeToString() for _ in range(50)]
        self.port, self.rate, self.seconds = port, rate, seconds
        self.sent = 0
        self.failed = 0

    def run(self) -> None:
        interval = SPANS_PER_SEND / self.rate
        total = int(self.seconds * self.rate / SPANS_PER_SEND)
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            call = channel.unary_unary(EXPORT)
            started = time.monotonic()
            for i in range(total):
                delay = started + i * interval - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                try:
                    call(self.requests[i % len(self.requests)], timeout=10)
                    self.sent += SPANS_PER_SEND
                except grpc.RpcError:
                    self.failed += SPANS_PER_SEND


def run(seconds: float, rate: float = 10_000.0) -> SoakResult:
    """Start ``rootward serve`` and rotel on free ports, pace ``rate`` spans/s for ``seconds`` into rotel, and
    measure Rootward. Both processes are stopped on the way out, whatever happens."""
    grpc_port, http_port, api_port, rotel_grpc, rotel_http = free_ports(5)
    rootward_bin = Path(sys.executable).with_name("rootward")
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="rootward-soak-") as tmp:
        work = Path(tmp)
        try:
            rw_log = work / "rootward.log"
            with rw_log.open("wb") as out:
                rootward = subprocess.Popen(
                    [str(rootward_bin), "serve"]
                    + [f"--set={kv}" for kv in _rootward_settings(grpc_port, http_port, api_port, work)],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                )  # fmt: skip
            procs.append(rootward)
            _wait(lambda: _get(f"http://127.0.0.1:{api_port}/readyz")[0] == 200, 60, "rootward serve", rootward, rw_log)
            rotel_log = work / "rotel.out"
            env = {k: v for k, v in os.environ.items() if not k.startswith("ROTEL_")}
            with rotel_log.open("wb") as out:
                sender = subprocess.Popen(
                    [str(ROTEL_AGENT), "start", "--otlp-grpc-endpoint", f"127.0.0.1:{rotel_grpc}",
                     "--otlp-http-endpoint", f"127.0.0.1:{rotel_http}", "--pid-file", str(work / "rotel.pid"),
                     "--log-file", str(work / "rotel.log"), "--exporter", "otlp",
                     "--otlp-exporter-endpoint", f"http://127.0.0.1:{grpc_port}",
                     "--otlp-exporter-retry-initial-backoff", "200ms", "--otlp-exporter-retry-max-backoff", "1s"],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                )  # fmt: skip
            procs.append(sender)
            _wait(lambda: accepts_connections(rotel_grpc), 15, "rotel-agent", sender, rotel_log)
            return _measure(rootward.pid, api_port, Pacer(rotel_grpc, rate, seconds))
        finally:
            for proc in reversed(procs):
                _stop(proc)


def _rootward_settings(grpc_port: int, http_port: int, api_port: int, data_dir: Path) -> list[str]:
    return [
        f"storage.data_dir={data_dir}",  # the topology history, checkpointed every 30 s as deployed
        "receiver.grpc.host=127.0.0.1",
        f"receiver.grpc.port={grpc_port}",
        "receiver.http.host=127.0.0.1",
        f"receiver.http.port={http_port}",
        "api.listen.host=127.0.0.1",
        f"api.listen.port={api_port}",
        "logging.level=WARNING",
    ]


def _measure(pid: int, api_port: int, pacer: Pacer) -> SoakResult:
    max_rss = status_kib(pid, "VmRSS")
    before = item_counts(api_port)  # zero unless something else sent to this instance: subtracted all the same
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    pacer.start()
    while pacer.is_alive():
        pacer.join(0.25)
        max_rss = max(max_rss, status_kib(pid, "VmRSS"))
    cpu1, t1 = cpu_seconds(pid), time.monotonic()
    deadline = time.monotonic() + 15  # rotel flushes its last batch within its batch timeout, or retries
    counts = item_counts(api_port)
    while counts["accepted"] - before["accepted"] < pacer.sent and time.monotonic() < deadline:
        time.sleep(0.2)
        counts = item_counts(api_port)
    counts = {outcome: counts.get(outcome, 0.0) - before.get(outcome, 0.0) for outcome in counts}
    accepted = int(counts["accepted"])
    return SoakResult(
        cpu_core_fraction=(cpu1 - cpu0) / (t1 - t0),
        peak_rss_mib=status_kib(pid, "VmHWM") / 1024,
        window_max_rss_mib=max_rss / 1024,
        rss_anon_mib=status_kib(pid, "RssAnon") / 1024,
        sent=pacer.sent,
        accepted=accepted,
        dropped=max(0, pacer.sent - accepted) + int(counts["dropped"]),
        refused=int(counts["refused"]),
        send_failures=pacer.failed,
        seconds=t1 - t0,
        rate=(pacer.sent + pacer.failed) / (t1 - t0),
    )
