"""Decoding helpers shared by the three signals: limits, AnyValue conversion, resource and string interning."""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as ResourcePb

from rootward.model import AttrValue, Resource
from rootward.receiver import _wire
from rootward.receiver.errors import LimitExceeded, MalformedRequest

B = TypeVar("B")


@dataclass(frozen=True, slots=True)
class Decoded(Generic[B]):
    """The outcome of decoding one request: the accepted items, and how many were refused and why."""

    batch: B
    rejected: int
    message: str


def summarize(reasons: Counter[str], what: str) -> str:
    """'3 data points: too many attributes (max 128); 1 data point: ...' from reason counts."""
    return "; ".join(f"{count} {what}: {reason}" for reason, count in reasons.most_common())


#: The deepest AnyValue nesting the wire kernels support (their stack is sized for it).
MAX_DEPTH = 64


@dataclass(frozen=True, slots=True)
class Limits:
    """Limits applied while decoding (``receiver.limits`` in rootward.config documents them)."""

    max_attributes: int = 128
    max_value_bytes: int = 65536
    max_depth: int = 32
    max_items: int = 50_000

    def __post_init__(self) -> None:
        for name in ("max_attributes", "max_value_bytes", "max_depth", "max_items"):
            if not 0 < getattr(self, name) < 2**62:
                raise ValueError(f"{name} must be a positive integer, not {getattr(self, name)!r}")
        if self.max_depth > MAX_DEPTH:
            raise ValueError(f"max_depth must be at most {MAX_DEPTH}, not {self.max_depth}")

    def as_array(self) -> np.ndarray:
        return np.array([self.max_attributes, self.max_value_bytes, self.max_depth], np.int64)


#: Reject reasons: what the sender is told when an item is refused.
REJECT_REASONS = {
    _wire.R_TRACE_ID: "trace_id must be 16 bytes and not all zero",
    _wire.R_SPAN_ID: "span_id must be 8 bytes and not all zero",
    _wire.R_PARENT_ID: "parent_span_id must be empty or 8 bytes",
    _wire.R_TOO_MANY_ATTRIBUTES: "too many attributes",
    _wire.R_VALUE_TOO_LONG: "attribute value or name too long",
    _wire.R_TOO_DEEP: "AnyValue nested too deep",
}

WIRE_ERRORS = {
    _wire.E_TRUNCATED: "truncated field",
    _wire.E_VARINT_TOO_LONG: "varint longer than 10 bytes",
    _wire.E_LENGTH: "length-delimited field runs past the end of its message",
    _wire.E_WIRE_TYPE: "invalid wire type",
    _wire.E_FIELD_TYPE: "known field with the wrong wire type",
}


def as_int64(values: list[int] | list[float | int]) -> np.ndarray:
    """Unsigned 64-bit wire values (times, counts) as an int64 column; values past 2**63 wrap, as a C cast would,
    instead of raising OverflowError on a hostile sender's input."""
    return np.array(values, np.uint64).view(np.int64)


def too_many(count: int | None, what: str, limits: Limits) -> LimitExceeded:
    """The LimitExceeded for a request holding more than ``max_items`` items (``count`` when it is known)."""
    held = f"{count} {what}, more than" if count is not None else f"more {what} than"
    return LimitExceeded(f"request holds {held} the limit of {limits.max_items} (max_items_per_request)")


def wire_error(code: int, offset: int, what: str) -> MalformedRequest:
    """A MalformedRequest naming the wire error and where it was found."""
    return MalformedRequest(f"invalid {what} protobuf: {WIRE_ERRORS.get(code, 'malformed')} at byte {offset}")


def reject_message(reasons: np.ndarray, limits: Limits, what: str) -> str:
    """One line saying how many items of each reason were refused, e.g. '3 spans: too many attributes (max 128)'."""
    parts = []
    codes, counts = np.unique(reasons[reasons > 0], return_counts=True)
    for code, count in zip(codes.tolist(), counts.tolist(), strict=True):
        text = REJECT_REASONS.get(code, "invalid")
        if code == _wire.R_TOO_MANY_ATTRIBUTES:
            text += f" (max {limits.max_attributes})"
        elif code == _wire.R_VALUE_TOO_LONG:
            text += f" (max {limits.max_value_bytes} bytes)"
        elif code == _wire.R_TOO_DEEP:
            text += f" (max depth {limits.max_depth})"
        parts.append(f"{count} {what}: {text}")
    return "; ".join(parts)


def any_value(value: AnyValue, limits: Limits, depth: int = 1) -> AttrValue:
    """Convert an AnyValue to a Python value, enforcing the value-length and nesting limits.

    Raises:
        LimitExceeded: a string or bytes value is too long, or arrays/maps nest too deep.
    """
    if depth > limits.max_depth:
        raise LimitExceeded(f"AnyValue nested too deep (max depth {limits.max_depth})")
    which = value.WhichOneof("value")
    if which == "string_value" or which == "bytes_value":
        raw = getattr(value, which)
        size = len(raw) if which == "bytes_value" or len(raw) * 4 <= limits.max_value_bytes else len(raw.encode())
        if size > limits.max_value_bytes:
            raise LimitExceeded(f"attribute value too long (max {limits.max_value_bytes} bytes)")
        return raw  # type: ignore[no-any-return]
    if which == "array_value":
        return tuple(any_value(v, limits, depth + 1) for v in value.array_value.values)
    if which == "kvlist_value":
        return attributes(value.kvlist_value.values, limits, depth + 1)
    if which is None:
        return None
    return getattr(value, which)  # type: ignore[no-any-return]


def attributes(kvs: Sequence[KeyValue], limits: Limits, depth: int = 1) -> dict[str, AttrValue]:
    """Convert repeated KeyValue to a dict, enforcing the attribute-count limit.

    Raises:
        LimitExceeded: too many attributes, or a value over the limits.
    """
    if len(kvs) > limits.max_attributes:
        raise LimitExceeded(f"too many attributes: {len(kvs)} (max {limits.max_attributes})")
    out = {}
    for kv in kvs:
        key = kv.key
        if len(key) * 4 > limits.max_value_bytes and len(key.encode()) > limits.max_value_bytes:
            raise LimitExceeded(f"attribute key too long (max {limits.max_value_bytes} bytes)")
        out[key] = any_value(kv.value, limits, depth)
    return out


M = TypeVar("M", bound=Message)


class UpbDecoder(Generic[M, B]):
    """The shape of the metric and log decoders: parse with upb (``request_type``), then ``decode_message``, which
    the OTLP/JSON path calls directly. One per receiver: it holds the resource cache."""

    request_type: type[M]
    what = "request"

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self.resources = ResourceCache(self.limits)

    def decode(self, data: bytes) -> Decoded[B]:
        """Decode ``data``.

        Raises:
            MalformedRequest: not a request of ``request_type``.
            LimitExceeded: a resource's attributes break a limit.
        """
        try:
            req = self.request_type.FromString(data)
        except DecodeError as e:
            raise MalformedRequest(f"invalid {self.what} protobuf: {e}") from e
        return self.decode_message(req)

    def decode_message(self, req: M) -> Decoded[B]:
        """Decode an already parsed request."""
        raise NotImplementedError


class ResourceCache:
    """Interns resources by their serialized bytes, so a resource seen before costs one dict lookup.

    Bounded (least recently used entries are evicted) because resource bytes come from untrusted senders.
    """

    #: Resources larger than this (serialized) are decoded each time instead of cached, so the cache holds at most
    #: max_entries * MAX_CACHED_BYTES of input (16 MiB by default) whatever senders send.
    MAX_CACHED_BYTES = 4096

    def __init__(self, limits: Limits, max_entries: int = 4096) -> None:
        self._limits = limits
        self._max = max_entries
        self._cache: OrderedDict[bytes, Resource] = OrderedDict()
        self._lock = threading.Lock()  # requests decode concurrently in the servers' threads

    def get(self, raw: bytes) -> Resource:
        """The Resource serialized in ``raw``.

        Raises:
            MalformedRequest: ``raw`` is not a Resource.
            LimitExceeded: its attributes break a limit.
        """
        with self._lock:
            found = self._cache.get(raw)
            if found is not None:
                self._cache.move_to_end(raw)
                return found
        try:
            pb = ResourcePb.FromString(raw)
        except Exception as e:
            raise MalformedRequest(f"invalid resource: {e}") from e
        resource = self.from_message(pb)
        if len(raw) > self.MAX_CACHED_BYTES:
            return resource
        with self._lock:
            self._cache[raw] = resource
            if len(self._cache) > self._max:
                self._cache.popitem(last=False)
        return resource

    def from_message(self, pb: ResourcePb) -> Resource:
        """A Resource from its parsed message (the limits apply)."""
        return Resource(attributes(pb.attributes, self._limits))


def intern_ranges(
    data: bytes, offs: np.ndarray, lens: np.ndarray, strings: list[str], max_probes: int = 64
) -> np.ndarray:
    """Intern the UTF-8 byte ranges ``data[offs[i]:offs[i] + lens[i]]`` into ``strings``; return their ids (int32).

    Equal ranges get one id (exactly: the kernel compares bytes, not only hashes); each distinct string is decoded
    once, with replacement of invalid UTF-8. Input crafted to collide in the kernel's table goes through a dict.
    """
    base = len(strings)
    found = _wire.intern_ranges(data, offs, lens, max_probes)
    if found is None:
        table: dict[bytes, int] = {}
        ids = np.empty(len(offs), np.int32)
        for i, (o, n) in enumerate(zip(offs.tolist(), lens.tolist(), strict=True)):
            chunk = data[o : o + n]
            idx = table.get(chunk)
            if idx is None:
                idx = table[chunk] = len(strings)
                strings.append(chunk.decode("utf-8", "replace"))
            ids[i] = idx
        return ids
    ids, firsts = found
    for r in firsts.tolist():
        o = int(offs[r])
        strings.append(data[o : o + int(lens[r])].decode("utf-8", "replace"))
    return ids + base if base else ids


def intern(values: Iterable[str], strings: list[str], table: dict[str, int]) -> np.ndarray:
    """Intern Python strings into ``strings`` (``table`` maps each to its id); return the ids."""
    out = []
    for v in values:
        idx = table.get(v)
        if idx is None:
            idx = table[v] = len(strings)
            strings.append(v)
        out.append(idx)
    return np.array(out, np.int32)
