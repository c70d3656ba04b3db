"""Recorded telemetry as a stream of OTLP export requests: what ``rootward replay`` sends.

A source yields :class:`Request` objects (one Export*ServiceRequest message each, with the time of its latest event)
and counts what it could not read in an :class:`Issues`, per reason, with the first example of each: bad or partial
data is skipped and reported, never a crash. This module reads the files an OpenTelemetry Collector's file
exporter writes; the Nezha data set has its own reader (rootward/nezha.py) that yields the same requests.

File exporter formats (a file holds one signal, or all of them when one exporter serves several pipelines):

- ``format: json`` (the default): JSON lines, one ``{"resourceSpans": [...]}`` / ``resourceMetrics`` /
  ``resourceLogs`` object a line, in OTLP/JSON (hex trace and span ids, see receiver/otlp_json.py). A ``.gz`` file
  is read through gzip.
- ``format: proto``: each message is a 4-byte big-endian length, then a serialized TracesData / MetricsData /
  LogsData (the same wire format as the Export*ServiceRequest of its signal). The signal is not written down: it is
  read from each message's first item (:func:`proto_signal`), else from the file name when it says traces, metrics
  or logs.
"""

from __future__ import annotations

import gzip
import io
import json
import struct
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from rootward.receiver.errors import MalformedRequest
from rootward.receiver.otlp_json import hex_ids_to_base64
from rootward.receiver.queue import Signal

SIGNALS: tuple[Signal, ...] = ("traces", "metrics", "logs")
REQUEST_TYPES: dict[Signal, type[Message]] = {
    "traces": ExportTraceServiceRequest,
    "metrics": ExportMetricsServiceRequest,
    "logs": ExportLogsServiceRequest,
}
#: The top-level key of each signal's OTLP/JSON document (lowerCamelCase, or the proto field name).
_JSON_KEYS: dict[str, Signal] = {
    "resourceSpans": "traces",
    "resource_spans": "traces",
    "resourceMetrics": "metrics",
    "resource_metrics": "metrics",
    "resourceLogs": "logs",
    "resource_logs": "logs",
}
#: Longest proto message read from a file; past it the framing is taken as broken and the rest of the file skipped.
MAX_PROTO_MESSAGE = 64 * 2**20
#: Longest JSON line read; longer lines are skipped.
MAX_JSON_LINE = 64 * 2**20


@dataclass(slots=True)
class Request:
    """One export request to send: its signal, the message, its item count (spans, data points or log records)
    and ``time_ns``, the latest event time in it (Unix ns; 0 when it holds no timed item)."""

    signal: Signal
    message: Message
    items: int
    time_ns: int


@dataclass
class Issues:
    """What a source could not use as it was, per reason, with the first example of each reason: rows or messages
    ``skipped``; items sent with a ``caveat`` (a log's time taken from another column, a span sent without a kind);
    and files ``missing`` (e.g. a fault's trace minute absent from the data set)."""

    skipped: Counter[str] = field(default_factory=Counter)
    caveats: Counter[str] = field(default_factory=Counter)
    missing: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def skip(self, reason: str, example: str = "", n: int = 1) -> None:
        self.skipped[reason] += n
        self._example(reason, example)

    def caveat(self, reason: str, example: str = "", n: int = 1) -> None:
        self.caveats[reason] += n
        self._example(reason, example)

    def miss(self, reason: str, example: str = "") -> None:
        self.missing[reason] += 1
        self._example(reason, example)

    def total_skipped(self) -> int:
        return sum(self.skipped.values())

    def _example(self, reason: str, example: str) -> None:
        if example and reason not in self.examples:
            self.examples[reason] = example


# --- times ----------------------------------------------------------------------------------------------------------


def _points(metric: Any) -> Any:
    kind = metric.WhichOneof("data")
    return getattr(metric, kind).data_points if kind else ()


def items_and_time(signal: Signal, message: Any) -> tuple[int, int]:
    """(items, latest event time in Unix ns) of a request: span ends, log times (or observed times), point times."""
    items = latest = 0
    if signal == "traces":
        for rs in message.resource_spans:
            for ss in rs.scope_spans:
                items += len(ss.spans)
                latest = max(latest, max((s.end_time_unix_nano for s in ss.spans), default=0))
    elif signal == "logs":
        for rl in message.resource_logs:
            for sl in rl.scope_logs:
                items += len(sl.log_records)
                for r in sl.log_records:
                    latest = max(latest, r.time_unix_nano or r.observed_time_unix_nano)
    else:
        for rm in message.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    points = _points(m)
                    items += len(points)
                    latest = max(latest, max((p.time_unix_nano for p in points), default=0))
    return items, latest


def shift_times(signal: Signal, message: Any, offset_ns: int) -> None:
    """Move every timestamp of ``message`` by ``offset_ns``, in place (zero timestamps stay zero: unset)."""

    def moved(t: int) -> int:
        return max(0, t + offset_ns) if t else 0

    if not offset_ns:
        return
    if signal == "traces":
        for rs in message.resource_spans:
            for ss in rs.scope_spans:
                for s in ss.spans:
                    s.start_time_unix_nano = moved(s.start_time_unix_nano)
                    s.end_time_unix_nano = moved(s.end_time_unix_nano)
                    for e in s.events:
                        e.time_unix_nano = moved(e.time_unix_nano)
    elif signal == "logs":
        for rl in message.resource_logs:
            for sl in rl.scope_logs:
                for r in sl.log_records:
                    r.time_unix_nano = moved(r.time_unix_nano)
                    r.observed_time_unix_nano = moved(r.observed_time_unix_nano)
    else:
        for rm in message.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    for p in _points(m):
                        p.start_time_unix_nano = moved(p.start_time_unix_nano)
                        p.time_unix_nano = moved(p.time_unix_nano)
                        for x in p.exemplars:
                            x.time_unix_nano = moved(x.time_unix_nano)


def request(signal: Signal, message: Message) -> Request:
    items, latest = items_and_time(signal, message)
    return Request(signal, message, items, latest)


# --- the Collector's file exporter --------------------------------------------------------------------------------


def _open(path: Path) -> io.BufferedIOBase:
    return gzip.GzipFile(path, "rb") if path.suffix == ".gz" else path.open("rb")


def is_json(path: Path) -> bool:
    """True when ``path`` starts like a JSON document (a proto file's first byte is a length's top byte, never
    ``{``: that would be a message of 2 GB)."""
    with _open(path) as f:
        head = f.read(64).lstrip()
    return head[:1] == b"{"


def json_lines(path: Path, issues: Issues) -> Iterator[Request]:
    """The requests of an OTLP/JSON lines file; bad lines are skipped and counted (``json_line_bad``)."""
    with _open(path) as f:
        for number, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            where = f"{path.name}:{number}"
            if len(raw) > MAX_JSON_LINE:
                issues.skip("json_line_too_long", f"{where}: {len(raw)} bytes")
                continue
            try:
                doc = json.loads(raw)
                if not isinstance(doc, dict):
                    raise ValueError("not a JSON object")
                signals = {_JSON_KEYS[k] for k in doc if k in _JSON_KEYS}
                if len(signals) != 1:
                    raise ValueError("no resourceSpans, resourceMetrics or resourceLogs key")
                signal = signals.pop()
                hex_ids_to_base64(doc)
                message = REQUEST_TYPES[signal]()
                json_format.ParseDict(doc, message, ignore_unknown_fields=True, max_recursion_depth=64)
            except (ValueError, RecursionError, TypeError, MalformedRequest, json_format.ParseError) as e:
                issues.skip("json_line_bad", f"{where}: {str(e)[:200]}")
                continue
            yield request(signal, message)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def _fields(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(field number, wire type, value bytes for length-delimited fields) of a message's top level."""
    pos = 0
    while pos < len(data):
        tag, pos = _varint(data, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            _, pos = _varint(data, pos)
            yield number, wire, b""
        elif wire == 1:
            pos += 8
            yield number, wire, b""
        elif wire == 2:
            size, pos = _varint(data, pos)
            yield number, wire, data[pos : pos + size]
            pos += size
        elif wire == 5:
            pos += 4
            yield number, wire, b""
        else:
            raise ValueError(f"wire type {wire}")
        if pos > len(data):
            raise ValueError("truncated field")


def _first(data: bytes, number: int) -> bytes | None:
    return next((v for n, w, v in _fields(data) if n == number and w == 2), None)


def proto_signal(data: bytes) -> Signal | None:
    """The signal of a serialized TracesData / MetricsData / LogsData, from its first item's fields: a Span has
    fixed64 start/end times (fields 7, 8), a varint kind (6) or a parent id (4); a LogRecord a fixed64 time (1 or
    11) or a varint severity (2); a Metric a length-delimited data field (5, 7, 9, 10, 11). None when there is no
    item or the bytes are not protobuf."""
    try:
        resource = _first(data, 1)
        scope = _first(resource, 2) if resource is not None else None
        item = _first(scope, 2) if scope is not None else None
        if item is None:
            return None
        fields = {(n, w) for n, w, _ in _fields(item)}
    except ValueError:
        return None
    if fields & {(7, 1), (8, 1), (6, 0), (4, 2)}:
        return "traces"
    if (1, 1) in fields or (11, 1) in fields or (2, 0) in fields:
        return "logs"
    if any((n, 2) in fields for n in (5, 7, 9, 10, 11)):
        return "metrics"
    return None


def _name_signal(path: Path) -> Signal | None:
    name = path.name.lower()
    words: dict[Signal, tuple[str, ...]] = {"traces": ("trace", "span"), "metrics": ("metric",), "logs": ("log",)}
    hits = [signal for signal, said in words.items() if any(w in name for w in said)]
    return hits[0] if len(hits) == 1 else None


def proto_messages(path: Path, issues: Issues) -> Iterator[Request]:
    """The requests of a length-prefixed proto file. A truncated tail is counted (``proto_truncated``); a length
    past :data:`MAX_PROTO_MESSAGE` ends the file (``proto_framing_bad``); a message that does not parse is skipped
    (``proto_message_bad``)."""
    hint = _name_signal(path)
    with _open(path) as f:
        number = 0
        while head := f.read(4):
            number += 1
            where = f"{path.name}: message {number}"
            if len(head) < 4:
                issues.skip("proto_truncated", f"{where}: {len(head)} bytes of a 4-byte length")
                return
            (size,) = struct.unpack(">I", head)
            if size > MAX_PROTO_MESSAGE:
                issues.skip("proto_framing_bad", f"{where}: length {size} (rest of the file skipped)")
                return
            data = f.read(size)
            if len(data) < size:
                issues.skip("proto_truncated", f"{where}: {len(data)} of {size} bytes")
                return
            signal = proto_signal(data) or hint  # a file of one exporter in several pipelines mixes signals
            if signal is None:
                if data:
                    issues.skip("proto_signal_unknown", f"{where}: no item tells its signal")
                continue
            message = REQUEST_TYPES[signal]()
            try:
                message.ParseFromString(data)
            except DecodeError as e:
                issues.skip("proto_message_bad", f"{where}: {e}")
                continue
            yield request(signal, message)


def otlp_file(path: Path, issues: Issues) -> Iterator[Request]:
    """The requests of a file exporter's file, JSON lines or proto (told apart by the first byte)."""
    yield from (json_lines(path, issues) if is_json(path) else proto_messages(path, issues))
