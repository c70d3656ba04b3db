"""RED per call edge: a batch's pairs (caller, callee, seconds, error) reduced per edge with bincount into request
and error counts, latency sums and histograms over the servicegraph connector's buckets; and, for calls whose client
and server spans both arrived, the network gap (client duration minus server duration: time on the wire, in the
caller's client stack and in the callee's queues), which is where a network delay shows and no span's own latency
does."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import numpy as np

from rootward.model import CALL_LATENCY_BUCKETS_S

#: Latency histogram bounds in seconds: the servicegraph connector's defaults, so its Grafana panels apply.
LATENCY_BUCKETS_S = CALL_LATENCY_BUCKETS_S
_BOUNDS = np.array(LATENCY_BUCKETS_S)
_NO_GAPS = np.zeros(0)  # an edge without paired calls (shared, read-only)
_NO_GAPS.flags.writeable = False


@dataclass
class EdgeDelta:
    """One edge's RED from one batch (or, in benchmarks, built one call at a time with :meth:`add`)."""

    requests: int = 0
    errors: int = 0
    latency_sum: float = 0.0
    buckets: np.ndarray = field(default_factory=lambda: np.zeros(len(LATENCY_BUCKETS_S) + 1, np.int64))
    gap_sum: float = 0.0  # seconds of client-minus-server duration over the paired calls
    gaps: np.ndarray = field(default_factory=lambda: _NO_GAPS)  # each paired call's gap, in seconds

    @property
    def gap_count(self) -> int:
        """Calls whose client and server spans were both seen."""
        return len(self.gaps)

    def add(self, seconds: float, error: bool) -> None:
        self.requests += 1
        self.errors += error
        self.latency_sum += seconds
        self.buckets[bisect.bisect_left(LATENCY_BUCKETS_S, seconds)] += 1


class Calls:
    """One batch's calls as arrays (caller and callee name indexes, seconds, error), reduced per edge at the end."""

    def __init__(self) -> None:
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    def add(
        self,
        src: np.ndarray,
        dst: np.ndarray,
        seconds: np.ndarray,
        error: np.ndarray,
        client_seconds: np.ndarray | None = None,
    ) -> None:
        """Calls: ``seconds`` is the server side's duration; ``client_seconds`` the caller's, when its span paired."""
        if len(src):
            client = np.full(len(src), np.nan) if client_seconds is None else client_seconds
            self.parts.append((src, dst, seconds, error, client))

    def reduce(self, names: list[str]) -> dict[tuple[str, str], EdgeDelta]:
        """RED per (caller, callee): counts, error counts, latency sums and histograms, with bincount."""
        if not self.parts:
            return {}
        src, dst, seconds, error, client = (np.concatenate(column) for column in zip(*self.parts, strict=True))
        keep = (src != dst) & (src >= 0) & (dst >= 0)  # no self-calls; -1: a name compacted away meanwhile
        src, dst, seconds, error, client = src[keep], dst[keep], seconds[keep], error[keep], client[keep]
        edges, edge = np.unique((src.astype(np.int64) << 32) | dst.astype(np.int64), return_inverse=True)
        k, width = len(edges), len(LATENCY_BUCKETS_S) + 1
        requests = np.bincount(edge, minlength=k)
        errors = np.bincount(edge, weights=error, minlength=k)
        sums = np.bincount(edge, weights=seconds, minlength=k)
        bucket = np.searchsorted(_BOUNDS, seconds, side="left")
        histograms = np.bincount(edge * width + bucket, minlength=k * width).reshape(k, width)
        paired = np.isfinite(client)
        gap = np.maximum(client[paired] - seconds[paired], 0.0)
        gaps = np.bincount(edge[paired], weights=gap, minlength=k)
        gap_counts = np.bincount(edge[paired], minlength=k)
        by_edge = gap[np.argsort(edge[paired], kind="stable")]
        ends = np.cumsum(gap_counts).tolist()
        each = [by_edge[end - n : end] if n else _NO_GAPS for end, n in zip(ends, gap_counts.tolist(), strict=True)]
        return {
            (names[code >> 32], names[code & 0xFFFFFFFF]): EdgeDelta(r, int(e), s, h, g, c)
            for code, r, e, s, h, g, c in zip(
                edges.tolist(),
                requests.tolist(),
                errors.tolist(),
                sums.tolist(),
                histograms,
                gaps.tolist(),
                each,
                strict=True,
            )
        }
