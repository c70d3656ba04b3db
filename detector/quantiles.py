"""Quantiles of OTLP histograms: bucket layouts and interpolation, in numpy, for the detector's histogram series.

An OTLP histogram carries counts per bucket, not values, so a quantile is an estimate within the bucket that holds
its rank. We estimate it the way Prometheus' ``histogram_quantile`` does for classic histograms, which is what users
compare our numbers with: linear interpolation between the bucket's lower and upper bound, the first bucket starting
at 0 when its upper bound is positive, and a rank in the open-ended last bucket answered with the highest finite
bound. Exponential histograms are turned into the same (lower, upper, count) form from their bucket boundaries,
``base ** index`` with ``base = 2 ** (2 ** -scale)``: negative buckets (mirrored), the zero bucket, positive buckets.

Everything is one layout for many rows (explicit bounds shared by the streams of a metric), vectorised over rows.
"""

from __future__ import annotations

import numpy as np

#: The quantiles a histogram series gives each window, and their signal suffixes.
QUANTILES = (0.5, 0.95, 0.99)
SUFFIXES = ("p50", "p95", "p99")


def explicit_layout(bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) of each bucket of an explicit-bounds histogram (``len(bounds) + 1`` buckets).

    Bucket ``i`` holds values in ``(bounds[i-1], bounds[i]]``. As in Prometheus, the first bucket starts at 0 when its
    bound is positive (else it is the point ``bounds[0]``), and the last, unbounded one is the point ``bounds[-1]``:
    a quantile that falls there is answered with the highest finite bound.
    """
    bounds = np.asarray(bounds, np.float64)
    if not len(bounds):  # a single (-inf, +inf) bucket: nothing to interpolate within
        return np.full(1, np.nan), np.full(1, np.nan)
    first = 0.0 if bounds[0] > 0 else bounds[0]
    lower = np.concatenate([[first], bounds])
    upper = np.concatenate([bounds, bounds[-1:]])
    return lower, upper


def exponential_layout(
    scale: int, positive_offset: int, positive_len: int, negative_offset: int, negative_len: int
) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) of the buckets of an exponential histogram, in ascending value order: the negative buckets
    (largest magnitude first), the zero bucket, the positive buckets; counts must be laid out the same way (see
    :func:`exponential_counts`).

    Positive bucket ``index`` holds ``(base ** index, base ** (index + 1)]`` with ``base = 2 ** (2 ** -scale)``;
    negative bucket ``index`` holds the same magnitudes, negated. The zero bucket is read as the point 0.
    """
    base_log2 = 2.0 ** -float(scale)
    pos = np.arange(positive_offset, positive_offset + positive_len, dtype=np.float64)
    neg = np.arange(negative_offset, negative_offset + negative_len, dtype=np.float64)[::-1]
    lower = np.concatenate([-np.exp2((neg + 1) * base_log2), [0.0], np.exp2(pos * base_log2)])
    upper = np.concatenate([-np.exp2(neg * base_log2), [0.0], np.exp2((pos + 1) * base_log2)])
    return lower, upper


def exponential_counts(zero: float, positive: np.ndarray, negative: np.ndarray) -> np.ndarray:
    """Counts in the order of :func:`exponential_layout`."""
    return np.concatenate([np.asarray(negative, np.float64)[::-1], [float(zero)], np.asarray(positive, np.float64)])


def interpolate(
    lower: np.ndarray, upper: np.ndarray, counts: np.ndarray, qs: tuple[float, ...] = QUANTILES
) -> np.ndarray:
    """Quantiles ``qs`` of each row of ``counts`` (rows x buckets, buckets laid out by ``lower`` / ``upper`` in
    ascending order), by linear interpolation within the bucket holding each rank (``q * total``). Returns rows x
    len(qs); NaN for a row without observations."""
    counts = np.atleast_2d(np.asarray(counts, np.float64))
    cum = np.cumsum(counts, axis=1)
    total = cum[:, -1]
    out = np.full((len(counts), len(qs)), np.nan)
    has = total > 0
    if not has.any():
        return out
    cum, total, counts = cum[has], total[has], counts[has]
    rows = np.arange(len(cum))
    for j, q in enumerate(qs):
        rank = q * total
        b = np.minimum((cum < rank[:, None]).sum(axis=1), counts.shape[1] - 1)  # first bucket with cum >= rank
        below = np.where(b > 0, cum[rows, np.maximum(b - 1, 0)], 0.0)
        inside = counts[rows, b]
        fraction = np.where(inside > 0, (rank - below) / np.where(inside > 0, inside, 1.0), 0.0)
        out[has, j] = lower[b] + (upper[b] - lower[b]) * np.clip(fraction, 0.0, 1.0)
    return out


def downscale(offset: int, counts: np.ndarray, shift: int) -> tuple[int, np.ndarray]:
    """An exponential histogram's bucket counts at ``shift`` scales lower (each bucket merged with its 2 ** shift - 1
    neighbours): index ``i`` becomes ``i >> shift``. Returns (new offset, new counts)."""
    counts = np.asarray(counts, np.float64)
    if shift <= 0 or not len(counts):
        return offset, counts
    index = (np.arange(offset, offset + len(counts)) >> shift).astype(np.int64)
    first = int(index[0])
    return first, np.bincount(index - first, weights=counts)


def align(a: tuple[int, np.ndarray], b: tuple[int, np.ndarray]) -> tuple[int, np.ndarray, np.ndarray]:
    """Two (offset, counts) bucket runs at the same scale on a common index range: (offset, a's counts, b's)."""
    (oa, ca), (ob, cb) = a, b
    if not len(ca):
        oa = ob
    if not len(cb):
        ob = oa
    lo = min(oa, ob)
    hi = max(oa + len(ca), ob + len(cb))
    out_a = np.zeros(hi - lo)
    out_b = np.zeros(hi - lo)
    out_a[oa - lo : oa - lo + len(ca)] = ca
    out_b[ob - lo : ob - lo + len(cb)] = cb
    return lo, out_a, out_b
