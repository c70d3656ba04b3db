"""Shared fixtures: a started receiver on free ports with a recording consumer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rootward.receiver import Receiver
from rootward.testing import RecordingConsumer, running_receiver


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, RecordingConsumer]]:
    """(receiver, consumer) with default limits and no auth."""
    with running_receiver() as pair:
        yield pair


@pytest.fixture
def secured() -> Iterator[tuple[Receiver, RecordingConsumer]]:
    """(receiver, consumer) that requires ``authorization: Bearer s3cret`` (or the second token, ``other``)."""
    with running_receiver(**{"auth.tokens": ["s3cret", "other"]}) as pair:
        yield pair
