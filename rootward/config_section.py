"""The base of every configuration section (rootward/config.py and its config_*.py parts): unknown keys are
errors, sections are immutable once loaded, and each field's docstring is its documentation."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


def strong_tokens(tokens: dict[str, SecretStr], where: str) -> None:
    """Bearer tokens of at least 8 characters and no surrounding whitespace (an empty value from a missing Secret
    key must not let anyone in); ValueError naming the token's key otherwise."""
    for name, token in tokens.items():
        value = token.get_secret_value()
        if len(value) < 8 or value != value.strip():
            raise ValueError(f"{where}.{name}: at least 8 characters, no surrounding whitespace")


class OtlpDestination(_Section):
    """Where Rootward sends something of its own over OTLP (its traces, its audit records). Off until ``endpoint``
    is set."""

    endpoint: str | None = None
    """``http://host:4318`` for OTLP/HTTP (the signal's path, ``/v1/traces`` or ``/v1/logs``, is added),
    ``host:4317`` for gRPC."""
    protocol: Literal["http/protobuf", "grpc"] = "http/protobuf"
    insecure: bool = True
    """gRPC only: plaintext (a Collector on the node); false for TLS."""
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    """Headers on each export (an auth token: a secret, set it from the environment)."""
    service_name: str = "rootward"
    """``service.name`` of what is sent."""
    timeout_s: float = Field(default=10.0, gt=0)
    """Timeout of one export, in seconds."""
