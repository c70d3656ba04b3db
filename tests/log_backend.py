"""A log backend for tests: a real gRPC OTLP logs server on a free port that keeps every request it takes, can
demand a bearer token, refuse everything (a backend that is down for the sender), or answer a partial success;
``write_jsonl`` writes what it kept as the Collector's file exporter would (one OTLP JSON request a line)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path

import grpc
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess,
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord


class LogBackend(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self) -> None:
        self.requests: list[ExportLogsServiceRequest] = []
        self.token: str | None = None  # required "authorization: Bearer <token>" when set
        self.down = False  # answer UNAVAILABLE
        self.reject = 0  # records to answer as rejected (partial success), once
        self.port = 0
        self._lock = threading.Lock()

    def Export(self, request: ExportLogsServiceRequest, context: grpc.ServicerContext) -> ExportLogsServiceResponse:  # noqa: N802
        if self.down:
            context.abort(grpc.StatusCode.UNAVAILABLE, "the backend is down")
        if (
            self.token is not None
            and dict(context.invocation_metadata()).get("authorization") != f"Bearer {self.token}"
        ):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "wrong or missing token")
        with self._lock:
            self.requests.append(request)
            rejected, self.reject = self.reject, 0
        return ExportLogsServiceResponse(partial_success=ExportLogsPartialSuccess(rejected_log_records=rejected))

    def records(self) -> list[LogRecord]:
        with self._lock:
            return [r for q in self.requests for rl in q.resource_logs for sl in rl.scope_logs for r in sl.log_records]

    def write_jsonl(self, path: Path) -> Path:
        with self._lock:
            lines = [json_format.MessageToJson(q, indent=None) for q in self.requests]
        path.write_text("".join(line + "\n" for line in lines))
        return path


@contextmanager
def running_log_backend(max_bytes: int | None = None) -> Iterator[LogBackend]:
    """``max_bytes``: the largest request the server takes (gRPC answers RESOURCE_EXHAUSTED past it)."""
    backend = LogBackend()
    options = [("grpc.so_reuseport", 0), *([("grpc.max_receive_message_length", max_bytes)] if max_bytes else [])]
    server = grpc.server(futures.ThreadPoolExecutor(4), options=options)
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(backend, server)
    backend.port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield backend
    finally:
        server.stop(0)
