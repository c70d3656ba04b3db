"""A scripted OpenAI-compatible endpoint: answers ``POST /v1/chat/completions`` with prepared responses, in order,
and records what it was sent. Two uses:

- tests run the real ``openai`` client against it (a local HTTP server on port 0), including the failures an
  endpoint has: a status such as 429 or 503, a delay past the client's timeout, a body that is not a completion;
- a stored reasoning trace replays offline: :func:`script_from_trace` turns the model's recorded answers back into
  responses, so the same investigation runs again against the same context without the real model.

Standard library only (``http.server``); a thread serves it, ``close()`` stops it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reply:
    """One scripted answer: a body (a chat completion, or anything), its status, a delay before answering."""

    body: Any
    status: int = 200
    delay_s: float = 0.0
    headers: Mapping[str, str] = field(default_factory=dict)


def completion(message: dict[str, Any], finish_reason: str, usage: tuple[int, int] = (100, 20)) -> dict[str, Any]:
    """A chat completion body with one choice."""
    return {
        "id": f"chatcmpl-{time.monotonic_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": "scripted",
        "choices": [{"index": 0, "finish_reason": finish_reason, "message": message}],
        "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)},
    }


def tool_calls(*calls: tuple[str, Mapping[str, Any] | str], usage: tuple[int, int] = (100, 20)) -> Reply:
    """A reply that asks for tools: (name, arguments) pairs; arguments as a mapping or a raw string."""
    items = [
        {
            "id": f"call_{i}",
            "type": "function",
            "function": {"name": name, "arguments": args if isinstance(args, str) else json.dumps(args)},
        }
        for i, (name, args) in enumerate(calls, 1)
    ]
    return Reply(completion({"role": "assistant", "content": None, "tool_calls": items}, "tool_calls", usage))


def answer(content: str | Mapping[str, Any], usage: tuple[int, int] = (100, 20)) -> Reply:
    """A final answer: text, or a mapping sent as its JSON."""
    text = content if isinstance(content, str) else json.dumps(content)
    return Reply(completion({"role": "assistant", "content": text}, "stop", usage))


def script_from_trace(trace: Mapping[str, Any]) -> list[Reply]:
    """The model's answers recorded in a reasoning trace (agent/trace.py), as replies to replay them in order."""
    replies = []
    for step in trace.get("steps", []):
        if step.get("type") != "model":
            continue
        message: dict[str, Any] = {"role": "assistant", "content": step.get("content")}
        if step.get("tool_calls"):
            message["tool_calls"] = [
                {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                for c in step["tool_calls"]
            ]
        usage = (int(step.get("input_tokens") or 0), int(step.get("output_tokens") or 0))
        replies.append(Reply(completion(message, step.get("finish_reason") or "stop", usage)))
    return replies


class ScriptedLLM:
    """The endpoint. ``base_url`` is what an OpenAI client takes; ``requests`` the JSON bodies received."""

    def __init__(self, script: Iterable[Reply | Mapping[str, Any]] = (), host: str = "127.0.0.1") -> None:
        self.script: list[Reply] = [r if isinstance(r, Reply) else Reply(r) for r in script]
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                reply = owner._next(raw, {k.lower(): v for k, v in self.headers.items()})
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                data = json.dumps(reply.body).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (its timeout): nothing to answer
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                logger.debug("scripted LLM: %s", format % args)

        self._server = ThreadingHTTPServer((host, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="scripted-llm", daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def add(self, *replies: Reply) -> None:
        with self._lock:
            self.script.extend(replies)

    def _next(self, raw: bytes, headers: dict[str, str]) -> Reply:
        with self._lock:
            try:
                self.requests.append(json.loads(raw or b"{}"))
            except ValueError:
                self.requests.append({"unparsed": raw.decode(errors="replace")})
            self.headers.append(headers)
            if not self.script:
                return Reply({"error": {"message": "the script has no more replies", "type": "server_error"}}, 500)
            return self.script.pop(0)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
