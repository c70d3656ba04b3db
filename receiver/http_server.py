"""OTLP/HTTP server: POST /v1/traces, /v1/metrics, /v1/logs (4318 by default).

Bodies are ``application/x-protobuf`` or ``application/json`` (OTLP/JSON: hex ids, enums as integers), optionally
gzip- or deflate-encoded. The body is read in chunks and refused as soon as it passes ``max_request_bytes``;
decompression stops at ``max_decompressed_bytes``. The response uses the request's content type; errors carry a
``google.rpc.Status`` body with a message saying what was wrong, and retryable ones a Retry-After header.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Literal

from google.protobuf import json_format
from google.rpc import status_pb2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from rootward import config
from rootward.receiver.errors import (
    ReceiverError,
    RetryableError,
    SlowSender,
    UnsupportedMediaType,
    grpc_code,
    http_status,
)
from rootward.receiver.ingest import Ingest, response_message
from rootward.receiver.queue import Signal
from rootward.serving import ThreadedServer

_PROTO = "application/x-protobuf"
_JSON = "application/json"


def _encode(message: object, fmt: Literal["proto", "json"]) -> tuple[bytes, str]:
    if fmt == "json":
        return json_format.MessageToJson(message, indent=None).encode(), _JSON  # type: ignore[arg-type]
    return message.SerializeToString(), _PROTO  # type: ignore[attr-defined]


def _error(err: ReceiverError, fmt: Literal["proto", "json"]) -> Response:
    status = http_status(err)
    code = grpc_code(err).value[0]  # google.rpc.Status carries the gRPC code, as in OTLP/gRPC
    body, media = _encode(status_pb2.Status(code=code, message=str(err)), fmt)
    headers = {}
    if isinstance(err, RetryableError):
        headers["Retry-After"] = str(max(1, math.ceil(err.retry_after)))
    return Response(body, status_code=status, media_type=media, headers=headers)


def build_app(ingest: Ingest) -> Starlette:
    """The Starlette app serving the three OTLP/HTTP paths."""

    async def read_chunks(request: Request) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            ingest.check_size(size)
            chunks.append(chunk)
        return b"".join(chunks)

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit():
            ingest.check_size(int(declared))
        timeout = ingest.cfg.limits.body_timeout_s
        try:
            return await asyncio.wait_for(read_chunks(request), timeout)
        except TimeoutError as e:
            raise SlowSender(f"the request body did not arrive within {timeout:g} s (body_timeout_s)") from e

    def endpoint(signal: Signal) -> Callable[[Request], Awaitable[Response]]:
        async def export(request: Request) -> Response:
            media = request.headers.get("content-type", "").split(";")[0].strip().lower()
            fmt: Literal["proto", "json"] = "json" if media == _JSON else "proto"
            try:
                ingest.authorize(request.headers.get("authorization"))
                if media not in (_PROTO, _JSON):
                    raise UnsupportedMediaType(
                        f"unsupported content-type {media or '(none)'!r}: use {_PROTO} or {_JSON}"
                    )
                body = await read_body(request)
                encoding = request.headers.get("content-encoding", "")
                outcome = await run_in_threadpool(ingest.export_body, signal, body, encoding, fmt)
            except ReceiverError as e:
                ingest.record("http", signal, e)
                return _error(e, fmt)
            except ClientDisconnect:
                ingest.record("http", signal, "client_disconnected")
                return Response(status_code=400)  # nobody is listening; the sender's own retry decides
            ingest.record("http", signal, outcome)
            body, media_type = _encode(response_message(signal, outcome.rejected, outcome.message), fmt)
            return Response(body, media_type=media_type)

        return export

    routes = [Route(f"/v1/{signal}", endpoint(signal), methods=["POST"]) for signal in ("traces", "metrics", "logs")]
    return Starlette(routes=routes)


class HttpServer(ThreadedServer):
    """The OTLP/HTTP listener."""

    def __init__(self, listen: config.Listen, cfg: config.Receiver, ingest: Ingest) -> None:
        super().__init__(
            build_app(ingest),
            listen.host,
            listen.port,
            "OTLP/HTTP",
            cfg.tls.cert_file,
            cfg.tls.key_file,
            limit_concurrency=cfg.max_concurrent_requests,
        )
