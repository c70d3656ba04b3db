"""Restart: ``rootward serve`` as a real process, fed by the OTel SDK, killed with SIGKILL and started again on the
same history. The graph comes back, and no servicegraph counter on /metrics is ever lower than a value served
before the kill."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from rootward.synthetic import Shop

Series = tuple[str, frozenset[tuple[str, str]]]
PAYMENT = ("checkout", "payment")


@dataclass
class Serving:
    proc: subprocess.Popen[bytes]
    grpc: int
    api: str


@contextmanager
def serve(history: Path, log: Path) -> Iterator[Serving]:
    """``rootward serve`` on free ports with its history at ``history``, checkpointing every second; always
    stopped (SIGKILL) on the way out."""
    sets = [f"{part}.host=127.0.0.1" for part in ("receiver.grpc", "receiver.http", "api.listen")]
    sets += [f"{part}.port=0" for part in ("receiver.grpc", "receiver.http", "api.listen")]
    sets += [f"topology.history.path={history}", "topology.history.checkpoint_interval_s=1"]
    sets += [f"storage.data_dir={history.parent}"]
    cmd = [sys.executable, "-m", "rootward.cli", "serve", *[a for s in sets for a in ("--set", s)]]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOTWARD_")}
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 60
        while not (found := re.search(r"OTLP gRPC :(\d+), OTLP HTTP :\d+, API :(\d+)", log.read_text())):
            assert proc.poll() is None, f"rootward serve exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"rootward serve did not start:\n{log.read_text()}"
            time.sleep(0.05)
        yield Serving(proc, int(found.group(1)), f"http://127.0.0.1:{found.group(2)}")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def service_graph(api: str) -> dict[Series, float]:
    """Every ``traces_service_graph_*`` sample /metrics serves now."""
    text = httpx.get(f"{api}/metrics", timeout=10).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("traces_service_graph_")
    }


def requests_between(samples: dict[Series, float], client: str, server: str) -> float:
    labels = frozenset({"client": client, "server": server, "connection_type": "",
                        "client_service_namespace": "shop", "server_service_namespace": "shop"}.items())  # fmt: skip
    return samples.get(("traces_service_graph_request_total", labels), 0.0)


def live_requests(api: str) -> int:
    """Requests from checkout to payment in the live graph."""
    graph = httpx.get(f"{api}/api/v1/entity", params={"id": "service:shop/payment"}, timeout=10).json()
    return sum(e["requests"] for e in graph.get("incoming", []) if e["source"] == "service:shop/checkout")


def wait_until(predicate: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_graph_and_counters_survive_a_kill_and_restart(tmp_path: Path) -> None:
    history = tmp_path / "topology.db"
    served: dict[Series, float] = {}  # the highest value each series was ever served before the kill
    with serve(history, tmp_path / "first.log") as first:
        shop = Shop(f"127.0.0.1:{first.grpc}")
        for i in range(20):
            shop.request(payment_failing=i % 4 == 0)
        shop.close()
        wait_until(lambda: requests_between(service_graph(first.api), *PAYMENT) == 20, "a checkpoint of 20 requests")
        served = service_graph(first.api)
        shop = Shop(f"127.0.0.1:{first.grpc}")
        for i in range(30):  # more traffic while scraping: the live graph runs ahead of the last checkpoint
            shop.request(payment_failing=i % 3 == 0)
            if i % 5 == 4:
                shop.close()
                shop = Shop(f"127.0.0.1:{first.grpc}")
                for series, value in service_graph(first.api).items():
                    served[series] = max(served.get(series, 0.0), value)
        shop.close()
        wait_until(lambda: live_requests(first.api) == 50, "the live graph to hold all 50 requests")
        for series, value in service_graph(first.api).items():  # most likely before the checkpoint of all 50
            served[series] = max(served.get(series, 0.0), value)
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
    assert requests_between(served, *PAYMENT) >= 20
    assert any(name == "traces_service_graph_request_failed_total" and v > 0 for (name, _), v in served.items())

    with serve(history, tmp_path / "second.log") as second:
        after = service_graph(second.api)
        lower = {s: (before, after.get(s)) for s, before in served.items() if after.get(s, -1.0) < before}
        assert not lower, f"counters went backwards after the restart: {lower}"
        graph = httpx.get(f"{second.api}/api/v1/topology", params={"kind": "service"}, timeout=10).json()
        assert {e["id"] for e in graph["entities"]} >= {
            f"service:shop/{s}" for s in ("frontend", "checkout", "payment")
        }
        (call,) = [
            e for e in graph["edges"] if (e["source"], e["target"]) == tuple(f"service:shop/{s}" for s in PAYMENT)
        ]
        assert call["requests"] >= requests_between(served, *PAYMENT)
        shop = Shop(f"127.0.0.1:{second.grpc}")  # and counting goes on from there
        for _ in range(5):
            shop.request()
        shop.close()
        wait_until(
            lambda: requests_between(service_graph(second.api), *PAYMENT) >= requests_between(after, *PAYMENT) + 5,
            "new requests counted on top of the restored ones",
        )


def test_serve_refuses_a_corrupt_history_with_a_clear_error(tmp_path: Path) -> None:
    history = tmp_path / "topology.db"
    history.write_bytes(b"\x00not sqlite\x00" * 512)
    sets = ["receiver.grpc.port=0", "receiver.http.port=0", "api.listen.port=0", f"topology.history.path={history}"]
    cmd = [sys.executable, "-m", "rootward.cli", "serve", *[a for s in sets for a in ("--set", s)]]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert f"topology history: {history}: cannot open: file is not a database" in result.stderr
    assert "set topology.history.enabled=false" in result.stderr
