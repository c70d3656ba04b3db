"""Forwarded anomalies (rootward/forwarded.py): what one request of ``PER_REQUEST`` (1,000) anomalies costs the
replica that sends it (build and serialize the OTLP logs request, each with a 30-value series window) and the
aggregator that takes it (decode the logs request, check and parse every record, qualify template ids), up to the
incidents' sink (``Incidents.observe``, whose cost for a storm of anomalies is incidents_bench.py's). Best of 5.

    .venv/bin/python bench/forwarded_bench.py
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from run import merge

from rootward.clock import ManualClock
from rootward.detector.detector import Anomaly
from rootward.forwarded import PER_REQUEST, ReplicaAnomalies, anomalies_request
from rootward.receiver import LogDecoder

NOW = 1_000_000.0


def anomalies() -> tuple[list[Anomaly], dict[tuple[str, str], tuple[float, ...]]]:
    found = [
        Anomaly(
            f"pod:shop/svc{i % 100}-{i}",
            "k8s.pod.cpu.usage" if i % 2 else "log_template:17",
            0.9,
            0.2,
            8.5,
            NOW - 10,
            NOW,
        )
        for i in range(PER_REQUEST)
    ]
    windows = {(a.entity, a.signal): tuple(0.2 + k / 1000 for k in range(30)) for a in found}
    return found, windows


def best_ms(run: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def main() -> None:
    found, windows = anomalies()
    service_of = {a.entity: f"service:shop/svc{i % 100}" for i, a in enumerate(found)}
    data = anomalies_request(found, "rootward-1", service_of, windows).SerializeToString()
    taken: list[int] = []
    consumer = ReplicaAnomalies(lambda t, a: taken.append(len(a)), "rootward-0", ManualClock(NOW))

    def receive() -> None:
        consumer._minute = -1  # a fresh minute's budget each round
        consumer.consume_logs(LogDecoder().decode(data).batch)

    results = {
        "forwarded_send_ms_1k": round(
            best_ms(lambda: anomalies_request(found, "rootward-1", service_of, windows).SerializeToString()), 1
        ),
        "forwarded_receive_ms_1k": round(best_ms(receive), 1),
        "forwarded_request_kib_1k": round(len(data) / 1024, 1),
    }
    assert taken[-1:] == [PER_REQUEST], taken
    print(json.dumps(results, indent=1))
    merge(Path(__file__).with_name("results.json"), results)


if __name__ == "__main__":
    main()
