"""Fixtures the model's unit tests share."""

from __future__ import annotations

import pytest
from helpers import make_bus

from kdbusfs.bus.bus import Bus
from kdbusfs.bus.domain import Domain


@pytest.fixture
def bus() -> Bus:
    """A bus of a fresh domain, made by its owner's BUS_MAKE."""
    made = make_bus(Domain()).bus
    assert made is not None
    return made
