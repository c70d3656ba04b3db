"""Detector figure: one window closed over 10,000 series.

- ``detector_tick_ms_10k_series``: ``Detector._close`` time (judge every series that has a value against its
  baseline: median, MAD and tail quantiles over its history, confirmation, anomalies to the sink) with 10,000 series
  each holding a full history (the default 240 values), values drawn at random, a few of them out of line; the
  median of ``rounds`` windows after a warm-up. The window's own folding of batches is not in it (that is per
  batch, see r_graph and the soak).
- ``detector_tick_ms_10k_series_multivariate``: the same with the opt-in IsolationForest scoring the window's 2,500
  entities (fitted once in the warm-up; refits run on their own thread and are not in the tick).
- ``multivariate_import_mib``: resident memory scikit-learn's IsolationForest adds to a process that has numpy
  (a fresh interpreter, VmRSS before and after the import).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np

from rootward.clock import ManualClock
from rootward.detector.detector import Anomaly, Detector, DetectorSettings
from rootward.detector.multivariate import Multivariate, MultivariateSettings

SERIES = 10_000


@dataclass(frozen=True)
class DetectorFigures:
    tick_ms: float
    anomalies_per_tick: float


def run(rounds: int = 20, series: int = SERIES, multivariate: bool = False) -> DetectorFigures:
    rng = np.random.default_rng(7)
    found: list[int] = []

    def sink(now: float, anomalies: list[Anomaly]) -> None:
        found.append(len(anomalies))

    settings = DetectorSettings()
    model = None
    if multivariate:  # one fit at the end of the warm-up, on this thread
        model = Multivariate(MultivariateSettings(refit_windows=settings.history, background=False))
    detector = Detector(sink, settings, ManualClock(0.0), model)
    signals = ("p95", "rate", "nezha.pod.cpu.usage", "error_ratio")
    for i in range(series):
        detector.table.get(f"service:bench/s{i // 4}", signals[i % 4])
    ids = np.arange(series)
    level = rng.uniform(0.01, 10.0, series)
    values = {"v": np.zeros(series)}
    detector.window.values = lambda: (ids, values["v"])  # type: ignore[method-assign]
    history = detector.settings.history
    times = []
    for n in range(history + rounds):
        v = level * (1 + rng.normal(0, 0.05, series))
        if n >= history:
            v[rng.integers(0, series, 10)] *= 20
        values["v"] = v
        started = time.perf_counter()
        detector._close(n)
        if n >= history:
            times.append((time.perf_counter() - started) * 1000)
    return DetectorFigures(statistics.median(times), statistics.mean(found[history:]))


def import_mib() -> float:
    """Peak RSS (MiB) scikit-learn's IsolationForest adds to a fresh interpreter that has numpy."""
    probe = (  # VmRSS, not ru_maxrss: a child inherits its parent's peak through fork and exec
        "import numpy, re; rss = lambda: int(re.search(r'VmRSS:\\s+(\\d+)', open('/proc/self/status').read())[1]); "
        "a = rss(); import sklearn.ensemble; print((rss() - a) / 1024)"
    )
    return float(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout)


if __name__ == "__main__":
    figures = run()
    print(f"detector_tick_ms_10k_series {figures.tick_ms:.2f} ({figures.anomalies_per_tick:.1f} anomalies a tick)")
    joint = run(multivariate=True)
    print(f"detector_tick_ms_10k_series_multivariate {joint.tick_ms:.2f}")
    print(f"multivariate_import_mib {import_mib():.0f}")
