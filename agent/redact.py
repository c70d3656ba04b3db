"""Redaction of what leaves the process for an LLM endpoint.

Telemetry carries secrets by accident (a bearer token in a logged header, a password in a connection URL, a
customer's e-mail in an error message). Everything the LLM reasoner sends (the system prompt, the incident context,
every tool result, even the model's own earlier messages echoed back) goes through :meth:`Redactor.text` first, so
nothing the patterns match ever reaches the endpoint or the stored reasoning trace.

Patterns are regular expressions, configurable (``agent.llm.redaction``); each match is replaced by
``[REDACTED:<name>]`` so the model still knows something was there. A pattern with a group named ``keep`` keeps that
part (``https://user:[REDACTED:url_password]@host``: the host stays useful evidence).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger(__name__)

#: name -> pattern. IP addresses are not redacted by default: they are often the evidence (a peer that times out).
DEFAULT_PATTERNS: dict[str, str] = {
    "bearer_token": r"(?i)(?P<keep>\bbearer\s+)[A-Za-z0-9\-._~+/]{8,}=*",
    "authorization": r"(?i)(?P<keep>\bauthorization[\"']?\s*[:=]\s*[\"']?(?:(?:basic|digest|token)\s+)?)"
    r"(?!bearer\b)[^\s\"',;]{6,}",
    "aws_access_key": r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
    "aws_secret_key": r"(?i)(?P<keep>aws_?secret_?access_?key[\"']?\s*[:=]\s*[\"']?)[A-Za-z0-9/+=]{40}",
    "api_key": r"(?i)(?P<keep>\b(?:api[_-]?key|apikey|access[_-]?token|secret|token|password|passwd)[\"']?\s*[:=]\s*"
    r"[\"']?)[^\s\"',;&]{4,}",
    "openai_key": r"\bsk-[A-Za-z0-9_\-]{16,}\b",
    "github_token": r"\bgh[pousr]_[A-Za-z0-9]{30,}\b",
    "jwt": r"\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\b",
    "url_password": r"(?P<keep>\b[a-z][a-z0-9+.\-]*://[^\s:/@]+:)[^\s@/]+(?=@)",
    "email": r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}\b",
}
#: Optional patterns, on when named in ``agent.llm.redaction.optional``.
OPTIONAL_PATTERNS: dict[str, str] = {
    "ipv4": r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b",
    "ipv6": r"\b(?:[0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}\b",
}


class Redactor:
    """Applies named patterns, in order, to text and to JSON-like data. ``counts`` tells how many matches each
    pattern replaced (the reasoning trace reports it; the values themselves are never kept)."""

    def __init__(self, patterns: Mapping[str, str] | None = None) -> None:
        """Raises ``re.error`` for a pattern that does not compile (the config validates them first)."""
        chosen = DEFAULT_PATTERNS if patterns is None else patterns
        self.patterns = [(name, re.compile(p)) for name, p in chosen.items()]
        self.counts: Counter[str] = Counter()

    @classmethod
    def build(cls, enabled: bool, extra: Mapping[str, str], optional: list[str]) -> Redactor:
        """The default patterns (unless ``enabled`` is false), the named optional ones, then the user's own."""
        patterns = dict(DEFAULT_PATTERNS) if enabled else {}
        patterns.update({name: OPTIONAL_PATTERNS[name] for name in optional})
        patterns.update(extra)
        return cls(patterns)

    def text(self, value: str) -> str:
        """``value`` with every match replaced by ``[REDACTED:<name>]`` (a ``keep`` group stays). Idempotent: what
        was redacted already is left as it is."""
        for name, pattern in self.patterns:
            value = pattern.sub(lambda m, name=name: self._replace(m, name), value)  # type: ignore[misc]
        return value

    def _replace(self, match: re.Match[str], name: str) -> str:
        keep = match.groupdict().get("keep") or ""
        if match.group(0)[len(keep) :].startswith("[REDACTED:"):
            return match.group(0)
        self.counts[name] += 1
        return f"{keep}[REDACTED:{name}]"

    def data(self, value: Any) -> Any:
        """A copy of JSON-like ``value`` with every string (keys included) redacted."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {self.text(str(k)): self.data(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.data(v) for v in value]
        return value
