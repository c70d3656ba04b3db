"""Warm start: the detector's baselines outlive a restart.

Every series' recent values (its ring of ``history`` windows, with which of them count for the baseline) are saved
to one file (``<storage.data_dir>/detector.npz``) every ``every_s`` and at shutdown, and read back at start: a series
seen again after the restart starts from its saved values instead of warming up from nothing (``warmup`` windows
blind, then a baseline of a few values). Saved by key (entity, signal), so nothing depends on the order series come
back in. What is not saved: the seasonal profiles, log templates and the log and span flows (they learn again), and
series' runs of anomalous values (a fault that outlives a restart is judged afresh).

A file from a different ``window_s``, older than ``max_age_s``, unreadable or of another shape is not used (logged):
a cold start, as before. The file is written whole to a temporary name and renamed, so a crash mid-write leaves the
previous one.
"""

from __future__ import annotations

import json
import logging
import os
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from rootward.detector.detector import Detector

logger = logging.getLogger(__name__)

#: A saved ring: its values oldest first, and which count for the baseline.
Ring = tuple[np.ndarray, np.ndarray]

_VERSION = 1


def snapshot(detector: Detector) -> tuple[list[tuple[str, str]], np.ndarray, np.ndarray, np.ndarray]:
    """Every series with values: its key, its ring oldest first (float32; NaN past its count), which values count,
    and how many it has (at most ``history``). Taken under the detector's lock."""
    with detector.held():
        b = detector.baselines
        keys = list(detector.table.keys[: len(b)])
        seen = b.seen.copy()
        values, kept = b.values.astype(np.float32), b.kept.copy()  # copies, half the bytes of the rings
    history = values.shape[1] if values.ndim == 2 else 0
    rows = np.flatnonzero((seen > 0) & np.array([k != ("", "") for k in keys], bool)) if keys else np.zeros(0, int)
    count = np.minimum(seen[rows], history)
    start = np.where(seen[rows] >= history, seen[rows] % max(history, 1), 0)
    order = (start[:, None] + np.arange(history)[None, :]) % max(history, 1)
    return (
        [keys[i] for i in rows.tolist()],
        np.take_along_axis(values[rows], order, axis=1),
        np.take_along_axis(kept[rows], order, axis=1),
        count,
    )


def save(detector: Detector, path: Path, now: float) -> int:
    """Write the detector's rings to ``path`` (atomically); return how many series.

    Raises:
        OSError: the file cannot be written (the previous one, if any, stays).
    """
    keys, values, kept, count = snapshot(detector)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("wb") as out:
        np.savez(
            out,
            version=np.array(_VERSION),
            saved_at=np.array(now),
            window_s=np.array(detector.settings.window_s),
            keys=np.array(json.dumps(keys)),
            values=values,
            kept=kept,
            count=count,
        )
    os.replace(temporary, path)
    return len(keys)


def load(path: Path, window_s: float, now: float, max_age_s: float) -> dict[tuple[str, str], Ring]:
    """The rings saved in ``path`` by key, or none (logged) when the file is missing, unreadable, of another
    ``window_s`` or older than ``max_age_s``."""
    if not path.exists():
        return {}
    try:
        with path.open("rb") as file, np.load(file, allow_pickle=False) as data:
            if int(data["version"]) != _VERSION or float(data["window_s"]) != window_s:
                logger.info("%s: saved with another window or format: detection starts cold", path)
                return {}
            age = now - float(data["saved_at"])
            if not 0 <= age <= max_age_s:
                logger.info("%s: saved %.0f s ago: detection starts cold", path, age)
                return {}
            keys = [tuple(k) for k in json.loads(str(data["keys"]))]
            values, kept, count = data["values"], data["kept"], data["count"]
            if not (len(keys) == len(values) == len(kept) == len(count)) or values.shape != kept.shape:
                raise ValueError("arrays of different lengths")
            rings = {
                (str(k[0]), str(k[1])): (values[i, : int(count[i])].astype(np.float64), kept[i, : int(count[i])])
                for i, k in enumerate(keys)
                if len(k) == 2
            }
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as e:
        logger.warning("%s cannot be read (%s): detection starts cold", path, e)
        return {}
    logger.info("warm start: %d series' baselines from %s", len(rings), path)
    return rings


class WarmStart:
    """Saves the detector's rings every ``every_s`` (on the caller's thread, from :meth:`maybe_save`) and at
    :meth:`save`; reads them back into the detector at :meth:`restore`."""

    def __init__(self, detector: Detector, path: Path, every_s: float = 300.0, max_age_s: float = 86400.0) -> None:
        self.detector, self.path, self.every_s, self.max_age_s = detector, path, every_s, max_age_s
        self._last = time.monotonic()

    def restore(self, now: float) -> int:
        rings = load(self.path, self.detector.settings.window_s, now, self.max_age_s)
        with self.detector.held():
            self.detector.warm = rings
        return len(rings)

    def maybe_save(self, now: float) -> None:
        if time.monotonic() - self._last >= self.every_s:
            self.save(now)

    def save(self, now: float) -> None:
        """Never raises: a failed save is logged (the next one tries again)."""
        self._last = time.monotonic()
        try:
            save(self.detector, self.path, now)
        except OSError as e:
            logger.warning("the detector's baselines were not saved to %s: %s", self.path, e)
