"""Protobuf wire-format kernels for the trace hot path, compiled with numba.

Why this exists: a full ``ExportTraceServiceRequest.FromString`` followed by Python attribute access costs
about 12x the parse alone (bench/README.md), because every field read creates a Python wrapper. These
kernels read the wire bytes once and write only the columns the pipeline needs into numpy arrays.

They are exact for what they extract (tests/receiver/test_wire_exact.py compares them with the upb parse on
generated requests) and strict about framing: a truncated varint, a length past its message, a group wire
type, or a known field with the wrong wire type is an error with its byte offset. They do not check UTF-8
(strings are decoded later with replacement), and they skip fields they do not need.

Error codes (negative) and per-span reject reasons (positive) are named in ``receiver/traces.py``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# Wire errors (returned as negative positions / codes).
E_TRUNCATED = -1
E_VARINT_TOO_LONG = -2
E_LENGTH = -3
E_WIRE_TYPE = -4
E_FIELD_TYPE = -5

# Per-span reject reasons.
R_TRACE_ID = 1
R_SPAN_ID = 2
R_PARENT_ID = 3
R_TOO_MANY_ATTRIBUTES = 4
R_VALUE_TOO_LONG = 5
R_TOO_DEEP = 6

# Attribute value types captured for the wanted keys.
T_NONE = 0
T_STRING = 1
T_BOOL = 2
T_INT = 3

_ANY = 0
_ARRAY = 1
_KVLIST = 2
_KV = 3


@njit(cache=True, nogil=True)
def read_varint(buf: np.ndarray, pos: int, end: int) -> tuple[np.uint64, int]:
    """Return (value, new position); the position is negative on error."""
    result = np.uint64(0)
    shift = np.uint64(0)
    for _ in range(10):
        if pos >= end:
            return np.uint64(0), E_TRUNCATED
        b = buf[pos]
        pos += 1
        result |= np.uint64(b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += np.uint64(7)
    return np.uint64(0), E_VARINT_TOO_LONG


@njit(cache=True, nogil=True)
def read_len(buf: np.ndarray, pos: int, end: int) -> tuple[int, int]:
    """Read a length prefix; return (start of payload, end of payload) or (error, 0)."""
    v, p = read_varint(buf, pos, end)
    if p < 0:
        return p, 0
    n = np.int64(v)
    if n < 0 or p + n > end:
        return E_LENGTH, 0
    return p, p + n


@njit(cache=True, nogil=True)
def _is_one_varint(buf: np.ndarray, start: int, end: int) -> bool:
    """True when ``buf[start:end]`` is exactly one varint of at most 10 bytes."""
    if end <= start or end - start > 10 or buf[end - 1] >= 0x80:
        return False
    for j in range(start, end - 1):  # noqa: SIM110 - numba compiles loops, not generators
        if buf[j] < 0x80:
            return False
    return True


@njit(cache=True, nogil=True)
def skip_field(buf: np.ndarray, pos: int, end: int, wt: int) -> int:
    """Skip one field's payload of wire type ``wt``; return the new position or an error."""
    if wt == 0:
        _, p = read_varint(buf, pos, end)
        return p
    if wt == 1:
        return pos + 8 if pos + 8 <= end else E_TRUNCATED
    if wt == 2:
        s, e = read_len(buf, pos, end)
        return s if s < 0 else e
    if wt == 5:
        return pos + 4 if pos + 4 <= end else E_TRUNCATED
    return E_WIRE_TYPE


@njit(cache=True, nogil=True)
def read_fixed64(buf: np.ndarray, pos: int) -> np.uint64:
    v = np.uint64(0)
    for k in range(8):
        v |= np.uint64(buf[pos + k]) << np.uint64(8 * k)
    return v


@njit(cache=True, nogil=True)
def read_id(buf: np.ndarray, pos: int) -> np.uint64:
    """An 8-byte id as a big-endian integer, so hex(id) is the id's usual hex form."""
    v = np.uint64(0)
    for k in range(8):
        v = (v << np.uint64(8)) | np.uint64(buf[pos + k])
    return v


@njit(cache=True, nogil=True)
def index_spans(buf: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Walk an ExportTraceServiceRequest and return the spans' byte ranges and the resources' ranges.

    Returns (spans int64[n, 3] = start, end, resource index; resources int64[m, 2] = start, end (-1 when the
    ResourceSpans has no resource); error code; error offset).
    """
    end = len(buf)
    spans = np.empty((64, 3), np.int64)
    res = np.empty((8, 2), np.int64)
    ns = 0
    nr = 0
    pos = 0
    while pos < end:
        at = pos
        tag, pos = read_varint(buf, pos, end)
        if pos < 0:
            return spans[:0], res[:0], pos, at
        field = tag >> np.uint64(3)
        wt = np.int64(tag & np.uint64(7))
        if field != 1:
            pos = skip_field(buf, pos, end, wt)
            if pos < 0:
                return spans[:0], res[:0], pos, at
            continue
        if wt != 2:
            return spans[:0], res[:0], E_FIELD_TYPE, at
        rs_start, rs_end = read_len(buf, pos, end)
        if rs_start < 0:
            return spans[:0], res[:0], rs_start, at
        if nr == len(res):
            grown = np.empty((2 * nr, 2), np.int64)
            grown[:nr] = res
            res = grown
        res[nr, 0] = -1
        res[nr, 1] = -1
        p = rs_start
        while p < rs_end:
            at = p
            tag, p = read_varint(buf, p, rs_end)
            if p < 0:
                return spans[:0], res[:0], p, at
            f = tag >> np.uint64(3)
            w = np.int64(tag & np.uint64(7))
            if f == 1 or f == 2:
                if w != 2:
                    return spans[:0], res[:0], E_FIELD_TYPE, at
                s, e = read_len(buf, p, rs_end)
                if s < 0:
                    return spans[:0], res[:0], s, at
                if f == 1:
                    res[nr, 0] = s
                    res[nr, 1] = e
                else:
                    q = s
                    while q < e:
                        qat = q
                        t2, q = read_varint(buf, q, e)
                        if q < 0:
                            return spans[:0], res[:0], q, qat
                        f2 = t2 >> np.uint64(3)
                        w2 = np.int64(t2 & np.uint64(7))
                        if f2 == 2:
                            if w2 != 2:
                                return spans[:0], res[:0], E_FIELD_TYPE, qat
                            s2, e2 = read_len(buf, q, e)
                            if s2 < 0:
                                return spans[:0], res[:0], s2, qat
                            if ns == len(spans):
                                grown2 = np.empty((2 * ns, 3), np.int64)
                                grown2[:ns] = spans
                                spans = grown2
                            spans[ns, 0] = s2
                            spans[ns, 1] = e2
                            spans[ns, 2] = nr
                            ns += 1
                            q = e2
                        else:
                            q = skip_field(buf, q, e, w2)
                            if q < 0:
                                return spans[:0], res[:0], q, qat
                p = e
            else:
                p = skip_field(buf, p, rs_end, w)
                if p < 0:
                    return spans[:0], res[:0], p, at
        nr += 1
        pos = rs_end
    return spans[:ns], res[:nr], 0, 0


@njit(cache=True, nogil=True)
def check_nested(buf: np.ndarray, start: int, end: int, max_len: int, max_depth: int) -> int:
    """Check an AnyValue holding an array or kvlist: string/bytes lengths and nesting depth.

    Returns 0, a reject reason (> 0) or a wire error (< 0).
    """
    size = 3 * max_depth + 6
    ends = np.empty(size, np.int64)
    kinds = np.empty(size, np.int8)
    sp = 1
    ends[0] = end
    kinds[0] = _ANY
    depth = 1
    p = start
    while sp > 0:
        top_end = ends[sp - 1]
        kind = kinds[sp - 1]
        if p >= top_end:
            sp -= 1
            if kind == _ANY:
                depth -= 1
            continue
        tag, p = read_varint(buf, p, top_end)
        if p < 0:
            return p
        f = tag >> np.uint64(3)
        w = np.int64(tag & np.uint64(7))
        push = -1
        if kind == _ANY:
            if (f == 5 or f == 6) and w == 2:
                push = _ARRAY if f == 5 else _KVLIST
            elif (f == 1 or f == 7) and w == 2:
                s, e = read_len(buf, p, top_end)
                if s < 0:
                    return s
                if e - s > max_len:
                    return R_VALUE_TOO_LONG
                p = e
                continue
        elif kind == _ARRAY:
            if f == 1 and w == 2:
                push = _ANY
        elif kind == _KVLIST:
            if f == 1 and w == 2:
                push = _KV
        else:
            if f == 2 and w == 2:
                push = _ANY
            elif f == 1 and w == 2:
                s, e = read_len(buf, p, top_end)
                if s < 0:
                    return s
                if e - s > max_len:
                    return R_VALUE_TOO_LONG
                p = e
                continue
        if push < 0:
            p = skip_field(buf, p, top_end, w)
            if p < 0:
                return p
            continue
        s, e = read_len(buf, p, top_end)
        if s < 0:
            return s
        if push == _ANY:
            depth += 1
            if depth > max_depth:
                return R_TOO_DEEP
        ends[sp] = e
        kinds[sp] = push
        sp += 1
        p = s
    return 0


@njit(cache=True, nogil=True, inline="always")
def check_value(buf: np.ndarray, start: int, end: int, max_len: int, max_depth: int) -> int:
    """Check one AnyValue against the limits; scalar values take the fast path."""
    p = start
    while p < end:
        tag, p = read_varint(buf, p, end)
        if p < 0:
            return p
        f = tag >> np.uint64(3)
        w = np.int64(tag & np.uint64(7))
        if (f == 5 or f == 6) and w == 2:
            return check_nested(buf, start, end, max_len, max_depth)
        if (f == 1 or f == 7) and w == 2:
            s, e = read_len(buf, p, end)
            if s < 0:
                return s
            if e - s > max_len:
                return R_VALUE_TOO_LONG
            p = e
        else:
            p = skip_field(buf, p, end, w)
            if p < 0:
                return p
    return 0


@njit(cache=True, nogil=True, inline="always")
def scan_keyvalue(
    buf: np.ndarray,
    s: int,
    e: int,
    limits: np.ndarray,
    keys: np.ndarray,
    keylens: np.ndarray,
    keycols: np.ndarray,
    keyprio: np.ndarray,
    row: int,
    a_type: np.ndarray,
    a_off: np.ndarray,
    a_len: np.ndarray,
    a_int: np.ndarray,
    capture: bool,
) -> int:
    """Check one KeyValue (key 1, value 2) against the limits and, when ``capture``, keep a wanted key.

    ``limits`` = [max attributes, max value length, max depth]. Returns 0, a reject reason or a wire error.
    """
    k_s = -1
    k_e = -1
    v_s = -1
    v_e = -1
    q = s
    # Fast path for the usual encoding: key (tag 0x0A, 1-byte length) then value (tag 0x12, 1-byte length).
    if e - s >= 4 and buf[s] == 0x0A and buf[s + 1] < 0x80:
        k_s = s + 2
        k_e = k_s + np.int64(buf[s + 1])
        if k_e + 2 <= e and buf[k_e] == 0x12 and buf[k_e + 1] < 0x80:
            v_s = k_e + 2
            v_e = v_s + np.int64(buf[k_e + 1])
            if v_e == e:
                q = e
            else:
                k_s = -1
                k_e = -1
                v_s = -1
                v_e = -1
        else:
            k_s = -1
            k_e = -1
    while q < e:
        t2, q = read_varint(buf, q, e)
        if q < 0:
            return q
        f2 = t2 >> np.uint64(3)
        w2 = np.int64(t2 & np.uint64(7))
        if (f2 == 1 or f2 == 2) and w2 == 2:
            s2, e2 = read_len(buf, q, e)
            if s2 < 0:
                return s2
            if f2 == 1:
                k_s = s2
                k_e = e2
            else:
                v_s = s2
                v_e = e2
            q = e2
        elif f2 == 1 or f2 == 2:
            return E_FIELD_TYPE
        else:
            q = skip_field(buf, q, e, w2)
            if q < 0:
                return q
    if k_e - k_s > limits[1]:
        return R_VALUE_TOO_LONG
    if v_s >= 0:
        # Fast path: one scalar field (string with a 1-byte length, bool, int, double) filling the value.
        t = buf[v_s] if v_e > v_s else 0
        scalar = (
            (t == 0x0A and v_e - v_s >= 2 and buf[v_s + 1] < 0x80 and v_s + 2 + np.int64(buf[v_s + 1]) == v_e)
            or (t == 0x21 and v_e - v_s == 9)
            or ((t == 0x10 or t == 0x18) and _is_one_varint(buf, v_s + 1, v_e))
        )
        if not scalar:
            r = check_value(buf, v_s, v_e, limits[1], limits[2])
            if r != 0:
                return r
    if not capture or v_s < 0:
        return 0
    klen = k_e - k_s
    for k in range(len(keylens)):
        if keylens[k] != klen:
            continue
        same = True
        for j in range(klen):
            if keys[k, j] != buf[k_s + j]:
                same = False
                break
        if not same:
            continue
        col = keycols[k]
        if keyprio[k] > 0 and a_type[row, col] != T_NONE:
            return 0
        # The value was checked above, so its framing is sound.
        q = v_s
        while q < v_e:
            t3, q = read_varint(buf, q, v_e)
            f3 = t3 >> np.uint64(3)
            w3 = np.int64(t3 & np.uint64(7))
            if f3 == 1 and w3 == 2:
                s3, e3 = read_len(buf, q, v_e)
                a_type[row, col] = T_STRING
                a_off[row, col] = s3
                a_len[row, col] = e3 - s3
                q = e3
            elif (f3 == 2 or f3 == 3) and w3 == 0:
                v3, q = read_varint(buf, q, v_e)
                a_type[row, col] = T_BOOL if f3 == 2 else T_INT
                a_int[row, col] = np.int64(v3)
            else:
                q = skip_field(buf, q, v_e, w3)
        return 0
    return 0


@njit(cache=True, nogil=True)
def scan_attributes(buf: np.ndarray, start: int, end: int, field_no: int, limits: np.ndarray) -> int:
    """Check the KeyValues in field ``field_no`` of a message (an event's or a link's attributes)."""
    keys = np.empty((0, 0), np.uint8)
    none = np.empty(0, np.int64)
    dummy_t = np.empty((0, 0), np.int8)
    dummy_i = np.empty((0, 0), np.int64)
    count = 0
    p = start
    while p < end:
        tag, p = read_varint(buf, p, end)
        if p < 0:
            return p
        f = np.int64(tag >> np.uint64(3))
        w = np.int64(tag & np.uint64(7))
        if f != field_no:
            p = skip_field(buf, p, end, w)
            if p < 0:
                return p
            continue
        if w != 2:
            return E_FIELD_TYPE
        s, e = read_len(buf, p, end)
        if s < 0:
            return s
        p = e
        count += 1
        if count > limits[0]:
            return R_TOO_MANY_ATTRIBUTES
        r = scan_keyvalue(buf, s, e, limits, keys, none, none, none, 0, dummy_t, dummy_i, dummy_i, dummy_i, False)
        if r != 0:
            return r
    return 0


@njit(cache=True, nogil=True)
def parse_spans(
    buf: np.ndarray,
    index: np.ndarray,
    limits: np.ndarray,
    keys: np.ndarray,
    keylens: np.ndarray,
    keycols: np.ndarray,
    keyprio: np.ndarray,
    ids: np.ndarray,
    kind: np.ndarray,
    times: np.ndarray,
    status: np.ndarray,
    name: np.ndarray,
    a_type: np.ndarray,
    a_off: np.ndarray,
    a_len: np.ndarray,
    a_int: np.ndarray,
    reject: np.ndarray,
) -> tuple[int, int]:
    """Fill the span columns from the byte ranges of ``index_spans``.

    ``ids`` is uint64[n, 4] = trace id high, trace id low, span id, parent span id (0 = root);
    ``times`` int64[n, 2] = start, end; ``name`` int64[n, 2] = offset, length. Returns (error, offset).
    """
    for i in range(len(index)):
        p = index[i, 0]
        end = index[i, 1]
        ids[i, 0] = 0
        ids[i, 1] = 0
        ids[i, 2] = 0
        ids[i, 3] = 0
        kind[i] = 0
        times[i, 0] = 0
        times[i, 1] = 0
        status[i] = 0
        name[i, 0] = 0
        name[i, 1] = 0
        reject[i] = 0
        a_type[i, :] = T_NONE
        tid_len = 0
        sid_len = 0
        n_attrs = 0
        while p < end:
            at = p
            tag, p = read_varint(buf, p, end)
            if p < 0:
                return p, at
            f = np.int64(tag >> np.uint64(3))
            w = np.int64(tag & np.uint64(7))
            if f == 1 or f == 2 or f == 4 or f == 5 or f == 9 or f == 11 or f == 13 or f == 15:
                if w != 2:
                    return E_FIELD_TYPE, at
                s, e = read_len(buf, p, end)
                if s < 0:
                    return s, at
                p = e
                n = e - s
                if f == 1:
                    tid_len = n
                    if n == 16:
                        ids[i, 0] = read_id(buf, s)
                        ids[i, 1] = read_id(buf, s + 8)
                elif f == 2:
                    sid_len = n
                    if n == 8:
                        ids[i, 2] = read_id(buf, s)
                elif f == 4:
                    if n == 8:
                        ids[i, 3] = read_id(buf, s)
                    elif n != 0 and reject[i] == 0:
                        reject[i] = R_PARENT_ID
                elif f == 5:
                    name[i, 0] = s
                    name[i, 1] = n
                    if n > limits[1] and reject[i] == 0:
                        reject[i] = R_VALUE_TOO_LONG
                elif f == 15:
                    q = s
                    while q < e:
                        qat = q
                        t2, q = read_varint(buf, q, e)
                        if q < 0:
                            return q, qat
                        f2 = t2 >> np.uint64(3)
                        w2 = np.int64(t2 & np.uint64(7))
                        if f2 == 3 and w2 == 0:
                            v2, q = read_varint(buf, q, e)
                            if q < 0:
                                return q, qat
                            status[i] = np.int8(v2 & np.uint64(0x7F))
                        else:
                            q = skip_field(buf, q, e, w2)
                            if q < 0:
                                return q, qat
                else:
                    # attributes (9) of the span, or an event (11, attributes in 3) or link (13, in 4).
                    if f == 9:
                        n_attrs += 1
                        if n_attrs > limits[0]:
                            r = R_TOO_MANY_ATTRIBUTES
                        else:
                            r = scan_keyvalue(
                                buf, s, e, limits, keys, keylens, keycols, keyprio, i, a_type, a_off, a_len, a_int, True
                            )
                    else:
                        r = scan_attributes(buf, s, e, 3 if f == 11 else 4, limits)
                    if r < 0:
                        return r, at
                    if r > 0 and reject[i] == 0:
                        reject[i] = r
            elif f == 6 or f == 7 or f == 8:
                if f == 6:
                    if w != 0:
                        return E_FIELD_TYPE, at
                    v, p = read_varint(buf, p, end)
                    if p < 0:
                        return p, at
                    kind[i] = np.int8(v & np.uint64(0x7F))
                else:
                    if w != 1:
                        return E_FIELD_TYPE, at
                    if p + 8 > end:
                        return E_TRUNCATED, at
                    times[i, f - 7] = np.int64(read_fixed64(buf, p))
                    p += 8
            else:
                p = skip_field(buf, p, end, w)
                if p < 0:
                    return p, at
        if reject[i] == 0:
            if tid_len != 16 or (ids[i, 0] == 0 and ids[i, 1] == 0):
                reject[i] = R_TRACE_ID
            elif sid_len != 8 or ids[i, 2] == 0:
                reject[i] = R_SPAN_ID
    return 0, 0


@njit(cache=True, nogil=True)
def fnv1a(buf: np.ndarray, offs: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """64-bit FNV-1a hash of each byte range (used to intern strings; collisions are checked)."""
    out = np.empty(len(offs), np.uint64)
    for i in range(len(offs)):
        h = np.uint64(0xCBF29CE484222325)
        for j in range(offs[i], offs[i] + lens[i]):
            h ^= np.uint64(buf[j])
            h *= np.uint64(0x100000001B3)
        out[i] = h ^ np.uint64(lens[i])
    return out


@njit(cache=True, nogil=True)
def same_as_first(buf: np.ndarray, offs: np.ndarray, lens: np.ndarray, first: np.ndarray, inv: np.ndarray) -> bool:
    """True when every range equals the representative range of its hash group (no collision)."""
    for i in range(len(offs)):
        r = first[inv[i]]
        if lens[i] != lens[r]:
            return False
        a = offs[i]
        b = offs[r]
        for j in range(lens[i]):
            if buf[a + j] != buf[b + j]:
                return False
    return True
