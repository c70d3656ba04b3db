"""kmock's Kubernetes API emulator on a free port, served from its own thread and event loop so that the official
(blocking) client can talk to it from a test. Its gaps are in ../shared/COMPONENTS.md; the one these tests meet:
it cannot parse ``/api/v1/namespaces`` (a cluster-wide resource named like the namespaced prefix), so Namespaces go
into its store directly (:meth:`KubeApi.put_namespace`)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

import kmock


class KubeApi:
    """A running kmock ``KubernetesEmulator`` at :attr:`url`; :meth:`start` and :meth:`stop` from the test."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.emulator: Any = None
        self.url = ""
        self._stack: contextlib.AsyncExitStack | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, name="kmock", daemon=True)

    async def _open(self) -> None:
        stack = contextlib.AsyncExitStack()
        try:
            emulator = await stack.enter_async_context(kmock.KubernetesEmulator())
            server = await stack.enter_async_context(kmock.Server(emulator))
        except BaseException:
            await stack.aclose()
            raise
        self._stack, self.emulator, self.url = stack, emulator, str(server.url).rstrip("/")

    def start(self) -> None:
        """Serve; raises what kmock raised when it could not start."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._open(), self.loop).result(10)

    def stop(self) -> None:
        """Stop serving and end the thread (safe to call twice)."""
        if self._stack is not None:
            stack, self._stack = self._stack, None
            asyncio.run_coroutine_threadsafe(stack.aclose(), self.loop).result(10)
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
        if not self._thread.is_alive() and not self.loop.is_closed():
            self.loop.close()

    def put_namespace(self, namespace: dict[str, Any]) -> None:
        """Store a Namespace object as the API would after creating it."""
        self.emulator.objects[kmock.resource("", "v1", "namespaces"), None, namespace["metadata"]["name"]] = namespace
