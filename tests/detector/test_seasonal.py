"""Daily seasonality: a jump that happens every day at the same hour pages on its first day only; the same jump at
an hour it never happened is still reported; with seasonality off it pages every day."""

from __future__ import annotations

import numpy as np
import pytest

from rootward.clock import ManualClock
from rootward.detector.detector import Anomaly, Detector, DetectorSettings
from rootward.detector.seasonal import Seasonal

DAY, WINDOW = 86_400, 60.0


def days_of_a_nightly_batch(days: int, seasonality: bool, surprise_day: int | None = None) -> list[Anomaly]:
    """cpu of one pod at ~10, ~50 from 02:00 to 02:30 every day (and, on ``surprise_day``, at 14:00 too)."""
    found: list[Anomaly] = []
    settings = DetectorSettings(window_s=WINDOW, warmup=10, seasonality=seasonality)
    detector = Detector(lambda t, a: found.extend(a), settings, ManualClock(0.0))
    detector.table.get("pod:shop/batch-1", "k8s.pod.cpu.usage")
    ids = np.zeros(1, np.int64)
    value = {"v": np.zeros(1)}
    detector.window.values = lambda: (ids, value["v"])  # type: ignore[method-assign]
    rng = np.random.default_rng(5)
    for n in range(int(days * DAY / WINDOW)):
        t = n * WINDOW
        hour = (t % DAY) / 3600
        busy = 2.0 <= hour < 2.5 or (surprise_day == int(t // DAY) and 14.0 <= hour < 14.5)
        value["v"] = np.array([(50.0 if busy else 10.0) + rng.normal(0, 0.5)])
        detector._close(n)
    return found


def first_hours(found: list[Anomaly]) -> list[tuple[int, int]]:
    """(day, hour) of each episode's first anomaly."""
    return sorted({(int(a.start // DAY), int((a.start % DAY) // 3600)) for a in found})


def test_a_nightly_batch_is_news_on_its_first_night_only() -> None:
    assert first_hours(days_of_a_nightly_batch(3, seasonality=True)) == [(0, 2)]


def test_without_seasonality_it_is_news_every_night() -> None:
    assert first_hours(days_of_a_nightly_batch(3, seasonality=False)) == [(0, 2), (1, 2), (2, 2)]


def test_the_same_jump_at_an_hour_it_never_happened_is_still_news() -> None:
    assert first_hours(days_of_a_nightly_batch(3, seasonality=True, surprise_day=2)) == [(0, 2), (2, 14)]


def test_only_yesterday_explains_a_value() -> None:
    seasonal = Seasonal(period_s=100.0, slots=4)
    seasonal.add_series(1)
    ids = np.zeros(1, np.int64)
    for t in (0.0, 10.0, 30.0):  # slot 0 of period 0 has mean 5, then slot 1 begins
        seasonal.observe(ids, np.array([5.0]), t)
    assert np.isnan(seasonal.expected(ids, 10.0))[0]  # the same period: no yesterday yet
    assert seasonal.expected(ids, 110.0)[0] == pytest.approx(5.0)  # the next period's slot 0
    assert np.isnan(seasonal.expected(ids, 210.0))[0]  # two periods on: stale
