"""Decode an OTLP ExportTraceServiceRequest (wire bytes) into a columnar :class:`SpanBatch`.

The hot path of the whole product: the Cython kernels in ``_wire.pyx`` read the bytes once and fill numpy columns;
this module allocates the columns, interns names and attribute strings once per request, interns resources by
their bytes, and splits off the spans refused by a per-item limit (reported back as partial success).
"""

from __future__ import annotations

import numpy as np

from rootward.model import INT_ABSENT, SPAN_INT_ATTRIBUTES, SPAN_STRING_ATTRIBUTES, Resource, SpanBatch
from rootward.receiver import _wire
from rootward.receiver._common import (
    Decoded,
    Limits,
    ResourceCache,
    intern_ranges,
    reject_message,
    too_many,
    wire_error,
)


def _key_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str], list[str]]:
    """The wanted attribute keys as arrays for the kernel, in order of preference within each column: bytes,
    lengths, column, and the column's value type."""
    str_cols = list(SPAN_STRING_ATTRIBUTES)
    int_cols = list(SPAN_INT_ATTRIBUTES)
    rows: list[tuple[bytes, int, int]] = []
    for col, name in enumerate(str_cols):
        rows += [(k.encode(), col, _wire.T_STRING) for k in SPAN_STRING_ATTRIBUTES[name]]
    for col, name in enumerate(int_cols, len(str_cols)):
        rows += [(k.encode(), col, _wire.T_INT) for k in SPAN_INT_ATTRIBUTES[name]]
    width = max(len(k) for k, _, _ in rows)
    table = np.zeros((len(rows), width), np.uint8)
    for i, (k, _, _) in enumerate(rows):
        table[i, : len(k)] = np.frombuffer(k, np.uint8)
    lens = np.array([len(k) for k, _, _ in rows], np.int64)
    cols = np.array([c for _, c, _ in rows], np.int64)
    kinds = np.array([t for _, _, t in rows], np.int64)
    return table, lens, cols, kinds, str_cols, int_cols


_KEYS, _KEYLENS, _KEYCOLS, _KEYKINDS, _STR_COLS, _INT_COLS = _key_tables()
_NCOLS = len(_STR_COLS) + len(_INT_COLS)


class TraceDecoder:
    """Decodes trace requests. Holds the resource cache: use one per receiver."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self._limit_array = self.limits.as_array()
        self.resources = ResourceCache(self.limits)

    def decode(self, data: bytes) -> Decoded[SpanBatch]:
        """Decode ``data``; spans over a per-item limit are left out and counted in ``rejected``.

        Raises:
            MalformedRequest: the bytes are not a valid ExportTraceServiceRequest.
            LimitExceeded: a resource's attributes break a limit (the whole request is refused).
        """
        index, res_ranges, err, at = _wire.index_spans(data, self.limits.max_items)
        if err == _wire.E_TOO_MANY:
            raise too_many(None, "spans or resources", self.limits)
        if err:
            raise wire_error(err, at, "trace request")
        n = len(index)
        ids = np.empty((n, 4), np.uint64)
        kind = np.empty(n, np.int8)
        times = np.empty((n, 2), np.int64)
        status = np.empty(n, np.int8)
        name = np.empty((n, 2), np.int64)
        a_type = np.empty((n, _NCOLS), np.int8)
        a_off = np.empty((n, _NCOLS), np.int64)
        a_len = np.empty((n, _NCOLS), np.int64)
        a_int = np.empty((n, _NCOLS), np.int64)
        reject = np.empty(n, np.int8)
        err, at = _wire.parse_spans(
            data, index, self._limit_array, _KEYS, _KEYLENS, _KEYCOLS, _KEYKINDS,
            ids, kind, times, status, name, a_type, a_off, a_len, a_int, reject,
        )  # fmt: skip
        if err:
            raise wire_error(err, at, "trace request")
        resources = [self.resources.get(data[s:e]) if s >= 0 else _EMPTY_RESOURCE for s, e in res_ranges.tolist()]
        rejected = int(np.count_nonzero(reject))
        message = ""
        if rejected:
            message = reject_message(reject, self.limits, "spans")
            keep = reject == 0
            ids, kind, times, status, name = ids[keep], kind[keep], times[keep], status[keep], name[keep]
            a_type, a_off, a_len, a_int, index = a_type[keep], a_off[keep], a_len[keep], a_int[keep], index[keep]
        # Intern the span names and every string attribute in one pass.
        strings: list[str] = []
        n = len(ids)
        has = a_type[:, : len(_STR_COLS)] == _wire.T_STRING
        offs = np.concatenate((name[:, 0], a_off[:, : len(_STR_COLS)][has]))
        lens = np.concatenate((name[:, 1], a_len[:, : len(_STR_COLS)][has]))
        string_ids = intern_ranges(data, offs, lens, strings)
        cells = np.full(has.shape, -1, np.int32)
        cells[has] = string_ids[n:]
        str_attrs = {column: cells[:, col] for col, column in enumerate(_STR_COLS)}
        int_attrs: dict[str, np.ndarray] = {}
        for col, column in enumerate(_INT_COLS, len(_STR_COLS)):
            has = (a_type[:, col] == _wire.T_INT) | (a_type[:, col] == _wire.T_BOOL)
            int_attrs[column] = np.where(has, a_int[:, col], INT_ABSENT)
        batch = SpanBatch(
            trace_id=ids[:, :2],
            span_id=ids[:, 2],
            parent_id=ids[:, 3],
            kind=kind,
            status=status,
            start=times[:, 0],
            end=times[:, 1],
            name=string_ids[:n],
            resource=index[:, 2].astype(np.int32),
            resources=resources,
            strings=strings,
            str_attrs=str_attrs,
            int_attrs=int_attrs,
        )
        return Decoded(batch, rejected, message)


_EMPTY_RESOURCE = Resource({})
