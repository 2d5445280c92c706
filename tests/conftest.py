from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.transport_support import Pty

DATA = Path(__file__).parent / "data"


@pytest.fixture
def data_dir() -> Path:
    return DATA


@pytest.fixture
def ptys() -> Iterator[list[Pty]]:
    """Pseudo-terminals a test made; each is unplugged afterwards."""
    made: list[Pty] = []
    yield made
    for p in made:
        p.unplug()
