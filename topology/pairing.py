"""Span pairing, vectorised: spans waiting for their partner as numpy columns in a ring buffer.

A :class:`Pending` store keeps rows of spans (key, trace id halves, span or parent id, service index, error,
duration, ...) in preallocated columns addressed by a growing sequence number (row = seq % capacity). A
:class:`~rootward.topology._index.KeyIndex` (Cython) maps each key to the newest live sequence number that holds it;
rows that share a key are chained through ``prev`` (several server spans under one client span: retries, or the
children of a span without kinds). Rows leave oldest first, by age (the pairing TTL) or to make room (a bounded
store): expiry moves a floor, it neither scans nor deletes.

Per batch the graph makes a few whole-batch calls into the index and does everything else (key mixing,
verification, gathering, RED aggregation) as whole-array numpy operations: no Python work per span.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from rootward.topology._index import KeyIndex

_K1 = np.uint64(0x9E3779B97F4A7C15)
_K2 = np.uint64(0xC2B2AE3D27D4EB4F)


def span_keys(hi: np.ndarray, lo: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """One uint64 per (trace id, span id). Lookups verify the full triple, so a collision never pairs wrongly."""
    return (hi * _K1) ^ (lo * _K2) ^ ids  # type: ignore[no-any-return]


#: Columns every store has; a store adds its own.
BASE_COLUMNS: dict[str, type] = {
    "key": np.uint64,
    "hi": np.uint64,
    "lo": np.uint64,
    "id": np.uint64,
    "done": np.bool_,
    "prev": np.int64,
}


class Pending:
    """Rows waiting to pair, oldest first."""

    def __init__(self, columns: dict[str, type], chained: bool = False, capacity: int = 1024) -> None:
        self.dtypes = {**BASE_COLUMNS, **columns}
        self.chained = chained
        self.capacity = 0
        self.columns: dict[str, np.ndarray] = {}
        self.head = 0  # the next sequence number
        self.tail = 0  # the oldest live one
        self.index = KeyIndex(capacity)
        self.batches: deque[tuple[int, float]] = deque()  # (head after a batch, its time), for expiry by age
        self._grow(capacity)

    def __len__(self) -> int:
        return self.head - self.tail

    def _grow(self, capacity: int) -> None:
        live = np.arange(self.tail, self.head)
        grown = {
            name: np.empty(capacity, dtype) if dtype is object else np.zeros(capacity, dtype)
            for name, dtype in self.dtypes.items()
        }
        for name, column in self.columns.items():
            grown[name][live % capacity] = column[live % self.capacity]
        self.columns, self.capacity = grown, capacity

    def live(self) -> np.ndarray:
        """The rows held, oldest first."""
        return np.arange(self.tail, self.head) % self.capacity

    def append(self, values: dict[str, np.ndarray], now: float) -> None:
        """Add rows (every column but ``prev``); the caller has made room (:meth:`drop`) if it bounds the store."""
        keys = values["key"]
        n = len(keys)
        if n == 0:
            return
        if len(self) + n > self.capacity:
            self._grow(1 << (len(self) + n - 1).bit_length())
        seqs = np.arange(self.head, self.head + n)
        rows = seqs % self.capacity
        for name, column in values.items():
            self.columns[name][rows] = column
        # Each row links to the row its key named before (within this batch too): the chain a take follows.
        self.columns["prev"][rows] = self.index.insert(keys, seqs)
        self.head += n
        self.batches.append((self.head, now))

    def lookup(self, keys: np.ndarray, hi: np.ndarray, lo: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """The newest live row holding each (trace, id), or -1."""
        seqs = self.index.lookup(keys)
        found = seqs >= 0
        rows = np.where(found, seqs % self.capacity, -1)
        hit = rows[found]
        c = self.columns
        same = (c["hi"][hit] == hi[found]) & (c["lo"][hit] == lo[found]) & (c["id"][hit] == ids[found])
        rows[np.flatnonzero(found)[~same]] = -1
        return rows

    def take(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Remove the keys of ``rows`` (from :meth:`lookup`, -1 skipped) with, in a chained store, the older rows
        under the same key; return (position in ``rows``, row) for every row taken."""
        at = np.flatnonzero(rows >= 0)
        heads = rows[at]
        self.index.remove(self.columns["key"][heads])
        positions, taken = [at], [heads]
        prev = self.columns["prev"]
        while self.chained:
            seqs = prev[heads]
            more = seqs >= self.tail
            if not more.any():
                break
            at, heads = at[more], seqs[more] % self.capacity
            positions.append(at)
            taken.append(heads)
        position, row = np.concatenate(positions), np.concatenate(taken)
        self.columns["done"][row] = True
        return position, row

    def drop(self, count: int) -> np.ndarray:
        """Remove the ``count`` oldest rows; return their row numbers. Their columns stay readable until the next
        :meth:`append`; the index forgets them by itself (its floor moves)."""
        count = min(count, len(self))
        rows = np.arange(self.tail, self.tail + count) % self.capacity
        self.tail += count
        self.index.floor = self.tail
        while self.batches and self.batches[0][0] <= self.tail:
            self.batches.popleft()
        return rows

    def expire(self, cutoff: float) -> np.ndarray:
        """Remove the rows that arrived at or before ``cutoff``."""
        end = self.tail
        for head, seen in self.batches:
            if seen > cutoff:
                break
            end = head
        return self.drop(end - self.tail)
