# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Protobuf wire-format kernels for the trace hot path (Cython, compiled when the package is installed).

Why this exists: ``ExportTraceServiceRequest.FromString`` followed by Python field access costs about 12x the parse
alone, because every field read creates a Python object. These kernels read the wire bytes once and write only the
columns the pipeline needs into numpy arrays. (They were numba kernels first; numba's LLVM alone took ~100 MiB of
resident memory and ~10 s to compile at start, see bench/README.md.)

Exact for what they extract: tests/receiver/test_wire_exact.py compares them with the upb parse on generated and
mutated requests. Strict about framing: a truncated field, a varint over 10 bytes, a length past its message, a
group wire type, or a known field with the wrong wire type is an error with its byte offset. Every read is bounds
checked against the end of its enclosing message, and lengths are compared without overflow (``n > end - p``).
Not checked: UTF-8 (strings are decoded with replacement later).

Error codes (negative) and per-span reject reasons (positive) are named in ``receiver/_common.py``.
"""

import os

import numpy as np

from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcmp, memset

ctypedef const uint8_t* Buf

cdef uint64_t FNV_OFFSET = 0xCBF29CE484222325ULL
cdef uint64_t FNV_PRIME = 0x100000001B3ULL
cdef uint64_t HASH_SEED = int.from_bytes(os.urandom(8), "little")
ctypedef Py_ssize_t Pos

# Wire errors.
E_TRUNCATED = -1
E_VARINT_TOO_LONG = -2
E_LENGTH = -3
E_WIRE_TYPE = -4
E_FIELD_TYPE = -5
E_TOO_MANY = -6
# Per-span reject reasons.
R_TRACE_ID = 1
R_SPAN_ID = 2
R_PARENT_ID = 3
R_TOO_MANY_ATTRIBUTES = 4
R_VALUE_TOO_LONG = 5
R_TOO_DEEP = 6
# Attribute value types.
T_NONE = 0
T_STRING = 1
T_BOOL = 2
T_INT = 3

cdef enum:
    _E_TRUNCATED = -1
    _E_VARINT_TOO_LONG = -2
    _E_LENGTH = -3
    _E_WIRE_TYPE = -4
    _E_FIELD_TYPE = -5
    _E_TOO_MANY = -6
    _R_TRACE_ID = 1
    _R_SPAN_ID = 2
    _R_PARENT_ID = 3
    _R_TOO_MANY_ATTRIBUTES = 4
    _R_VALUE_TOO_LONG = 5
    _R_TOO_DEEP = 6
    _T_NONE = 0
    _T_STRING = 1
    _T_BOOL = 2
    _T_INT = 3
    _ANY = 0
    _ARRAY = 1
    _KVLIST = 2
    _KV = 3
    _MAX_KEYS = 64
    _MAX_DEPTH = 64
    _MAX_PROBES = 64


cdef inline Pos read_varint(Buf buf, Pos pos, Pos end, uint64_t* out) noexcept nogil:
    """Read a varint at ``pos``; return the new position, or an error (< 0)."""
    cdef uint64_t result = 0
    cdef uint8_t b
    cdef int i
    for i in range(10):
        if pos >= end:
            return _E_TRUNCATED
        b = buf[pos]
        pos += 1
        result |= (<uint64_t>(b & 0x7F)) << (7 * i)
        if b < 0x80:
            out[0] = result
            return pos
    return _E_VARINT_TOO_LONG


cdef inline Pos read_len(Buf buf, Pos pos, Pos end, Pos* payload_end) noexcept nogil:
    """Read a length prefix; return the payload's start and set its end, or return an error (< 0)."""
    cdef uint64_t n
    cdef Pos p = read_varint(buf, pos, end, &n)
    if p < 0:
        return p
    if n > <uint64_t>(end - p):
        return _E_LENGTH
    payload_end[0] = p + <Pos>n
    return p


cdef inline Pos skip_field(Buf buf, Pos pos, Pos end, int wt) noexcept nogil:
    """Skip one field's payload of wire type ``wt``; return the new position or an error."""
    cdef uint64_t v
    cdef Pos e
    cdef Pos s
    if wt == 0:
        return read_varint(buf, pos, end, &v)
    if wt == 1:
        return pos + 8 if end - pos >= 8 else _E_TRUNCATED
    if wt == 2:
        s = read_len(buf, pos, end, &e)
        return s if s < 0 else e
    if wt == 5:
        return pos + 4 if end - pos >= 4 else _E_TRUNCATED
    return _E_WIRE_TYPE


cdef inline int8_t enum8(uint64_t v) noexcept nogil:
    """An enum value as int8; values outside 0..127 (unknown to this version of OTLP) become -1, never an alias."""
    return <int8_t>v if v < 128 else -1


cdef inline uint64_t read_fixed64(Buf buf, Pos pos) noexcept nogil:
    cdef uint64_t v = 0
    cdef int k
    for k in range(8):
        v |= (<uint64_t>buf[pos + k]) << (8 * k)
    return v


cdef inline uint64_t read_id(Buf buf, Pos pos) noexcept nogil:
    """An 8-byte id as a big-endian integer, so that hex(id) is the id's usual hex form."""
    cdef uint64_t v = 0
    cdef int k
    for k in range(8):
        v = (v << 8) | buf[pos + k]
    return v


cdef Pos walk_request(Buf buf, Pos end, int64_t[:, ::1] spans, int64_t[:, ::1] res, Pos* n_spans, Pos* n_res,
                      Pos* at, Pos max_items, bint fill) noexcept nogil:
    """Walk ExportTraceServiceRequest -> ResourceSpans -> ScopeSpans -> Span, counting spans and resources (refused
    past ``max_items`` of either, before anything is allocated for them); with ``fill`` (second pass), record span
    (start, end, resource index) and resource ranges, never past the arrays' capacity."""
    cdef Pos pos = 0, p, q, s, e, s2, e2, rs_end
    cdef uint64_t tag, t2
    cdef Pos ns = 0, nr = 0
    while pos < end:
        at[0] = pos
        pos = read_varint(buf, pos, end, &tag)
        if pos < 0:
            return pos
        if tag >> 3 != 1:
            pos = skip_field(buf, pos, end, <int>(tag & 7))
            if pos < 0:
                return pos
            continue
        if tag & 7 != 2:
            return _E_FIELD_TYPE
        p = read_len(buf, pos, end, &rs_end)
        if p < 0:
            return p
        if nr >= max_items or (fill and nr >= res.shape[0]):
            return _E_TOO_MANY
        if fill:
            res[nr, 0] = -1
            res[nr, 1] = -1
        while p < rs_end:
            at[0] = p
            p = read_varint(buf, p, rs_end, &tag)
            if p < 0:
                return p
            if tag >> 3 == 1 or tag >> 3 == 2:
                if tag & 7 != 2:
                    return _E_FIELD_TYPE
                s = read_len(buf, p, rs_end, &e)
                if s < 0:
                    return s
                if tag >> 3 == 1:
                    if fill:
                        res[nr, 0] = s
                        res[nr, 1] = e
                else:
                    q = s
                    while q < e:
                        at[0] = q
                        q = read_varint(buf, q, e, &t2)
                        if q < 0:
                            return q
                        if t2 >> 3 == 2:
                            if t2 & 7 != 2:
                                return _E_FIELD_TYPE
                            s2 = read_len(buf, q, e, &e2)
                            if s2 < 0:
                                return s2
                            if ns >= max_items or (fill and ns >= spans.shape[0]):
                                return _E_TOO_MANY
                            if fill:
                                spans[ns, 0] = s2
                                spans[ns, 1] = e2
                                spans[ns, 2] = nr
                            ns += 1
                            q = e2
                        else:
                            q = skip_field(buf, q, e, <int>(t2 & 7))
                            if q < 0:
                                return q
                p = e
            else:
                p = skip_field(buf, p, rs_end, <int>(tag & 7))
                if p < 0:
                    return p
        nr += 1
        pos = rs_end
    n_spans[0] = ns
    n_res[0] = nr
    return 0


def index_spans(const uint8_t[::1] data, Py_ssize_t max_items=2**62):
    """Return (spans int64[n, 3] = start, end, resource index; resources int64[m, 2] = start, end of each
    ResourceSpans' resource, -1 when absent; error code; error offset). More than ``max_items`` spans or
    ResourceSpans is the error E_TOO_MANY."""
    cdef Pos ns = 0, nr = 0, at = 0, err
    cdef int64_t[:, ::1] spans_view
    cdef int64_t[:, ::1] res_view
    cdef Buf buf = &data[0] if data.shape[0] else NULL
    spans = np.empty((0, 3), np.int64)
    res = np.empty((0, 2), np.int64)
    spans_view = spans
    res_view = res
    with nogil:
        err = walk_request(buf, data.shape[0], spans_view, res_view, &ns, &nr, &at, max_items, False)
    if err:
        return spans, res, err, at
    spans = np.empty((ns, 3), np.int64)
    res = np.empty((nr, 2), np.int64)
    spans_view = spans
    res_view = res
    err = walk_request(buf, data.shape[0], spans_view, res_view, &ns, &nr, &at, max_items, True)
    return spans, res, err, at


cdef int check_nested(Buf buf, Pos start, Pos end, int64_t max_len, int64_t max_depth) noexcept nogil:
    """Check an AnyValue (``buf[start:end]``, depth 1) whose value is an array or a kvlist: the lengths of every
    string, bytes value and key inside, and the nesting depth of AnyValues. Only the last member of each AnyValue's
    oneof counts, as protobuf keeps only that one. Returns 0, a reject reason (> 0) or a wire error (< 0)."""
    # Each level of AnyValue nesting holds at most two frames (a container and a KeyValue); max_depth is at most
    # _MAX_DEPTH (Limits checks it), so the stack lives on the C stack and cannot overflow.
    cdef Pos ends[2 * _MAX_DEPTH + 4]
    cdef Pos resume[2 * _MAX_DEPTH + 4]
    cdef int64_t depths[2 * _MAX_DEPTH + 4]
    cdef int8_t kinds[2 * _MAX_DEPTH + 4]
    cdef Pos sp = 0, p, s, e, cs, ce, top_end
    cdef int kind, f, w, result = 0
    cdef int64_t depth
    cdef uint64_t tag
    if max_depth > _MAX_DEPTH:
        max_depth = _MAX_DEPTH
    result = last_oneof(buf, start, end, &f, &cs, &ce)
    if result == 0 and (f == 5 or f == 6):
        ends[0] = ce
        resume[0] = end
        depths[0] = 1
        kinds[0] = _ARRAY if f == 5 else _KVLIST
        sp = 1
        p = cs
    while result == 0 and sp > 0:
        top_end = ends[sp - 1]
        kind = kinds[sp - 1]
        depth = depths[sp - 1]
        if p >= top_end:
            p = resume[sp - 1]
            sp -= 1
            continue
        p = read_varint(buf, p, top_end, &tag)
        if p < 0:
            result = <int>p
            break
        f = <int>(tag >> 3) if tag >> 3 < 1000 else 1000
        w = <int>(tag & 7)
        if not ((kind == _KV and (f == 1 or f == 2)) or (kind != _KV and f == 1)) or w != 2:
            p = skip_field(buf, p, top_end, w)
            if p < 0:
                result = <int>p
            continue
        s = read_len(buf, p, top_end, &e)
        if s < 0:
            result = <int>s
            break
        p = e
        if kind == _KV and f == 1:  # the key
            if e - s > max_len:
                result = _R_VALUE_TOO_LONG
            continue
        if sp >= 2 * _MAX_DEPTH + 3:  # unreachable while depth is bounded; a guard for the fixed stack
            result = _R_TOO_DEEP
            break
        if kind == _KVLIST:  # a KeyValue: walk its key and value
            ends[sp] = e
            resume[sp] = e
            depths[sp] = depth
            kinds[sp] = _KV
            sp += 1
            p = s
            continue
        # An AnyValue one level deeper: an array element, or a KeyValue's value.
        if depth + 1 > max_depth:
            result = _R_TOO_DEEP
            break
        result = last_oneof(buf, s, e, &f, &cs, &ce)
        if result != 0:
            break
        if (f == 1 or f == 7) and ce - cs > max_len:
            result = _R_VALUE_TOO_LONG
        elif f == 5 or f == 6:
            ends[sp] = ce
            resume[sp] = e
            depths[sp] = depth + 1
            kinds[sp] = _ARRAY if f == 5 else _KVLIST
            sp += 1
            p = cs
    return result


cdef int last_oneof(Buf buf, Pos p, Pos end, int* field, Pos* start, Pos* stop) noexcept nogil:
    """Find the last value member (fields 1-8) of an AnyValue in ``buf[p:end]``. Sets ``field`` (0 when none) and,
    for length-delimited members, the payload range; for varint members ``start`` is the varint's position.
    Returns 0 or a wire error. A member sent with the wrong wire type is an unknown field, as upb treats it."""
    cdef uint64_t tag, v
    cdef int f, w
    cdef Pos s, e
    field[0] = 0
    while p < end:
        p = read_varint(buf, p, end, &tag)
        if p < 0:
            return <int>p
        f = <int>(tag >> 3) if tag >> 3 < 1000 else 1000
        w = <int>(tag & 7)
        if (f == 1 or f == 5 or f == 6 or f == 7) and w == 2:
            s = read_len(buf, p, end, &e)
            if s < 0:
                return <int>s
            field[0] = f
            start[0] = s
            stop[0] = e
            p = e
        elif (f == 2 or f == 3 or f == 8) and w == 0:
            field[0] = f
            start[0] = p
            p = read_varint(buf, p, end, &v)
            if p < 0:
                return <int>p
            stop[0] = p
        elif f == 4 and w == 1:
            if end - p < 8:
                return _E_TRUNCATED
            field[0] = f
            start[0] = p
            p += 8
            stop[0] = p
        else:
            p = skip_field(buf, p, end, w)
            if p < 0:
                return <int>p
    return 0


cdef int check_value(Buf buf, Pos start, Pos end, int64_t max_len, int64_t max_depth) noexcept nogil:
    """Check one AnyValue against the limits (the last member of its oneof, as protobuf keeps)."""
    cdef int f
    cdef Pos s, e
    cdef int r = last_oneof(buf, start, end, &f, &s, &e)
    if r < 0:
        return r
    if (f == 1 or f == 7) and e - s > max_len:
        return _R_VALUE_TOO_LONG
    if f == 5 or f == 6:
        return check_nested(buf, start, end, max_len, max_depth)
    return 0


cdef int scan_keyvalue(Buf buf, Pos s, Pos e, const int64_t* limits, const uint8_t* keys, Pos key_width,
                       const int64_t* keylens, Pos nkeys, int8_t* k_type, Pos* k_off, Pos* k_len, int64_t* k_int,
                       bint capture) noexcept nogil:
    """Check one KeyValue (key 1, value 2) against the limits; when ``capture`` and its key is a wanted one, record
    its value as that key's latest (a later occurrence of a key replaces an earlier one, as in a map).
    Returns 0, a reject reason or a wire error."""
    cdef Pos k_s = -1, k_e = -1, v_s = -1, v_e = -1, q = s, s2, e2, klen
    cdef uint64_t t2, v
    cdef int f2, w2, r, f, k
    while q < e:
        q = read_varint(buf, q, e, &t2)
        if q < 0:
            return <int>q
        f2 = <int>(t2 >> 3) if t2 >> 3 < 1000 else 1000
        w2 = <int>(t2 & 7)
        if f2 == 1 or f2 == 2:
            if w2 != 2:
                return _E_FIELD_TYPE
            s2 = read_len(buf, q, e, &e2)
            if s2 < 0:
                return <int>s2
            if f2 == 1:
                k_s = s2
                k_e = e2
            else:
                v_s = s2
                v_e = e2
            q = e2
        else:
            q = skip_field(buf, q, e, w2)
            if q < 0:
                return <int>q
    if k_e - k_s > limits[1]:
        return _R_VALUE_TOO_LONG
    if v_s >= 0:
        r = check_value(buf, v_s, v_e, limits[1], limits[2])
        if r != 0:
            return r
    if not capture:
        return 0
    klen = k_e - k_s if k_s >= 0 else 0
    for k in range(nkeys):
        if keylens[k] != klen or (klen and memcmp(keys + k * key_width, buf + k_s, klen) != 0):
            continue
        k_type[k] = _T_NONE
        if v_s < 0:
            return 0
        last_oneof(buf, v_s, v_e, &f, &s2, &e2)
        if f == 1:
            k_type[k] = _T_STRING
            k_off[k] = s2
            k_len[k] = e2 - s2
        elif f == 2 or f == 3:
            read_varint(buf, s2, e2, &v)
            k_type[k] = _T_BOOL if f == 2 else _T_INT
            k_int[k] = (1 if v else 0) if f == 2 else <int64_t>v
        return 0
    return 0


cdef int scan_attributes(Buf buf, Pos start, Pos end, int field_no, const int64_t* limits) noexcept nogil:
    """Check the KeyValues in field ``field_no`` of a message (an event's or a link's attributes)."""
    cdef int64_t count = 0
    cdef Pos p = start, s, e
    cdef uint64_t tag
    cdef int r
    while p < end:
        p = read_varint(buf, p, end, &tag)
        if p < 0:
            return <int>p
        if <int64_t>(tag >> 3) != field_no:
            p = skip_field(buf, p, end, <int>(tag & 7))
            if p < 0:
                return <int>p
            continue
        if tag & 7 != 2:
            return _E_FIELD_TYPE
        s = read_len(buf, p, end, &e)
        if s < 0:
            return <int>s
        p = e
        count += 1
        if count > limits[0]:
            return _R_TOO_MANY_ATTRIBUTES
        r = scan_keyvalue(buf, s, e, limits, NULL, 0, NULL, 0, NULL, NULL, NULL, NULL, False)
        if r != 0:
            return r
    return 0


cdef inline Pos _fail(Pos* at_out, Pos at, Pos err) noexcept nogil:
    at_out[0] = at
    return err


cdef Pos _parse_all(
    Buf buf,
    const int64_t[:, ::1] index,
    const int64_t[::1] limits,
    const uint8_t[:, ::1] keys,
    const int64_t[::1] keylens,
    const int64_t[::1] keycols,
    const int64_t[::1] keykinds,
    uint64_t[:, ::1] ids,
    int8_t[::1] kind,
    int64_t[:, ::1] times,
    int8_t[::1] status,
    int64_t[:, ::1] name,
    int8_t[:, ::1] a_type,
    int64_t[:, ::1] a_off,
    int64_t[:, ::1] a_len,
    int64_t[:, ::1] a_int,
    int8_t[::1] reject,
    Pos* at_out,
) noexcept nogil:

    cdef Pos n = index.shape[0], i, p, end, at, s, e, nbytes
    cdef const int64_t* lim = &limits[0]
    cdef uint64_t tag, v
    cdef int f, w, r, k, col
    cdef int64_t n_attrs, ncols = a_type.shape[1], nkeys = keylens.shape[0]
    cdef Pos tid_len, sid_len
    cdef bint parent_bad, name_long
    cdef int8_t k_type[_MAX_KEYS]
    cdef Pos k_off[_MAX_KEYS]
    cdef Pos k_len[_MAX_KEYS]
    cdef int64_t k_int[_MAX_KEYS]
    cdef int8_t first_reject
    cdef Pos key_width = keys.shape[1]
    cdef const uint8_t* key_bytes = &keys[0, 0] if nkeys and key_width else NULL
    cdef const int64_t* key_lens = &keylens[0] if nkeys else NULL
    for i in range(n):
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
        first_reject = 0
        for col in range(ncols):
            a_type[i, col] = _T_NONE
        memset(k_type, 0, sizeof(k_type))
        tid_len = 0
        sid_len = 0
        n_attrs = 0
        parent_bad = False
        name_long = False
        while p < end:
            at = p
            p = read_varint(buf, p, end, &tag)
            if p < 0:
                return _fail(at_out, at, p)
            f = <int>(tag >> 3) if tag >> 3 < 1000 else 1000
            w = <int>(tag & 7)
            if f == 1 or f == 2 or f == 4 or f == 5 or f == 9 or f == 11 or f == 13 or f == 15:
                if w != 2:
                    return _fail(at_out, at, _E_FIELD_TYPE)
                s = read_len(buf, p, end, &e)
                if s < 0:
                    return _fail(at_out, at, s)
                p = e
                nbytes = e - s
                if f == 1:
                    tid_len = nbytes
                    ids[i, 0] = read_id(buf, s) if nbytes == 16 else 0
                    ids[i, 1] = read_id(buf, s + 8) if nbytes == 16 else 0
                elif f == 2:
                    sid_len = nbytes
                    ids[i, 2] = read_id(buf, s) if nbytes == 8 else 0
                elif f == 4:
                    ids[i, 3] = read_id(buf, s) if nbytes == 8 else 0
                    parent_bad = nbytes != 0 and nbytes != 8
                elif f == 5:
                    name[i, 0] = s
                    name[i, 1] = nbytes
                    name_long = nbytes > lim[1]
                elif f == 15:
                    while s < e:
                        at = s
                        s = read_varint(buf, s, e, &tag)
                        if s < 0:
                            return _fail(at_out, at, s)
                        if tag >> 3 == 3 and tag & 7 == 0:
                            s = read_varint(buf, s, e, &v)
                            if s < 0:
                                return _fail(at_out, at, s)
                            status[i] = enum8(v)
                        else:
                            s = skip_field(buf, s, e, <int>(tag & 7))
                            if s < 0:
                                return _fail(at_out, at, s)
                else:
                    if f == 9:
                        n_attrs += 1
                        if n_attrs > lim[0]:
                            r = _R_TOO_MANY_ATTRIBUTES
                        else:
                            r = scan_keyvalue(buf, s, e, lim, key_bytes, key_width, key_lens, nkeys,
                                              k_type, k_off, k_len, k_int, True)
                    else:
                        r = scan_attributes(buf, s, e, 3 if f == 11 else 4, lim)
                    if r < 0:
                        return _fail(at_out, at, r)
                    if r > 0 and first_reject == 0:
                        first_reject = <int8_t>r
            elif f == 6 or f == 7 or f == 8:
                if f == 6:
                    if w != 0:
                        return _fail(at_out, at, _E_FIELD_TYPE)
                    p = read_varint(buf, p, end, &v)
                    if p < 0:
                        return _fail(at_out, at, p)
                    kind[i] = enum8(v)
                else:
                    if w != 1:
                        return _fail(at_out, at, _E_FIELD_TYPE)
                    if end - p < 8:
                        return _fail(at_out, at, _E_TRUNCATED)
                    times[i, f - 7] = <int64_t>read_fixed64(buf, p)
                    p += 8
            else:
                p = skip_field(buf, p, end, w)
                if p < 0:
                    return _fail(at_out, at, p)
        # The first key of each column (in order of preference) whose latest value has the column's type.
        for k in range(nkeys):
            col = <int>keycols[k]
            if a_type[i, col] != _T_NONE or k_type[k] == _T_NONE:
                continue
            if keykinds[k] == _T_STRING and k_type[k] == _T_STRING:
                a_type[i, col] = _T_STRING
                a_off[i, col] = k_off[k]
                a_len[i, col] = k_len[k]
            elif keykinds[k] == _T_INT and k_type[k] != _T_STRING:
                a_type[i, col] = k_type[k]
                a_int[i, col] = k_int[k]
        # Reasons in field order (parent id 4, name 5, then attributes, events, links), the id checks last.
        if parent_bad:
            first_reject = _R_PARENT_ID
        elif name_long:
            first_reject = _R_VALUE_TOO_LONG
        if first_reject == 0:
            if tid_len != 16 or (ids[i, 0] == 0 and ids[i, 1] == 0):
                first_reject = _R_TRACE_ID
            elif sid_len != 8 or ids[i, 2] == 0:
                first_reject = _R_SPAN_ID
        reject[i] = first_reject
    return 0


def parse_spans(
    const uint8_t[::1] data,
    const int64_t[:, ::1] index,
    const int64_t[::1] limits,
    const uint8_t[:, ::1] keys,
    const int64_t[::1] keylens,
    const int64_t[::1] keycols,
    const int64_t[::1] keykinds,
    uint64_t[:, ::1] ids,
    int8_t[::1] kind,
    int64_t[:, ::1] times,
    int8_t[::1] status,
    int64_t[:, ::1] name,
    int8_t[:, ::1] a_type,
    int64_t[:, ::1] a_off,
    int64_t[:, ::1] a_len,
    int64_t[:, ::1] a_int,
    int8_t[::1] reject,
):
    """Fill the span columns from the byte ranges of ``index_spans``.

    ``ids`` is uint64[n, 4] = trace id high, trace id low, span id, parent span id (0 = root); ``times`` int64[n, 2]
    = start, end; ``name`` int64[n, 2] = offset, length. Wanted keys (``keys``, listed per column in order of
    preference) fill the attribute columns: the first key of a column whose latest value has the column's type
    (``keykinds``: T_STRING, or T_INT for int and bool values) wins. Returns (error, offset).
    """
    cdef Pos at = 0, err
    cdef Buf buf = &data[0] if data.shape[0] else NULL
    if keylens.shape[0] > _MAX_KEYS:
        raise ValueError("too many wanted keys")
    with nogil:
        err = _parse_all(buf, index, limits, keys, keylens, keycols, keykinds, ids, kind, times, status, name,
                         a_type, a_off, a_len, a_int, reject, &at)
    return err, at


cdef inline uint64_t fmix64(uint64_t h) noexcept nogil:
    """MurmurHash3's finalizer: every output bit depends on every input bit (the table slot uses the low bits)."""
    h ^= h >> 33
    h *= 0xFF51AFD7ED558CCDULL
    h ^= h >> 33
    h *= 0xC4CEB9FE1A85EC53ULL
    h ^= h >> 33
    return h


def intern_ranges(const uint8_t[::1] data, const int64_t[::1] offs, const int64_t[::1] lens,
                  Py_ssize_t max_probes=_MAX_PROBES):
    """Group equal byte ranges ``data[offs[i]:offs[i] + lens[i]]``: return (ids int32[n], firsts int64[m]) where
    ``ids[i]`` numbers the distinct strings in order of first appearance and ``firsts[j]`` is the index of the first
    range of string ``j``; or None when the input looks crafted to collide (a probe sequence past ``max_probes``), for
    the caller to intern with a dict instead. Exact: the table compares the bytes of ranges whose hashes match.
    The hash is seeded per process (``HASH_SEED``), so senders cannot aim strings at one slot.
    Raises ValueError for a range outside ``data``."""
    cdef Pos n = offs.shape[0], i, slot, mask, size = 16, m = 0, r, probes
    cdef uint64_t h
    cdef Buf buf = &data[0] if data.shape[0] else NULL
    cdef bint crafted = False
    if lens.shape[0] != n:
        raise ValueError("offs and lens differ in length")
    for i in range(n):
        if offs[i] < 0 or lens[i] < 0 or lens[i] > data.shape[0] - offs[i]:
            raise ValueError(f"range {i} is outside the data")
    while size < 2 * n:
        size *= 2
    mask = size - 1
    ids_arr = np.empty(n, np.int32)
    firsts_arr = np.empty(n, np.int64)
    table_arr = np.full(size, -1, np.int64)
    hashes_arr = np.empty(size, np.uint64)
    cdef int32_t[::1] ids = ids_arr
    cdef int64_t[::1] firsts = firsts_arr
    cdef int64_t[::1] table = table_arr
    cdef uint64_t[::1] hashes = hashes_arr
    cdef Pos j, o, ln
    with nogil:
        for i in range(n):
            o = offs[i]
            ln = lens[i]
            h = FNV_OFFSET ^ HASH_SEED
            for j in range(o, o + ln):
                h = (h ^ buf[j]) * FNV_PRIME
            h = fmix64(h ^ <uint64_t>ln ^ HASH_SEED)
            slot = <Pos>(h & <uint64_t>mask)
            probes = 0
            while True:
                probes += 1
                if probes > max_probes:
                    crafted = True
                    break
                r = table[slot]
                if r < 0:
                    table[slot] = m
                    hashes[slot] = h
                    firsts[m] = i
                    ids[i] = <int32_t>m
                    m += 1
                    break
                if hashes[slot] == h and lens[firsts[r]] == ln and (
                    ln == 0 or memcmp(buf + offs[firsts[r]], buf + o, ln) == 0
                ):
                    ids[i] = <int32_t>r
                    break
                slot = (slot + 1) & mask
            if crafted:
                break
    if crafted:
        return None
    return ids_arr, firsts_arr[:m]
