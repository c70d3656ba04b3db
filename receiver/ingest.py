"""What both OTLP transports do with a request: authenticate, bound, decompress, decode, queue, and count.

The gRPC and HTTP servers only translate their protocol to these calls and the raised errors back to status codes
(``errors.grpc_code`` / ``errors.http_status``).
"""

from __future__ import annotations

import hmac
import json
import logging
import time
import zlib
from dataclasses import dataclass
from typing import Literal

from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue

from rootward import config
from rootward.model import LogBatch, MetricBatch, SpanBatch
from rootward.receiver._common import MAX_DEPTH, Decoded, Limits
from rootward.receiver.errors import InternalError, LimitExceeded, MalformedRequest, ReceiverError, Unauthenticated
from rootward.receiver.logs import LogDecoder
from rootward.receiver.metrics import MetricDecoder
from rootward.receiver.otlp_json import hex_ids_to_base64
from rootward.receiver.queue import BatchQueue, Signal
from rootward.receiver.traces import TraceDecoder
from rootward.telemetry import Telemetry

logger = logging.getLogger(__name__)

Transport = Literal["grpc", "http"]
_REQUEST_TYPES: dict[str, type[Message]] = {
    "traces": ExportTraceServiceRequest,
    "metrics": ExportMetricsServiceRequest,
    "logs": ExportLogsServiceRequest,
}
_ITEM_NAMES = {"traces": "spans", "metrics": "data points", "logs": "log records"}

#: Messages deep an OTLP/JSON request may nest: each AnyValue level is three (AnyValue, KeyValueList, KeyValue),
#: under the request's own five; protobuf's default 64 refused a log body 20 levels deep before the limit of
#: receiver.limits.max_depth (up to MAX_DEPTH) could say so.
_JSON_DEPTH = 3 * MAX_DEPTH + 8


def response_message(signal: Signal, rejected: int, message: str) -> Message:
    """The Export*ServiceResponse for ``signal``, with partial success when items were refused."""
    if signal == "traces":
        traces = ExportTraceServiceResponse()
        if rejected:
            traces.partial_success.rejected_spans = rejected
            traces.partial_success.error_message = message
        return traces
    if signal == "metrics":
        metrics = ExportMetricsServiceResponse()
        if rejected:
            metrics.partial_success.rejected_data_points = rejected
            metrics.partial_success.error_message = message
        return metrics
    logs = ExportLogsServiceResponse()
    if rejected:
        logs.partial_success.rejected_log_records = rejected
        logs.partial_success.error_message = message
    return logs


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the sender is told on success: items refused (partial success) and why."""

    accepted: int
    rejected: int
    message: str


class Ingest:
    """Shared request handling; thread-safe for concurrent requests (decoders keep only a resource cache)."""

    def __init__(self, cfg: config.Receiver, queue: BatchQueue, telemetry: Telemetry) -> None:
        self.cfg = cfg
        self.queue = queue
        self.telemetry = telemetry
        c = cfg.limits
        limits = Limits(c.max_attributes, c.max_value_bytes, c.max_depth, c.max_items_per_request)
        self.traces = TraceDecoder(limits)
        self.metrics = MetricDecoder(limits)
        self.logs = LogDecoder(limits)
        self._tokens = [t.get_secret_value().encode() for t in cfg.auth.tokens]

    def warm_up(self) -> None:
        """Decode a one-span request that takes every kernel's path, so that the first real request finds the
        decoder's modules loaded and its tables built."""
        request = ExportTraceServiceRequest()
        spans = request.resource_spans.add().scope_spans.add().spans
        span = spans.add(trace_id=b"\x01" * 16, span_id=b"\x01" * 8, name="warm-up")
        span.attributes.add(key="server.address", value=AnyValue(string_value="x"))
        span.events.add(name="e").attributes.add(key="a", value=AnyValue(array_value=ArrayValue(values=[AnyValue()])))
        self.traces.decode(request.SerializeToString())

    def authorize(self, header: str | None) -> None:
        """Check an ``authorization`` header against the configured tokens (constant time per token).

        Raises:
            Unauthenticated: tokens are configured and the header is missing or matches none.
        """
        if not self._tokens:
            return
        if not header:
            raise Unauthenticated("missing authorization header (expected 'Bearer <token>')")
        scheme, _, credentials = header.strip().partition(" ")
        given = credentials.strip().encode() if scheme.lower() == "bearer" else b""
        ok = False
        for token in self._tokens:  # every token is compared, so the time does not tell which one was close
            ok |= hmac.compare_digest(given, token)
        if not ok:
            raise Unauthenticated("invalid bearer token")

    def check_size(self, size: int, what: str = "request") -> None:
        """Raises LimitExceeded when a body of ``size`` bytes is over ``max_request_bytes``."""
        limit = self.cfg.limits.max_request_bytes
        if size > limit:
            raise LimitExceeded(f"{what} of {size} bytes is over the limit of {limit} bytes (max_request_bytes)")

    def decompress(self, body: bytes, encoding: str) -> bytes:
        """Undo a Content-Encoding (gzip, deflate or identity), refusing output over ``max_decompressed_bytes``.

        Raises:
            MalformedRequest: unknown encoding or corrupt data.
            LimitExceeded: the output would be too large (a decompression bomb).
        """
        encoding = encoding.strip().lower()
        if encoding in ("", "identity"):
            return body
        if encoding == "gzip":
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            d = zlib.decompressobj()
        else:
            raise MalformedRequest(f"unsupported content-encoding {encoding!r} (use gzip, deflate or identity)")
        limit = self.cfg.limits.max_decompressed_bytes
        chunks: list[bytes] = []
        size = 0
        rest = body
        while True:  # a gzip body may hold several members, one after the other
            try:
                chunk = d.decompress(rest, limit + 1 - size)
            except zlib.error as e:
                raise MalformedRequest(f"invalid {encoding} body: {e}") from e
            size += len(chunk)
            chunks.append(chunk)
            if size > limit or d.unconsumed_tail:
                raise LimitExceeded(f"decompressed body is over the limit of {limit} bytes (max_decompressed_bytes)")
            if not d.eof:
                raise MalformedRequest(f"truncated {encoding} body")
            rest = d.unused_data
            if not rest:
                return b"".join(chunks)
            if encoding != "gzip":
                raise MalformedRequest(f"{len(rest)} bytes after the end of the {encoding} body")
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)

    def record(self, transport: Transport, signal: Signal, result: Outcome | ReceiverError | str) -> None:
        """Count one request by its result: ok, partial, the error's reason, or a label of the transport's own
        (e.g. client_disconnected). The servers call this once for every export request they read."""
        if isinstance(result, str):
            self.telemetry.requests.labels(transport, signal, result).inc()
            return
        if isinstance(result, ReceiverError):
            self.telemetry.requests.labels(transport, signal, result.reason).inc()
            return
        label = "partial" if result.rejected else "ok"
        self.telemetry.requests.labels(transport, signal, label).inc()

    def export_body(self, signal: Signal, body: bytes, encoding: str, fmt: Literal["proto", "json"]) -> Outcome:
        """Decompress an HTTP body per its Content-Encoding, then :meth:`export` it (both off the event loop)."""
        return self.export(signal, self.decompress(body, encoding), fmt)

    def export(self, signal: Signal, data: bytes, fmt: Literal["proto", "json"]) -> Outcome:
        """Decode ``data`` and queue it; return the outcome for the sender.

        Items are counted here (accepted, or refused with the reason). Raises a ReceiverError for the transport
        to map to a status; an unexpected exception (a bug) is logged with its traceback and raised as
        InternalError, so the request is still answered and counted.
        """
        try:
            return self._export(signal, data, fmt)
        except ReceiverError:
            raise
        except Exception as e:
            logger.exception("unexpected error decoding a %s request of %d bytes", signal, len(data))
            raise InternalError(f"internal error decoding the request ({type(e).__name__}); it was logged") from e

    def _export(self, signal: Signal, data: bytes, fmt: Literal["proto", "json"]) -> Outcome:
        started = time.perf_counter()
        message = self._parse_json(signal, data) if fmt == "json" else None
        decoded: Decoded[SpanBatch] | Decoded[MetricBatch] | Decoded[LogBatch]
        if signal == "traces":
            decoded = self.traces.decode(message.SerializeToString() if message is not None else data)
        elif signal == "metrics":
            decoded = self.metrics.decode_message(message) if message is not None else self.metrics.decode(data)  # type: ignore[arg-type]
        else:
            decoded = self.logs.decode_message(message) if message is not None else self.logs.decode(data)  # type: ignore[arg-type]
        self.telemetry.decode_seconds.labels(signal).observe(time.perf_counter() - started)
        items = self.telemetry.items
        what = _ITEM_NAMES[signal]
        if decoded.rejected:
            items.labels(signal, "refused", "limit").inc(decoded.rejected)
        accepted = len(decoded.batch)
        if decoded.rejected and not accepted:
            raise LimitExceeded(f"all {decoded.rejected} {what} refused: {decoded.message}")
        if accepted:
            try:
                self.queue.put(signal, decoded.batch)
            except ReceiverError as e:
                items.labels(signal, "refused", e.reason).inc(accepted)
                raise
            items.labels(signal, "accepted", "").inc(accepted)
        return Outcome(accepted, decoded.rejected, decoded.message)

    def _parse_json(self, signal: Signal, data: bytes) -> Message:
        limit = self.cfg.limits.max_json_bytes
        if len(data) > limit:
            raise LimitExceeded(
                f"OTLP/JSON request of {len(data)} bytes is over the limit of {limit} bytes (max_json_bytes); "
                "send large batches as protobuf"
            )
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError) as e:
            raise MalformedRequest(f"invalid JSON: {e}") from e
        if not isinstance(doc, dict):
            raise MalformedRequest("invalid OTLP/JSON: the body must be a JSON object")
        hex_ids_to_base64(doc)
        message = _REQUEST_TYPES[signal]()
        try:
            json_format.ParseDict(doc, message, ignore_unknown_fields=True, max_recursion_depth=_JSON_DEPTH)
        except (json_format.ParseError, RecursionError, ValueError, TypeError) as e:
            raise MalformedRequest(f"invalid OTLP/JSON {signal} request: {e}") from e
        return message
