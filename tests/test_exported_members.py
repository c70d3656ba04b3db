"""The public names each package re-exports are deliberate (as in httpx's tests/test_exported_members.py)."""

from __future__ import annotations

import rootward
import rootward.receiver


def test_rootward_exports_only_its_version() -> None:
    assert rootward.__all__ == ["__version__"]


def test_receiver_exports_the_component_queue_and_decoders() -> None:
    assert rootward.receiver.__all__ == ["BatchQueue", "LogDecoder", "MetricDecoder", "Receiver", "TraceDecoder"]
    for name in rootward.receiver.__all__:
        assert getattr(rootward.receiver, name).__module__.startswith("rootward.receiver.")
