"""The receiver's part of the configuration (``receiver.*``: listeners, TLS, sender auth, the limits on what a
request may hold, the queue) and the listener check ``Config`` runs across sections (rootward/config.py)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import Field, SecretStr, model_validator

from rootward.config_section import _Section


class Listen(_Section):
    """Where a server listens."""

    host: str = "0.0.0.0"
    """Interface to bind. 0.0.0.0 so the node's Collector can reach the sidecar; 127.0.0.1 for local use."""
    port: int = Field(default=0, ge=0, le=65535)
    """TCP port; 0 picks a free port (tests, the demo)."""


class TLS(_Section):
    """Optional TLS for both OTLP servers."""

    cert_file: Path | None = None
    """PEM certificate chain. TLS is on when this and ``key_file`` are set."""
    key_file: Path | None = None
    """PEM private key."""

    @model_validator(mode="after")
    def _both_or_neither(self) -> TLS:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("set both cert_file and key_file, or neither")
        return self

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None


class Auth(_Section):
    """Optional bearer-token authentication of OTLP senders."""

    tokens: list[SecretStr] = Field(default_factory=list)
    """Accepted tokens (``authorization: Bearer <token>``). Empty: no authentication. Several allow rotation."""


class Limits(_Section):
    """Limits that keep hostile or broken senders from exhausting memory. Over a limit: INVALID_ARGUMENT / 400."""

    max_request_bytes: int = Field(default=8 * 2**20, gt=0)
    """Largest HTTP body as received (compressed) and largest gRPC message after decompression, in bytes. 8 MiB:
    a Collector batch of ~20k spans (the Collector's own gRPC receiver allows 4 MiB)."""
    max_decompressed_bytes: int = Field(default=32 * 2**20, gt=0)
    """Largest request after decompression, in bytes; refuses gzip bombs. On gRPC, grpc-core enforces it."""
    max_json_bytes: int = Field(default=8 * 2**20, gt=0)
    """Largest OTLP/JSON request after decompression, in bytes. JSON decodes ~50x slower than protobuf, so it gets
    a lower bound; Collectors send protobuf."""
    max_items_per_request: int = Field(default=50_000, gt=0)
    """Most spans, data points or log records (and resources) in one request; bounds the memory one request can
    take, whatever its encoding (an empty span is 2 bytes on the wire)."""
    max_attributes: int = Field(default=128, gt=0)
    """Most attributes on one span, event, link, data point, log record or resource (the OTel SDK's default)."""
    max_value_bytes: int = Field(default=64 * 2**10, gt=0)
    """Longest attribute key or string/bytes value, in bytes. 64 KiB leaves room for stack traces."""
    max_depth: int = Field(default=32, gt=0, le=64)
    """Deepest nesting of AnyValue arrays and key-value lists. An everyday Pod as the Collector's k8sobjects receiver
    sends it in watch mode (its managedFields, the service-account token's projected volume) nests 13 deep; 32
    leaves room for custom resources and still stops a hostile payload long before the decoder's recursion would."""
    body_timeout_s: float = Field(default=30.0, gt=0)
    """How long an HTTP sender may take to send its body; slower senders get 408 (and cannot hold a slot)."""


class Queue(_Section):
    """The bounded queue between the receiver and the pipeline (backpressure)."""

    max_items: int = Field(default=200_000, gt=0)
    """Spans + data points + log records waiting for the pipeline. Past it, senders get RESOURCE_EXHAUSTED / 429."""
    retry_after_s: float = Field(default=1.0, gt=0)
    """Delay suggested to senders when the queue is full (RetryInfo / Retry-After)."""
    drain_timeout_s: float = Field(default=10.0, ge=0)
    """How long shutdown waits for queued batches to reach the pipeline before counting them as dropped."""


class Receiver(_Section):
    """The OTLP receiver."""

    grpc: Listen = Listen(port=4317)
    """OTLP/gRPC listener (TraceService, MetricsService, LogsService)."""
    http: Listen = Listen(port=4318)
    """OTLP/HTTP listener (/v1/traces, /v1/metrics, /v1/logs)."""
    tls: TLS = TLS()
    auth: Auth = Auth()
    limits: Limits = Limits()
    queue: Queue = Queue()
    grpc_workers: int = Field(default=8, gt=0)
    """Threads serving gRPC calls. Decoding holds the GIL, so more threads add concurrency, not throughput."""
    max_concurrent_requests: int = Field(default=64, gt=0)
    """Requests in progress per transport; past it gRPC answers RESOURCE_EXHAUSTED and HTTP 503 (both retried)."""


def same_socket(a: str, b: str) -> bool:
    """Whether listening on hosts ``a`` and ``b`` with one port would clash: the same address, or an unspecified
    one (every address) of the same family, or IPv6's, which takes IPv4's too (dual stack). A host name other than
    localhost cannot be told here: no clash."""
    x, y = _address(a), _address(b)
    if x is None or y is None:
        return False
    if x == y:
        return True
    if x.version == y.version:
        return x.is_unspecified or y.is_unspecified
    return (x if x.version == 6 else y).is_unspecified


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    host = {"": "0.0.0.0", "localhost": "127.0.0.1"}.get(host, host).strip("[]")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None
