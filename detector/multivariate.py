"""A multivariate view of each entity: an IsolationForest (scikit-learn) over per-entity vectors of how far each
family of its signals is out of line, so several deviations that are each under the per-series threshold, together
unlike anything the entity did before, are an anomaly too (``multivariate`` on the entity).

The vector of an entity in a window has one number per family in :data:`FEATURES`: the largest robust z, in the
direction that means trouble, of its series of that family (0 when none has a value). Using z-scores makes entities
comparable, so one model serves them all, and the per-tick cost is one ``score_samples`` call over the window's
entities with a family at ``min_z`` or more (no other can be reported), whatever the number of spans.

The model is fitted off the hot path: every ``refit_windows`` windows a background thread fits a new forest on the
rows kept so far (a ring of ``history_rows``) and swaps it in with its threshold (the ``quantile`` of the training
rows' scores). Until the first fit nothing is scored. scikit-learn is imported by the first fit only: it costs ~110 MB
of resident memory (bench/README.md), which is why the model is opt-in (``detection.multivariate.enabled``).
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from rootward.detector.baseline import edge_of

logger = logging.getLogger(__name__)

#: Families of signals, each a column of an entity's vector, and the words that put a signal in it (first match).
FEATURES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("network", re.compile(r"^net_in$")),
    ("client", re.compile(r"client")),
    ("errors", re.compile(r"error|success|exception|log_warn")),
    ("resource", re.compile(r"cpu|memory|restart|throttl|filesystem")),
    ("latency", re.compile(r"^p\d+$|latency|duration")),
    ("traffic", re.compile(r"^rate$|workload")),
)


def feature_of(signal: str) -> int:
    """The column of a signal in an entity's vector, or -1 for signals outside the model. An edge's signal
    (``in:<caller>.latency``) is read by its last part: the caller's name is the sender's."""
    if edge := edge_of(signal):
        signal = edge[1]
    return next((i for i, (_, pattern) in enumerate(FEATURES) if pattern.search(signal)), -1)


@dataclass(frozen=True, slots=True)
class MultivariateSettings:
    history_rows: int = 20_000
    refit_windows: int = 30
    min_rows: int = 500
    n_estimators: int = 50
    quantile: float = 0.001
    min_z: float = 3.0
    background: bool = True
    seed: int = 0


class Multivariate:
    """Per-entity vectors in, ``(entity, row score, largest z)`` of the unusual ones out. Thread-safe for one caller
    (the detector, under its lock) and the refit thread."""

    def __init__(self, settings: MultivariateSettings | None = None) -> None:
        self.settings = s = settings or MultivariateSettings()
        self.entities: dict[str, int] = {}
        self.names: list[str] = []
        self.series_entity = np.zeros(0, np.int64)
        self.series_feature = np.zeros(0, np.int64)
        self.rows = np.zeros((s.history_rows, len(FEATURES)), np.float32)
        self.written = 0
        self.windows = 0
        self.fits = 0
        self.failures = 0  # fits that raised (on /metrics: rootward_detector_dropped_total)
        self.model: Any = None
        self.threshold = -np.inf
        self._refitting = threading.Event()
        self._lock = threading.Lock()

    def add_series(self, keys: list[tuple[str, str]]) -> None:
        """Series appended to the detector's table, in order."""
        entity = [self.entities.setdefault(e, len(self.entities)) for e, _ in keys]
        self.names.extend(list(self.entities)[len(self.names) :])
        self.series_entity = np.concatenate([self.series_entity, np.array(entity, np.int64)])
        self.series_feature = np.concatenate([self.series_feature, np.array([feature_of(s) for _, s in keys])])

    def reset(self, ids: np.ndarray, keys: list[tuple[str, str]]) -> None:
        """Series ``ids`` now belong to these keys (their indexes were given to new series)."""
        entity = [self.entities.setdefault(e, len(self.entities)) for e, _ in keys]
        self.names.extend(list(self.entities)[len(self.names) :])
        self.series_entity[ids] = entity
        self.series_feature[ids] = [feature_of(s) for _, s in keys]

    def observe(self, ids: np.ndarray, bad_z: np.ndarray) -> list[tuple[str, float, float]]:
        """One window: series ``ids`` with their z in the bad direction. Returns (entity, how far below the
        threshold its row scored, its largest z) for the rows the current model finds unusual."""
        column = self.series_feature[ids]
        keep = column >= 0
        entity = self.series_entity[ids[keep]]
        if not len(entity):
            return []
        present, row = np.unique(entity, return_inverse=True)
        vectors = np.zeros((len(present), len(FEATURES)), np.float32)
        np.maximum.at(vectors, (row, column[keep]), np.clip(np.nan_to_num(bad_z[keep]), 0.0, 50.0))
        found = self._score(present, vectors)
        self._keep(vectors)
        return found

    def _score(self, present: np.ndarray, vectors: np.ndarray) -> list[tuple[str, float, float]]:
        with self._lock:
            model, threshold = self.model, self.threshold
        if model is None:
            return []
        largest = vectors.max(axis=1)
        strong = np.flatnonzero(largest >= self.settings.min_z)  # no other row can be reported: none is scored
        if not len(strong):
            return []
        scores = model.score_samples(vectors[strong])
        return [
            (self.names[present[i]], float(threshold - score), float(largest[i]))
            for i, score in zip(strong.tolist(), scores.tolist(), strict=True)
            if score < threshold
        ]

    def _keep(self, vectors: np.ndarray) -> None:
        s = self.settings
        at = (self.written + np.arange(len(vectors))) % s.history_rows
        self.rows[at] = vectors
        self.written += len(vectors)
        self.windows += 1
        if self.windows % s.refit_windows or min(self.written, s.history_rows) < s.min_rows:
            return
        if self._refitting.is_set():
            return
        self._refitting.set()
        training = self.rows[: min(self.written, s.history_rows)].copy()
        if s.background:
            threading.Thread(target=self._refit, args=(training,), name="rootward-multivariate", daemon=True).start()
        else:
            self._refit(training)

    def _refit(self, training: np.ndarray) -> None:
        try:
            from sklearn.ensemble import IsolationForest  # ~110 MB: only once a model is wanted

            s = self.settings
            model = IsolationForest(n_estimators=s.n_estimators, max_samples=256, random_state=s.seed)
            model.fit(training)
            threshold = float(np.quantile(model.score_samples(training), s.quantile))
            with self._lock:
                self.model, self.threshold = model, threshold
                self.fits += 1
        except Exception:  # a failed fit keeps the last model; the next refit tries again
            self.failures += 1
            logger.exception("refitting the multivariate model failed")
        finally:
            self._refitting.clear()

    def wait(self, timeout_s: float = 30.0) -> bool:
        """Wait for a refit in flight (tests, benchmarks); whether none is left."""
        deadline = threading.Event()
        for _ in range(int(timeout_s * 100)):
            if not self._refitting.is_set():
                return True
            deadline.wait(0.01)
        return not self._refitting.is_set()
