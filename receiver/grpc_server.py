"""OTLP/gRPC server: TraceService, MetricsService and LogsService ``Export`` on one port (4317 by default).

Handlers take raw bytes (no grpc-side deserialisation: the decoder reads the wire format itself, which halves the
per-call cost, see ../shared/PERFORMANCE.md) and return serialized responses. gzip-compressed calls are
decompressed by grpc-core, which also enforces ``max_decompressed_bytes`` (answering RESOURCE_EXHAUSTED, as the
Collector's receiver does). Errors map to status codes in ``errors.grpc_code``; retryable ones carry RetryInfo.
"""

from __future__ import annotations

import logging
from concurrent import futures
from typing import Any

import grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from rootward import config
from rootward.errors import StartupError
from rootward.receiver.errors import ReceiverError, RetryableError, grpc_code
from rootward.receiver.ingest import Ingest, response_message
from rootward.receiver.queue import Signal

logger = logging.getLogger(__name__)

_SERVICES: dict[Signal, str] = {
    "traces": "opentelemetry.proto.collector.trace.v1.TraceService",
    "metrics": "opentelemetry.proto.collector.metrics.v1.MetricsService",
    "logs": "opentelemetry.proto.collector.logs.v1.LogsService",
}


def _abort(context: grpc.ServicerContext, err: ReceiverError) -> None:
    code = grpc_code(err)
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=str(err))
    if isinstance(err, RetryableError):
        info = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=int(err.retry_after)))
        info.retry_delay.nanos = int((err.retry_after % 1) * 1e9)
        status.details.add().Pack(info)
    context.abort_with_status(rpc_status.to_status(status))


class GrpcServer:
    """The OTLP/gRPC listener. ``start`` binds (port 0 picks a free port); ``shutdown`` is safe to repeat."""

    def __init__(self, listen: config.Listen, cfg: config.Receiver, ingest: Ingest) -> None:
        self._listen = listen
        self._cfg = cfg
        self._ingest = ingest
        self._server: grpc.Server | None = None
        self.port = 0

    def _handler(self, signal: Signal) -> Any:
        ingest = self._ingest

        def export(request: bytes, context: grpc.ServicerContext) -> bytes:
            try:
                header = dict(context.invocation_metadata()).get("authorization")
                ingest.authorize(header if isinstance(header, str) else None)
                ingest.check_size(len(request), "decompressed request")
                outcome = ingest.export(signal, request, "proto")
            except ReceiverError as e:
                ingest.record("grpc", signal, e)
                _abort(context, e)
                raise AssertionError("unreachable") from e  # abort_with_status raises
            ingest.record("grpc", signal, outcome)
            return response_message(signal, outcome.rejected, outcome.message).SerializeToString()

        return grpc.unary_unary_rpc_method_handler(export)

    def start(self) -> None:
        """Bind and serve. Raises StartupError when the address cannot be bound or TLS files are unreadable."""
        if self._server is not None:
            return
        limits = self._cfg.limits
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self._cfg.grpc_workers, thread_name_prefix="rootward-grpc"),
            options=[
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", limits.max_decompressed_bytes),
                ("grpc.max_send_message_length", 4 * 2**20),
            ],
            compression=None,
            maximum_concurrent_rpcs=self._cfg.max_concurrent_requests,  # past it: RESOURCE_EXHAUSTED, retried
        )
        server.add_generic_rpc_handlers(
            [
                grpc.method_handlers_generic_handler(name, {"Export": self._handler(signal)})
                for signal, name in _SERVICES.items()
            ]
        )
        address = f"{self._listen.host}:{self._listen.port}"
        try:
            tls = self._cfg.tls
            if tls.cert_file is not None and tls.key_file is not None:
                creds = grpc.ssl_server_credentials([(tls.key_file.read_bytes(), tls.cert_file.read_bytes())])
                port = server.add_secure_port(address, creds)
            else:
                port = server.add_insecure_port(address)
        except (OSError, RuntimeError) as e:
            raise StartupError(f"OTLP/gRPC cannot listen on {address}: {e}") from e
        if port == 0:
            raise StartupError(f"OTLP/gRPC cannot listen on {address} (in use?)")
        server.start()
        self._server = server
        self.port = port
        tls_note = " (TLS)" if self._cfg.tls.enabled else ""
        logger.info("OTLP/gRPC listening on %s:%d%s", self._listen.host, port, tls_note)

    def shutdown(self, grace: float = 5.0) -> None:
        """Refuse new calls and wait up to ``grace`` seconds for calls in flight; safe to repeat."""
        server, self._server = self._server, None
        if server is not None:
            server.stop(grace).wait(grace + 1.0)
