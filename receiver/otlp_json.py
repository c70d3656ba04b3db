"""OTLP/JSON specifics: trace and span ids are hex strings, where protobuf's JSON mapping expects base64.

Everything else in the OTLP/JSON encoding is protobuf's canonical JSON mapping (lowerCamelCase or original field
names, enums as integers or names, 64-bit integers as strings or numbers), which ``json_format`` accepts.
"""

from __future__ import annotations

import base64
from typing import Any

from rootward.receiver.errors import MalformedRequest

_ID_FIELDS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"})


def hex_ids_to_base64(doc: Any) -> None:
    """Rewrite, in place, every id field of an OTLP/JSON document from hex to base64.

    Id fields are recognised by name; attribute keys cannot collide with them because attributes are
    ``{"key": ..., "value": ...}`` objects. Raises MalformedRequest for an id that is not hex.
    """
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            for key, value in node.items():
                if key in _ID_FIELDS and isinstance(value, str):
                    try:
                        node[key] = base64.b64encode(bytes.fromhex(value)).decode()
                    except ValueError as e:
                        raise MalformedRequest(f"invalid OTLP/JSON: {key} {value[:40]!r} is not hex") from e
                elif isinstance(value, dict | list):
                    stack.append(value)
