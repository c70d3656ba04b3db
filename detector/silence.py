"""Traffic that stopped: a service's request rate with no value in a window reads as 0 when it had one in every
window for a while and the other services' rates go on.

A window's series exist only for what was sent in it, so a service that stops serving (crashed, cut off, no longer
routed to) leaves no value at all and its rate could never drop. Here a service's ``rate`` (its server spans a second;
a window without server spans gives none) that had a value in each of the last ``after`` windows and has none now is
given 0 for up to ``keep`` windows, and judged like any other value: a stop is an anomaly at z 5 when the steady rate
was 2.5 requests a second or more (the rate rule's minimum change, 0.5, is also its scale's floor, baseline.py). A 0
opens an incident alone (incidents.py). Not when most steady rates went silent at once, or nothing came at all: then
the telemetry stopped (a Collector or the network to it), not the services, and the window is counted in
``telemetry_gaps``. That rule counts services, not senders: a hub whose stop silences most services downstream of it
reads as a gap too (its callers' failing calls still show it, as ``in:<caller>.error_ratio``). Edges' rates are not
filled: a caller that stops calling one callee is the request mix as often as a fault.
"""

from __future__ import annotations

import numpy as np


def is_rate(signal: str) -> bool:
    """A service's request rate: the series a stop is read into."""
    return signal == "rate"


class Silence:
    """Per series: whether it is a rate, how many windows in a row it had a value, how many it was read as 0."""

    def __init__(self, after: int, keep: int = 30) -> None:
        self.after, self.keep = after, keep
        self.rate = np.zeros(0, bool)  # per series: a request rate
        self.steady = np.zeros(0, np.int64)  # windows in a row with a value (kept while it reads as silent)
        self.silent = np.zeros(0, np.int64)  # windows in a row read as 0
        self.telemetry_gaps = 0

    def add_series(self, signals: list[str]) -> None:
        self.rate = np.concatenate([self.rate, np.array([is_rate(s) for s in signals], bool)])
        self.steady = np.concatenate([self.steady, np.zeros(len(signals), np.int64)])
        self.silent = np.concatenate([self.silent, np.zeros(len(signals), np.int64)])

    def reset(self, ids: np.ndarray, signals: list[str]) -> None:
        """Series ``ids`` start over as these signals."""
        self.rate[ids] = [is_rate(s) for s in signals]
        self.steady[ids] = 0
        self.silent[ids] = 0

    def fill(self, ids: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The window's (series, values) with a 0 for each steady rate that has no value; bookkeeping advanced."""
        if self.after <= 0 or not len(self.rate):
            return ids, values
        present = np.zeros(len(self.rate), bool)
        present[ids] = True
        steady = self.rate & (self.steady >= self.after)
        quiet = steady & ~present & (self.silent < self.keep)
        if quiet.any() and quiet.sum() * 2 > steady.sum():  # most of them at once: the telemetry, not the services
            self.telemetry_gaps += 1
            quiet[:] = False
        self.silent = np.where(quiet, self.silent + 1, 0)
        self.steady = np.where(present, self.steady + 1, np.where(quiet, self.steady, 0))
        zeros = np.flatnonzero(quiet)
        if not len(zeros):
            return ids, values
        return np.concatenate([ids, zeros]), np.concatenate([values, np.zeros(len(zeros))])
