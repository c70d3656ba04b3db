"""The per-entity IsolationForest: sub-threshold deviations that together are new are reported, the entity's usual
mixes are not, the fit happens off the detector's thread, and the app turns it on by config only."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from rootward.app import App
from rootward.clock import ManualClock
from rootward.config import LOCAL_PORTS, NOTHING_ON_DISK, load_config
from rootward.detector.detector import Anomaly, Detector, DetectorSettings
from rootward.detector.multivariate import FEATURES, Multivariate, MultivariateSettings, feature_of
from rootward.detector.telemetry import MULTIVARIATE_FAILED, DetectorMetrics

SIGNALS = ("p95", "error_ratio", "nezha.pod.cpu.usage", "client_p95")


@pytest.mark.parametrize(
    ("signal", "feature"),
    [
        pytest.param("p99", "latency", id="span-quantile"),
        pytest.param("net_in", "network", id="network-gap"),
        pytest.param("client_net", "client", id="client-side"),
        pytest.param("log_errors", "errors", id="error-logs"),
        pytest.param("k8s.pod.memory.working_set", "resource", id="memory"),
        pytest.param("rate", "traffic", id="traffic"),
        pytest.param("in:service:shop/error-pages.latency", "latency", id="edge-read-by-its-last-part"),
        pytest.param("in:service:shop/frontend.rate", "traffic", id="edge-rate"),
    ],
)
def test_signals_fall_in_their_family(signal: str, feature: str) -> None:
    assert FEATURES[feature_of(signal)][0] == feature


def test_a_signal_outside_every_family_is_left_out() -> None:
    assert feature_of("nezha.pod.syscall.write") == -1


def detector(background: bool) -> tuple[Detector, list[Anomaly], dict[str, np.ndarray], ManualClock]:
    """40 entities with four series each; ``values["v"]`` is what each window closes with."""
    found: list[Anomaly] = []
    model = Multivariate(MultivariateSettings(refit_windows=20, min_rows=400, background=background))
    d = Detector(lambda t, a: found.extend(a), DetectorSettings(history=60, warmup=10), ManualClock(0.0), model)
    for e in range(40):
        for signal in SIGNALS:
            d.table.get(f"service:shop/s{e}", signal)
    ids = np.arange(160)
    values = {"v": np.ones(160)}
    d.window.values = lambda: (ids, values["v"])  # type: ignore[method-assign]
    return d, found, values, ManualClock(0.0)


def test_several_deviations_under_the_threshold_together_are_a_multivariate_anomaly() -> None:
    d, found, values, _ = detector(background=False)
    rng = np.random.default_rng(3)
    level = np.tile([1.0, 0.2, 100.0, 1.0], 40) * np.repeat(rng.uniform(0.8, 1.2, 40), 4)
    for n in range(100):  # a usual life: each series wobbles on its own
        values["v"] = level * (1 + rng.normal(0, 0.02, 160))
        d._close(n)
    assert d.multivariate is not None
    assert d.multivariate.fits >= 1
    assert not [a for a in found if a.signal == "multivariate"]
    v = level * (1 + rng.normal(0, 0.02, 160))
    v[0:4] = level[0:4] * [3.0, 2.0, 3.0, 3.0]  # s0: all four families ~4 robust z up, none past the z of 5
    values["v"] = v
    found.clear()
    d._close(100)
    assert {a.entity for a in found if a.signal != "multivariate"} == set()
    (joint,) = [a for a in found if a.signal == "multivariate"]
    assert joint.entity == "service:shop/s0"
    assert joint.score >= 3.0


def test_only_rows_with_a_family_at_min_z_are_scored_and_they_score_as_among_all() -> None:
    """The per-tick cost is the rows that could be reported: a row whose every family is under ``min_z`` is never
    reported, so it is not scored; the others' scores do not depend on what else is scored."""
    model = Multivariate(MultivariateSettings(min_rows=200, refit_windows=1, background=False, min_z=3.0))
    model.add_series([(f"e{i}", s) for i in range(300) for s in ("p95", "rate")])
    rng = np.random.default_rng(5)
    ids = np.arange(600)
    model.observe(ids, np.abs(rng.normal(0, 1, 600)))  # the fit: the usual rows
    z = np.abs(rng.normal(0, 1, 600))
    z[:40] = rng.uniform(3.0, 9.0, 40)  # e0..e19 with a family at 3 or more
    scored: list[int] = []
    forest = model.model
    model.model = type(
        "Counting", (), {"score_samples": lambda _, x: scored.append(len(x)) or forest.score_samples(x)}
    )()
    found = model.observe(ids, z)
    vectors = np.zeros((300, len(FEATURES)), np.float32)
    vectors[:, [feature_of("p95"), feature_of("rate")]] = z.reshape(300, 2)
    every = forest.score_samples(vectors)
    expected = {f"e{i}" for i in np.flatnonzero((every < model.threshold) & (vectors.max(axis=1) >= 3.0)).tolist()}
    assert scored == [int((vectors.max(axis=1) >= 3.0).sum())]
    assert {entity for entity, _, _ in found} == expected
    assert expected  # the strong rows are unusual to a forest fitted on quiet ones


def test_the_model_is_fitted_on_a_thread_of_its_own() -> None:
    d, _, values, _ = detector(background=True)
    fitted_on: list[str] = []
    assert d.multivariate is not None
    refit = d.multivariate._refit

    def spy(training: np.ndarray) -> None:
        fitted_on.append(threading.current_thread().name)
        refit(training)

    d.multivariate._refit = spy  # type: ignore[method-assign]
    for n in range(40):
        values["v"] = np.ones(160) + 0.01 * (n % 3)
        d._close(n)
    assert d.multivariate.wait(30)
    assert fitted_on
    assert set(fitted_on) == {"rootward-multivariate"}
    assert d.multivariate.model is not None


@pytest.mark.parametrize("enabled", [False, True], ids=["off-by-default", "on-by-config"])
def test_the_app_has_the_model_only_when_configured(enabled: bool) -> None:
    sets = [*LOCAL_PORTS, *NOTHING_ON_DISK, *([f"detection.multivariate.enabled={enabled}"] if enabled else [])]
    app = App(load_config(environ={}, overrides=sets))
    assert (app.detector.multivariate is not None) is enabled


def test_a_fit_that_fails_keeps_the_last_model_and_is_counted_on_metrics() -> None:
    model = Multivariate(MultivariateSettings(background=False))
    detector = Detector(lambda t, a: None, DetectorSettings(), ManualClock(0.0), model)
    model._refit(np.zeros((0, len(FEATURES)), np.float32))  # IsolationForest refuses an empty training set
    assert model.failures == 1
    assert model.model is None
    family = next(DetectorMetrics(detector).collect())
    assert {s.labels["reason"]: s.value for s in family.samples}[MULTIVARIATE_FAILED] == 1
