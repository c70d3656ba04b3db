"""Realistic OTLP trace requests, shaped like what an OpenTelemetry SDK (through a Collector or rotel) sends.

Why hand-built protobufs and not the SDK itself: the benchmarks need many distinct requests of an exact size
(500 spans), reproducibly (seeded), without paying the SDK's span-creation cost in the measuring process. The shape
follows the SDK and the semantic conventions: one ResourceSpans per service with the resource attributes the
k8sattributes processor adds, one ScopeSpans per instrumentation library, server spans with the HTTP server
attributes, client spans with ``url.full`` / ``peer.service``, some database and messaging spans, random 16/8-byte
ids, and an exception event on error spans. Python's ``random`` with a seed keeps runs comparable.
"""

from __future__ import annotations

import random

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span, Status

# service -> (node, downstream HTTP services, database system or "", messaging role or "")
SERVICES: dict[str, tuple[str, tuple[str, ...], str, str]] = {
    "frontend": ("node-a", ("cart", "checkout"), "", ""),
    "cart": ("node-a", (), "redis", ""),
    "checkout": ("node-b", ("payment",), "postgresql", "publish"),
    "payment": ("node-b", (), "postgresql", ""),
    "email": ("node-a", (), "", "process"),
}
ROUTES = ("/api/cart", "/api/checkout", "/api/products/{id}", "/api/orders/{id}", "/healthz", "/api/pay")
METHODS = ("GET", "GET", "GET", "POST", "PUT", "DELETE")
STATUSES = (200, 200, 200, 200, 200, 201, 204, 404, 500, 503)
#: Pod IPs of the callers a server sees: a cluster has a bounded set of pods, so peer addresses repeat.
CALLER_IPS = tuple(f"10.42.{i // 8}.{17 + i * 3}" for i in range(24))
SDK_SCOPES = ("opentelemetry.instrumentation.flask", "opentelemetry.instrumentation.requests")


def _kv(key: str, value: str | int | bool) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _resource_attributes(service: str, node: str, rng: random.Random) -> list[KeyValue]:
    pod = f"{service}-{rng.randrange(16**8):08x}-{rng.randrange(16**5):05x}"
    return [
        _kv("service.name", service),
        _kv("service.namespace", "shop"),
        _kv("service.version", "1.4.2"),
        _kv("service.instance.id", f"{rng.getrandbits(128):032x}"),
        _kv("k8s.namespace.name", "shop"),
        _kv("k8s.pod.name", pod),
        _kv("k8s.node.name", node),
        _kv("k8s.deployment.name", service),
        _kv("telemetry.sdk.language", "python"),
        _kv("telemetry.sdk.name", "opentelemetry"),
    ]


def _span(rng: random.Random, kind: int, now_ns: int) -> Span:
    duration = rng.randrange(200_000, 80_000_000)
    start = now_ns - rng.randrange(0, 5_000_000_000)
    root = kind == Span.SPAN_KIND_SERVER and rng.random() < 0.7  # most server spans start a trace here
    return Span(
        trace_id=rng.getrandbits(128).to_bytes(16, "big"),
        span_id=rng.getrandbits(64).to_bytes(8, "big"),
        parent_span_id=b"" if root else rng.getrandbits(64).to_bytes(8, "big"),
        kind=kind,  # type: ignore[arg-type]
        flags=0x101,  # sampled, parent-is-remote known: what SDKs >= 1.27 set
        start_time_unix_nano=start,
        end_time_unix_nano=start + duration,
    )


def _server_span(service: str, rng: random.Random, now_ns: int) -> Span:
    span = _span(rng, Span.SPAN_KIND_SERVER, now_ns)
    method, route, code = rng.choice(METHODS), rng.choice(ROUTES), rng.choice(STATUSES)
    span.name = f"{method} {route}"
    span.attributes.extend(
        [
            _kv("http.request.method", method),
            _kv("http.route", route),
            _kv("http.response.status_code", code),
            _kv("url.scheme", "http"),
            _kv("server.address", f"{service}.shop.svc.cluster.local"),
            _kv("server.port", 8080),
            _kv("network.peer.address", rng.choice(CALLER_IPS)),
        ]
    )
    _set_status(span, code >= 500, rng)
    return span


def _client_span(target: str, rng: random.Random, now_ns: int) -> Span:
    span = _span(rng, Span.SPAN_KIND_CLIENT, now_ns)
    method, route, code = rng.choice(METHODS), rng.choice(ROUTES), rng.choice(STATUSES)
    host = f"{target}.shop.svc.cluster.local"
    span.name = method
    span.attributes.extend(
        [
            _kv("http.request.method", method),
            _kv("url.full", f"http://{host}:8080{route.replace('{id}', str(rng.randrange(100000)))}"),
            _kv("server.address", host),
            _kv("server.port", 8080),
            _kv("http.response.status_code", code),
            _kv("peer.service", target),
        ]
    )
    _set_status(span, code >= 500, rng)
    return span


def _db_span(system: str, rng: random.Random, now_ns: int) -> Span:
    span = _span(rng, Span.SPAN_KIND_CLIENT, now_ns)
    op = rng.choice(("SELECT", "INSERT", "UPDATE")) if system != "redis" else rng.choice(("GET", "SET", "HGETALL"))
    span.name = f"{op} shop" if system != "redis" else op
    span.attributes.extend(
        [
            _kv("db.system", system),
            _kv("db.namespace", "shop"),
            _kv("db.operation.name", op),
            _kv("db.query.text", f"{op} * FROM orders WHERE id = $1" if system != "redis" else f"{op} cart:?"),
            _kv("server.address", f"{system}.shop.svc.cluster.local"),
            _kv("server.port", 6379 if system == "redis" else 5432),
        ]
    )
    _set_status(span, rng.random() < 0.01, rng)
    return span


def _messaging_span(role: str, rng: random.Random, now_ns: int) -> Span:
    kind = Span.SPAN_KIND_PRODUCER if role == "publish" else Span.SPAN_KIND_CONSUMER
    span = _span(rng, kind, now_ns)
    span.name = f"{role} orders"
    span.attributes.extend(
        [
            _kv("messaging.system", "kafka"),
            _kv("messaging.destination.name", "orders"),
            _kv("messaging.operation.type", role),
            _kv("messaging.kafka.message.key", f"order-{rng.randrange(10**6)}"),
            _kv("server.address", "kafka.shop.svc.cluster.local"),
            _kv("server.port", 9092),
        ]
    )
    return span


def _set_status(span: Span, error: bool, rng: random.Random) -> None:
    if not error:
        return
    span.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message="upstream failed"))
    event = span.events.add(time_unix_nano=span.end_time_unix_nano - rng.randrange(1000, 100_000), name="exception")
    event.attributes.extend(
        [_kv("exception.type", "requests.exceptions.HTTPError"), _kv("exception.message", "503 Server Error")]
    )


def _service_spans(service: str, rng: random.Random, now_ns: int) -> Span:
    """One span of ``service``: mostly server and HTTP client spans, some database and messaging spans."""
    _, downstream, db, messaging = SERVICES[service]
    roll = rng.random()
    if roll < 0.5 or not (downstream or db or messaging):
        return _server_span(service, rng, now_ns)
    if downstream and roll < 0.8:
        return _client_span(rng.choice(downstream), rng, now_ns)
    if db and (roll < 0.92 or not messaging):
        return _db_span(db, rng, now_ns)
    if messaging:
        return _messaging_span(messaging, rng, now_ns)
    return _server_span(service, rng, now_ns)


def make_resources(rng: random.Random) -> dict[str, list[KeyValue]]:
    """The resource attributes of each service's pod. Made once and reused by every request, as a node's
    Collector keeps sending the same pods (so the receiver's resource cache sees realistic hits)."""
    return {service: _resource_attributes(service, node, rng) for service, (node, *_) in SERVICES.items()}


def make_request(
    spans: int,
    rng: random.Random,
    resources: dict[str, list[KeyValue]],
    now_ns: int = 1_760_000_000_000_000_000,
) -> ExportTraceServiceRequest:
    """An export request of exactly ``spans`` spans spread over the five services (one ResourceSpans each)."""
    request = ExportTraceServiceRequest()
    names = list(SERVICES)
    per_service = [spans // len(names) + (1 if i < spans % len(names) else 0) for i in range(len(names))]
    for service, count in zip(names, per_service, strict=True):
        if not count:
            continue
        resource_spans: ResourceSpans = request.resource_spans.add()
        resource_spans.resource.attributes.extend(resources[service])
        resource_spans.schema_url = "https://opentelemetry.io/schemas/1.26.0"
        scopes = [resource_spans.scope_spans.add() for _ in SDK_SCOPES]
        for scope, name in zip(scopes, SDK_SCOPES, strict=True):
            scope.scope.name = name
            scope.scope.version = "0.48b0"
        for _ in range(count):
            span = _service_spans(service, rng, now_ns)
            scope = scopes[0] if span.kind == Span.SPAN_KIND_SERVER else scopes[1]
            scope.spans.append(span)
    return request


def make_requests(count: int, spans: int, seed: int = 1) -> list[bytes]:
    """``count`` distinct serialized requests of ``spans`` spans each (random ids, same seed -> same bytes)."""
    rng = random.Random(seed)
    resources = make_resources(rng)
    return [make_request(spans, rng, resources).SerializeToString() for _ in range(count)]
