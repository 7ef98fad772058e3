"""Shared pytest configuration for the ferrocsp test suite.

``slow`` tests (long stress/soak runs) are skipped unless ``FERROCSP_SLOW=1`` is set or the
marker is selected explicitly with ``-m slow``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Make tests/_support.py importable whatever pytest's import mode is.
sys.path.insert(0, str(Path(__file__).parent))

from _kit import Kit


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("FERROCSP_SLOW") == "1" or "slow" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="slow test: set FERROCSP_SLOW=1 or run with -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(params=["thread", "greenlet", "asyncio"])
def backend(request: pytest.FixtureRequest) -> str:
    """The backend of a shared test: it runs once under each (use ``k`` for process bodies)."""
    name: str = request.param
    return name


@pytest.fixture
def k(backend: str) -> Kit:
    """The test kit of ``backend``: process bodies written once (tests/_kit.py)."""
    return Kit(backend)


@pytest.fixture(params=["thread", "greenlet"])
def plain_backend(request: pytest.FixtureRequest) -> str:
    """A backend for plain-function processes (``@csp.process`` on a def), for tests whose
    processes are plain functions by nature (builtins, examples, io)."""
    name: str = request.param
    return name
