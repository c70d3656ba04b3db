"""Histogram quantile math against known values and against numpy on samples: explicit bounds as Prometheus'
histogram_quantile reads them, exponential histograms through their base 2 ** (2 ** -scale) boundaries."""

from __future__ import annotations

import numpy as np
import pytest

from rootward.detector.histograms import Exponential
from rootward.detector.quantiles import (
    downscale,
    explicit_layout,
    exponential_counts,
    exponential_layout,
    interpolate,
)


def explicit(bounds: list[float], counts: list[float], qs: tuple[float, ...]) -> list[float]:
    lower, upper = explicit_layout(np.array(bounds))
    return interpolate(lower, upper, np.array([counts]), qs)[0].tolist()


@pytest.mark.parametrize(
    ("bounds", "counts", "q", "expected"),
    [
        pytest.param([1, 2, 4], [0, 10, 0, 0], 0.5, 1.5, id="middle-of-the-bucket-holding-the-rank"),
        pytest.param([1, 2, 4], [0, 10, 10, 0], 0.75, 3.0, id="interpolated-between-bounds"),
        pytest.param([1, 2, 4], [10, 0, 0, 0], 0.5, 0.5, id="first-bucket-starts-at-zero"),
        pytest.param([1, 2, 4], [0, 0, 0, 10], 0.99, 4.0, id="overflow-bucket-answers-the-highest-bound"),
        pytest.param([-1, 0, 1], [10, 0, 0, 0], 0.5, -1.0, id="non-positive-first-bucket-is-its-bound"),
    ],
)
def test_explicit_bucket_quantiles_follow_prometheus_histogram_quantile(
    bounds: list[float], counts: list[float], q: float, expected: float
) -> None:
    assert explicit(bounds, counts, (q,)) == [pytest.approx(expected)]


def test_an_empty_histogram_has_no_quantiles() -> None:
    assert np.isnan(explicit([1, 2], [0, 0, 0], (0.5,))).all()


def test_explicit_quantiles_of_samples_are_within_a_bucket_of_numpy() -> None:
    rng = np.random.default_rng(11)
    samples = rng.lognormal(mean=-3.0, sigma=0.6, size=20_000)  # latencies around 50 ms
    bounds = np.geomspace(1e-3, 10, 81)  # 20 buckets a decade: ~12 % wide
    counts = np.bincount(np.searchsorted(bounds, samples, side="left"), minlength=len(bounds) + 1)
    got = explicit(bounds.tolist(), counts.tolist(), (0.5, 0.95, 0.99))
    for value, q in zip(got, (0.5, 0.95, 0.99), strict=True):
        assert value == pytest.approx(np.quantile(samples, q), rel=0.03)


def test_quantiles_are_vectorised_over_rows_of_one_layout() -> None:
    lower, upper = explicit_layout(np.array([1.0, 2.0, 4.0]))
    got = interpolate(lower, upper, np.array([[0, 10, 0, 0], [0, 0, 10, 0], [0, 0, 0, 0]]), (0.5,))
    assert got[:2, 0].tolist() == [1.5, 3.0]
    assert np.isnan(got[2, 0])


def test_exponential_bucket_boundaries_are_powers_of_the_base() -> None:
    lower, upper = exponential_layout(scale=0, positive_offset=0, positive_len=3, negative_offset=1, negative_len=1)
    # negative bucket 1: [-4, -2); zero; positive buckets 0, 1, 2: (1, 2], (2, 4], (4, 8]
    assert lower.tolist() == [-4.0, 0.0, 1.0, 2.0, 4.0]
    assert upper.tolist() == [-2.0, 0.0, 2.0, 4.0, 8.0]
    lower, upper = exponential_layout(scale=1, positive_offset=2, positive_len=1, negative_offset=0, negative_len=0)
    assert (lower[1], upper[1]) == (pytest.approx(2.0), pytest.approx(2 * 2**0.5))  # base sqrt(2), index 2


def exponential_of(samples: np.ndarray, scale: int) -> Exponential:
    """Samples into an exponential histogram as the SDK buckets them: value v in bucket ceil(log2|v| * 2**scale) - 1."""

    def run(values: np.ndarray) -> tuple[int, np.ndarray]:
        if not len(values):
            return 0, np.zeros(0)
        index = (np.ceil(np.log2(values) * 2.0**scale) - 1).astype(np.int64)
        first = int(index.min())
        return first, np.bincount(index - first).astype(np.float64)

    zero = float((samples == 0).sum())
    return Exponential(scale, zero, run(samples[samples > 0]), run(-samples[samples < 0]))


def test_exponential_quantiles_of_samples_with_negatives_and_zeros_are_close_to_numpy() -> None:
    rng = np.random.default_rng(5)
    samples = np.concatenate([rng.lognormal(0, 1, 8000), -rng.lognormal(0, 1, 1500), np.zeros(500)])
    h = exponential_of(samples, scale=4)  # base 2 ** (1/16): buckets ~4.4 % wide
    for q, value in zip((0.5, 0.95, 0.99), h.quantiles().tolist(), strict=True):
        assert value == pytest.approx(np.quantile(samples, q), rel=0.05)
    low = exponential_of(samples, scale=4)
    lower, upper = exponential_layout(4, low.positive[0], len(low.positive[1]), low.negative[0], len(low.negative[1]))
    counts = exponential_counts(low.zero, low.positive[1], low.negative[1])
    p5 = interpolate(lower, upper, counts[None, :], (0.05,))[0, 0]
    assert p5 == pytest.approx(np.quantile(samples, 0.05), rel=0.05)  # a rank among the negative buckets
    assert interpolate(lower, upper, counts[None, :], (0.16,))[0, 0] == 0.0  # a rank in the zero bucket


def test_downscaling_merges_adjacent_buckets_and_keeps_the_total() -> None:
    offset, counts = downscale(3, np.array([1.0, 2.0, 3.0, 4.0, 5.0]), shift=1)  # indexes 3..7 -> 1..3
    assert offset == 1
    assert counts.tolist() == [1.0, 5.0, 9.0]
    offset, counts = downscale(-3, np.array([1.0, 1.0, 1.0]), shift=2)  # -3, -2, -1 -> -1 (floor division)
    assert (offset, counts.tolist()) == (-1, [3.0])


def test_exponential_histograms_at_two_scales_subtract_at_the_lower_one() -> None:
    rng = np.random.default_rng(2)
    before = rng.lognormal(0, 1, 1000)
    after = np.concatenate([before, rng.lognormal(0, 1, 500)])
    change = exponential_of(after, scale=2).combine(exponential_of(before, scale=3), -1.0)
    assert change.scale == 2
    assert change.total() == 500
    assert not change.negative_anywhere()
