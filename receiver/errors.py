"""Receiver errors, and the one place they map to OTLP wire codes.

    ReceiverError
    ├── PermanentError        the sender must not retry: gRPC INVALID_ARGUMENT, HTTP 400
    │   ├── MalformedRequest  not OTLP: bad protobuf or JSON, bad gzip
    │   │   └── UnsupportedMediaType  neither protobuf nor JSON (HTTP 415)
    │   └── LimitExceeded     over a configured limit: request or decompressed size, attributes, nesting
    │   └── InternalError     a bug met this request (logged with its traceback): gRPC INTERNAL, HTTP 500
    ├── Unauthenticated       missing or wrong bearer token: gRPC UNAUTHENTICATED, HTTP 401
    └── RetryableError        try again later: gRPC RESOURCE_EXHAUSTED with RetryInfo, HTTP 429/503 + Retry-After
        ├── QueueFull         the pipeline queue is full (backpressure)
        ├── SlowSender        an HTTP body did not arrive within body_timeout_s (HTTP 503)
        └── ShuttingDown      the receiver is draining (gRPC UNAVAILABLE, HTTP 503)

Follows the Collector's receiver/otlpreceiver/internal/errors/errors.go and the OTLP specification's
"Failures" section: only retryable codes carry a retry delay.
"""

from __future__ import annotations

import grpc


class ReceiverError(Exception):
    """Base of the receiver's errors. ``reason`` labels the refusal in the requests and items metrics."""

    reason = "error"


class PermanentError(ReceiverError):
    """The request can never succeed; senders drop it."""


class MalformedRequest(PermanentError):
    reason = "malformed"


class UnsupportedMediaType(MalformedRequest):
    reason = "unsupported_media_type"


class LimitExceeded(PermanentError):
    reason = "limit"


class InternalError(PermanentError):
    reason = "internal"


class Unauthenticated(ReceiverError):
    reason = "unauthenticated"


class RetryableError(ReceiverError):
    """The request may succeed later; ``retry_after`` is the suggested delay in seconds."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class QueueFull(RetryableError):
    reason = "queue_full"


class SlowSender(RetryableError):
    reason = "body_timeout"


class ShuttingDown(RetryableError):
    reason = "shutting_down"


def grpc_code(err: ReceiverError) -> grpc.StatusCode:
    """The gRPC status for ``err``."""
    if isinstance(err, ShuttingDown | SlowSender):
        return grpc.StatusCode.UNAVAILABLE
    if isinstance(err, RetryableError):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    if isinstance(err, Unauthenticated):
        return grpc.StatusCode.UNAUTHENTICATED
    if isinstance(err, InternalError):
        return grpc.StatusCode.INTERNAL
    return grpc.StatusCode.INVALID_ARGUMENT


def http_status(err: ReceiverError) -> int:
    """The HTTP status for ``err``."""
    if isinstance(err, ShuttingDown | SlowSender):
        return 503
    if isinstance(err, RetryableError):
        return 429
    if isinstance(err, Unauthenticated):
        return 401
    if isinstance(err, UnsupportedMediaType):
        return 415
    if isinstance(err, InternalError):
        return 500
    return 400
