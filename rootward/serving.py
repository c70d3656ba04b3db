"""Run an ASGI app with uvicorn in a background thread, on a socket bound up front.

Binding before the thread starts means ``start()`` fails loudly when the port is taken, and port 0 gives a free
port known at once (tests, the demo). Used by the OTLP/HTTP receiver and by the API server.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from pathlib import Path
from typing import Any

import uvicorn

from rootward.errors import StartupError

logger = logging.getLogger(__name__)


class ThreadedServer:
    """One uvicorn server in its own thread and event loop. ``start``/``shutdown`` are safe to repeat."""

    def __init__(
        self,
        app: Any,
        host: str,
        port: int,
        name: str,
        cert_file: Path | None = None,
        key_file: Path | None = None,
        limit_concurrency: int | None = None,
    ) -> None:
        self._app = app
        self._host = host
        self._port = port
        self._name = name
        self._tls = (str(cert_file), str(key_file)) if cert_file and key_file else None
        self._limit_concurrency = limit_concurrency
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    def start(self) -> None:
        """Bind and serve in a thread. Raises StartupError when the address cannot be bound."""
        if self._thread is not None:
            return
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self._host, self._port))
        except OSError as e:
            sock.close()
            raise StartupError(f"{self._name} cannot listen on {self._host}:{self._port}: {e.strerror}") from e
        sock.listen(1024)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=5,
            limit_concurrency=self._limit_concurrency,  # past it uvicorn answers 503 (retried by senders)
            ssl_certfile=self._tls[0] if self._tls else None,
            ssl_keyfile=self._tls[1] if self._tls else None,
        )
        server = uvicorn.Server(config)
        started = threading.Event()

        def run() -> None:
            async def serve() -> None:
                task = asyncio.create_task(server.serve(sockets=[sock]))
                while not server.started and not task.done():
                    await asyncio.sleep(0.005)
                started.set()
                await task

            try:
                asyncio.run(serve())
            except Exception:
                logger.exception("%s server stopped with an error", self._name)
            finally:
                started.set()
                sock.close()

        self._server = server
        self._thread = threading.Thread(target=run, name=f"rootward-{self._name}", daemon=True)
        self._thread.start()
        started.wait(timeout=10)
        logger.info("%s listening on %s:%d%s", self._name, self._host, self.port, " (TLS)" if self._tls else "")

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop serving and wait for the thread (at most ``timeout`` seconds)."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(timeout)
