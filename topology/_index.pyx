# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The pending stores' index (Cython): a uint64 key -> int64 sequence number hash table whose entries expire by
themselves.

Why this exists: with a Python dict, the lookups, inserts and deletes of the pending stores cost ~40 ns each from
Python, several per span, and were a third of the graph's time per batch (bench/README.md). Here a whole batch is one
call.

Sequence numbers only grow and a store drops its rows oldest first, so "every entry below ``floor`` is gone" is all
expiry needs: nothing is deleted. An entry whose number is below the floor is stale: lookups report it absent, and
inserts reuse its slot. Open addressing with linear probing; the slot comes from the key mixed with a per-process
random seed (the keys derive from ids that senders choose, so clustering cannot be forced). The table is rebuilt
(live entries only, doubled when over a third full) when more than 70 % of its slots have ever been used.
"""

import os

import numpy as np

from libc.stdint cimport int64_t, uint64_t

cdef uint64_t SEED = int.from_bytes(os.urandom(8), "little")
cdef int64_t EMPTY = -(2 ** 62)
cdef int64_t TAKEN = -1


cdef inline uint64_t slot_of(uint64_t key, uint64_t mask) noexcept nogil:
    cdef uint64_t h = (key ^ SEED) * 0x9E3779B97F4A7C15ULL
    h ^= h >> 29
    return h & mask


cdef class KeyIndex:
    """key -> newest sequence number; numbers below ``floor`` count as absent."""

    cdef uint64_t[::1] keys
    cdef int64_t[::1] seqs
    cdef uint64_t mask
    cdef Py_ssize_t used
    cdef public int64_t floor

    def __init__(self, Py_ssize_t capacity=1024):
        cdef Py_ssize_t size = 16
        while size < 2 * capacity:
            size *= 2
        self._allocate(size)
        self.floor = 0

    cdef _allocate(self, Py_ssize_t size):
        self.keys = np.zeros(size, np.uint64)
        self.seqs = np.full(size, EMPTY, np.int64)
        self.mask = size - 1
        self.used = 0

    @property
    def size(self):
        return self.mask + 1

    def live(self):
        """How many entries are live (a scan)."""
        cdef Py_ssize_t i, n = 0
        for i in range(self.mask + 1):
            n += self.seqs[i] >= self.floor
        return n

    cdef void _rebuild(self):
        cdef uint64_t[::1] old_keys = self.keys
        cdef int64_t[::1] old_seqs = self.seqs
        cdef Py_ssize_t i, size = self.mask + 1
        cdef Py_ssize_t live = self.live()
        while 3 * live > size:
            size *= 2
        self._allocate(size)
        for i in range(old_seqs.shape[0]):
            if old_seqs[i] >= self.floor:
                self._put(old_keys[i], old_seqs[i])

    cdef inline int64_t _put(self, uint64_t key, int64_t seq) noexcept:
        """Set key -> seq; return the live number it had, or -1."""
        cdef uint64_t i = slot_of(key, self.mask)
        cdef int64_t s, prev
        cdef Py_ssize_t reuse = -1
        while True:
            s = self.seqs[i]
            if s == EMPTY:
                break
            if self.keys[i] == key:
                prev = s if s >= self.floor else -1
                self.seqs[i] = seq
                return prev
            if s < self.floor and reuse < 0:
                reuse = i
            i = (i + 1) & self.mask
        if reuse >= 0:
            i = reuse
        else:
            self.used += 1
        self.keys[i] = key
        self.seqs[i] = seq
        return -1

    cdef inline int64_t _get(self, uint64_t key) noexcept nogil:
        cdef uint64_t i = slot_of(key, self.mask)
        cdef int64_t s
        while True:
            s = self.seqs[i]
            if s == EMPTY:
                return -1
            if self.keys[i] == key:
                return s if s >= self.floor else -1
            i = (i + 1) & self.mask

    def insert(self, const uint64_t[::1] keys, const int64_t[::1] seqs):
        """Set each key to its number, in order; return what each key had before (-1: nothing live), so a key
        repeated within ``keys`` gets the number of its earlier occurrence."""
        cdef Py_ssize_t j, n = keys.shape[0]
        out = np.empty(n, np.int64)
        cdef int64_t[::1] prev = out
        if 10 * (self.used + n) > 7 * (self.mask + 1):
            self._rebuild()
            while 10 * (self.used + n) > 7 * (self.mask + 1):  # a batch larger than the table
                self._grow()
        for j in range(n):
            prev[j] = self._put(keys[j], seqs[j])
        return out

    cdef void _grow(self):
        cdef uint64_t[::1] old_keys = self.keys
        cdef int64_t[::1] old_seqs = self.seqs
        cdef Py_ssize_t i
        self._allocate(2 * (self.mask + 1))
        for i in range(old_seqs.shape[0]):
            if old_seqs[i] >= self.floor:
                self._put(old_keys[i], old_seqs[i])

    def lookup(self, const uint64_t[::1] keys):
        """Each key's live number, or -1."""
        cdef Py_ssize_t j, n = keys.shape[0]
        out = np.empty(n, np.int64)
        cdef int64_t[::1] found = out
        with nogil:
            for j in range(n):
                found[j] = self._get(keys[j])
        return out

    def remove(self, const uint64_t[::1] keys):
        """Forget these keys (their rows were taken)."""
        cdef Py_ssize_t j
        cdef uint64_t i
        cdef int64_t s
        for j in range(keys.shape[0]):
            i = slot_of(keys[j], self.mask)
            while True:
                s = self.seqs[i]
                if s == EMPTY:
                    break
                if self.keys[i] == keys[j]:
                    self.seqs[i] = TAKEN
                    break
                i = (i + 1) & self.mask
