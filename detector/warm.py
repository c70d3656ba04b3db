"""Warm start: the detector's baselines outlive a restart.

Every series' recent values (its ring of ``history`` windows, with which of them count for the baseline) are saved
to one file (``<storage.data_dir>/detector.npz``) every ``every_s`` and at shutdown, and read back at start: a series
seen again after the restart starts from its saved values instead of warming up from nothing (``warmup`` windows
blind, then a baseline of a few values). Saved by key (entity, signal), so nothing depends on the order series come
back in; rings not taken up yet are saved again as they were (a restart soon after a restart loses nothing) and let
go after ``keep_s``. What is not saved: the window open at the save, the seasonal profiles, log templates and the
log and span flows (they learn again), and series' runs of anomalous values (a fault that outlives a restart is
judged afresh). The file lives with ``storage.data_dir``: on the DaemonSet an emptyDir, kept across container
restarts (a crash, an OOM kill) but not when the pod is replaced; in gateway mode each replica's volume.

A file from a different ``window_s``, older than ``max_age_s``, unreadable or of another shape is not used (logged):
a cold start, as before. The file is written whole to a temporary name and renamed, so a crash mid-write leaves the
previous one.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rootward.storage import replace_file

if TYPE_CHECKING:
    from rootward.detector.detector import Detector

logger = logging.getLogger(__name__)

#: A saved ring: its values oldest first, and which count for the baseline.
Ring = tuple[np.ndarray, np.ndarray]

_VERSION = 1


def snapshot(detector: Detector) -> tuple[list[tuple[str, str]], np.ndarray, np.ndarray, np.ndarray]:
    """Every series with values: its key, its ring oldest first (float32; NaN past its count), which values count,
    and how many it has (at most ``history``); and the saved rings not taken up yet (series not seen again since a
    restart: a save soon after one must not lose them). Copied under the detector's lock."""
    with detector.held():
        b = detector.baselines
        keys = list(detector.table.keys[: len(b)])
        pending = set(detector.table.reused)  # given to a new key, not yet started over: the old key's values
        seen = b.seen.copy()
        values, kept = b.values.astype(np.float32), b.kept.copy()  # copies, half the bytes of the rings
        waiting = dict(detector.warm)
    history = values.shape[1]
    rows = np.array([i for i, k in enumerate(keys) if seen[i] > 0 and k != ("", "") and i not in pending], np.int64)
    values, kept, seen = values[rows], kept[rows], seen[rows]
    start = np.where(seen >= history, seen % history, 0)
    for shift in np.unique(start[start > 0]).tolist():  # a wrapped ring starts at its oldest value (in place)
        at = np.flatnonzero(start == shift)
        values[at] = np.roll(values[at], -shift, axis=1)
        kept[at] = np.roll(kept[at], -shift, axis=1)
    saved = [keys[i] for i in rows.tolist()]
    extra = [(k, ring) for k, ring in waiting.items() if k not in set(saved)]
    if extra:
        more = np.full((len(extra), history), np.nan, np.float32)
        more_kept = np.ones((len(extra), history), bool)
        counts = []
        for j, (_, (v, kp)) in enumerate(extra):
            n = min(len(v), history)
            more[j, :n], more_kept[j, :n] = v[len(v) - n :], kp[len(kp) - n :]
            counts.append(n)
        saved += [k for k, _ in extra]
        values, kept = np.concatenate([values, more]), np.concatenate([kept, more_kept])
        seen = np.concatenate([np.minimum(seen, history), np.array(counts, np.int64)])
    return saved, values, kept, np.minimum(seen, history)


def save(detector: Detector, path: Path, now: float) -> int:
    """Write the detector's rings to ``path`` (atomically, synced before the rename); return how many series.

    Raises:
        OSError: the file cannot be written (the previous one, if any, stays; nothing is left behind).
    """
    keys, values, kept, count = snapshot(detector)
    replace_file(
        path,
        lambda out: np.savez(
            out,
            version=np.array(_VERSION),
            saved_at=np.array(now),
            window_s=np.array(detector.settings.window_s),
            keys=np.array(json.dumps(keys)),
            values=values,
            kept=kept,
            count=count,
        ),
    )
    return len(keys)


def load(path: Path, window_s: float, now: float, max_age_s: float) -> dict[tuple[str, str], Ring]:
    """The rings saved in ``path`` by key (float32 values), or none (logged) when the file is missing, unreadable,
    of other shapes, of another ``window_s`` or older than ``max_age_s``."""
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
            if (
                values.ndim != 2
                or values.shape != kept.shape
                or count.shape != (len(keys),)
                or len(values) != len(keys)
            ):
                raise ValueError("arrays of other shapes than a ring a series")
            if values.dtype.kind != "f" or kept.dtype != bool or count.dtype.kind not in "iu":
                raise ValueError("arrays of other types")
            rings = {
                (str(k[0]), str(k[1])): (values[i, : int(count[i])].copy(), kept[i, : int(count[i])].copy())
                for i, k in enumerate(keys)
                if len(k) == 2 and isinstance(k[0], str) and isinstance(k[1], str)
            }
    except (OSError, ValueError, KeyError, TypeError, IndexError, EOFError, zipfile.BadZipFile) as e:
        logger.warning("%s cannot be read (%s): detection starts cold", path, e)
        return {}
    logger.info("warm start: %d series' baselines from %s", len(rings), path)
    return rings


class WarmStart:
    """Saves the detector's rings every ``every_s`` (on the caller's thread, from :meth:`maybe_save`) and at
    :meth:`save`; reads them back into the detector at :meth:`restore`. Saved rings not taken up within
    ``keep_s`` (pods deleted while Rootward was down) are let go."""

    def __init__(
        self, detector: Detector, path: Path, every_s: float = 300.0, max_age_s: float = 86400.0, keep_s: float = 3600.0
    ) -> None:
        self.detector, self.path, self.every_s, self.max_age_s = detector, path, every_s, max_age_s
        self.keep_s = keep_s
        self._last = time.monotonic()
        self._restored_at: float | None = None  # None: never read, so nothing may be written over the file
        self._lock = threading.Lock()  # the ticker's save and shutdown's, one at a time

    def restore(self, now: float) -> int:
        """Never raises: a file that cannot be used is a cold start (logged)."""
        try:
            rings = load(self.path, self.detector.settings.window_s, now, self.max_age_s)
        except Exception:  # a start must not fail for a warm start
            logger.exception("%s cannot be used: detection starts cold", self.path)
            rings = {}
        with self.detector.held():
            self.detector.warm = rings
        self._restored_at = time.monotonic()
        return len(rings)

    def maybe_save(self, now: float) -> None:
        if self.detector.warm and self._restored_at is not None and time.monotonic() - self._restored_at > self.keep_s:
            with self.detector.held():
                self.detector.warm = {}  # not seen again within keep_s: gone
        if time.monotonic() - self._last >= self.every_s:
            self.save(now)

    def save(self, now: float) -> None:
        """Never raises: a failed save is logged (the next one tries again). Before :meth:`restore` read the file
        (a start that failed first), nothing is written over it."""
        if self._restored_at is None:
            return
        with self._lock:
            self._last = time.monotonic()
            try:
                save(self.detector, self.path, now)
            except OSError as e:
                logger.warning("the detector's baselines were not saved to %s: %s", self.path, e)
