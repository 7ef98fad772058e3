"""Shared pytest configuration for the ferrocsp test suite.

A shared suite runs each test under every backend of the ``backend`` fixture (thread, greenlet,
asyncio); a module that also runs on OS processes rebinds it with
``backend = backend_fixture(SHARED_BACKENDS)``, and each of its ``os`` tests runs under
``no_leaks`` (no /dev/shm entry, no child process left behind). A test that cannot hold on OS
processes says why with ``in_process_only(backend, why)`` (both in tests/_os_support.py).

``slow`` tests (long stress/soak runs) are skipped unless ``FERROCSP_SLOW=1`` is set or the
marker is selected explicitly with ``-m slow``.

With ``FERROCSP_EXPECT_NO_GIL=1`` (``scripts/free-threaded.sh`` sets it, with ``PYTHON_GIL=0``
on a free-threaded CPython) the session fails unless the GIL is disabled at its start and still
disabled at its end: an extension module that declares it needs the GIL re-enables it on import
(with only a warning), which would make the run prove nothing.

On a free-threaded build whose greenlet predates free-threading support (greenlet < 3.3: 3.2.2
is the last release with 3.13t wheels; 3.3+ supports 3.14t only and does not compile for
3.13t) the tests that run greenlets are skipped, saying why (tests/_greenlet_ft.py): such a
greenlet keeps the thread's critical sections in place across a switch, and the interpreter
crashes when greenlets end theirs out of order. That is greenlet's limitation, not ferrocsp's;
on 3.14t with a current greenlet nothing is skipped.

``mk`` is the channel dimension of the shared suites (tests/_chans.py): local channels, local
channels moved to shared memory, and networked ones on a nats-server started once per session
when the first such test runs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Make tests/_support.py importable whatever pytest's import mode is.
sys.path.insert(0, str(Path(__file__).parent))

from _chans import Chans
from _greenlet_ft import greenlet_unusable
from _kit import BACKENDS, Kit
from _os_support import backend_fixture, no_leaks

__all__ = ["no_leaks"]  # a fixture, registered for every module by importing it here


#: Where greenlets run beyond what a test's parameters or name say: whole modules, and tests
#: (with their parameters' ids) that mix in greenlet processes or run scripts that do.
GREENLET_MODULES = frozenset(
    {
        "test_greenlet",
        "test_nesting",
        "test_farm",
        "test_mobile",
        "test_net_coop",
        "test_shm_coop",
        "test_shm_fork",
    }
)
GREENLET_TESTS = frozenset(
    {
        "test_pipeline_mixing_all_three_ends_by_retire",
        "test_pipeline_mixing_all_three_with_alt_merge_ends_by_poison",
        "test_failures_on_every_backend_in_one_par",
        "test_ctrl_c_once[mixed-par]",
        "test_ctrl_c_once[during-start]",
        "test_bench_quick",
        "test_demo",
        "test_ends_freed_while_the_interpreter_finalizes",
    }
)


def _runs_greenlets(item: pytest.Item) -> bool:
    params = getattr(item, "callspec", None)
    p = params.params if params is not None else {}
    if any(isinstance(v, str) and "greenlet" in v for v in p.values()):
        return True
    module = item.module.__name__ if isinstance(item, pytest.Function) else ""
    # asyncio on a shared-memory channel waits on an operation greenlet (shm_aio.rs); the
    # coroutine backend runs operations on shared or networked channels on greenlet tasks.
    if p.get("backend") in ("asyncio", "os-asyncio") and "shm" in p.values():
        return True
    if p.get("backend") == "coroutine" and any(v in ("shm", "net") for v in p.values()):
        return True
    if "greenlet" in item.name or item.name in GREENLET_TESTS:
        return True
    return module.rsplit(".", 1)[-1] in GREENLET_MODULES


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    why = greenlet_unusable()
    if why is not None:
        no_greenlet = pytest.mark.skip(reason=why)
        for item in items:
            if _runs_greenlets(item):
                item.add_marker(no_greenlet)
    for item in items:
        # Networked channels under the other backends (cooperative, OS processes): the
        # representative subset by default is the thread backend (tests/_chans.py).
        params = getattr(item, "callspec", None)
        p = params.params if params is not None else {}
        if p.get("mk") == "net" and p.get("backend") in ("greenlet", "asyncio", "os", "os-asyncio"):
            item.add_marker(pytest.mark.slow)
        # Shared-memory channels under the OS-process backends: local channels move there
        # anyway when a test hands them to its processes (tests/_chans.py).
        if p.get("mk") == "shm" and p.get("backend") in ("os", "os-asyncio"):
            item.add_marker(pytest.mark.slow)
    if os.environ.get("FERROCSP_SLOW") == "1" or "slow" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="slow test: set FERROCSP_SLOW=1 or run with -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


backend = backend_fixture(BACKENDS)


def _gil_enabled() -> bool:
    check = getattr(sys, "_is_gil_enabled", None)
    return True if check is None else bool(check())


def _expect_no_gil() -> bool:
    return os.environ.get("FERROCSP_EXPECT_NO_GIL") == "1"


def pytest_report_header(config: pytest.Config) -> str:
    return f"ferrocsp: GIL enabled: {_gil_enabled()} (sys._is_gil_enabled)"


def pytest_sessionstart(session: pytest.Session) -> None:
    if not _expect_no_gil():
        return
    import ferrocsp  # the extension and greenlet are imported now: either could re-enable it

    del ferrocsp
    if _gil_enabled():
        pytest.exit("FERROCSP_EXPECT_NO_GIL=1 but the GIL is enabled (sys._is_gil_enabled())", 3)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _expect_no_gil():
        terminalreporter.write_line(f"ferrocsp: GIL enabled at the end: {_gil_enabled()}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _expect_no_gil() and _gil_enabled():
        print("\nFERROCSP_EXPECT_NO_GIL=1: an extension re-enabled the GIL during the run")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def k(backend: str) -> Kit:
    """The test kit of ``backend``: process bodies written once (tests/_kit.py)."""
    return Kit(backend)


@pytest.fixture(scope="session")
def kit_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One nats-server for the networked side of the shared suites (started on first use)."""
    from _nats import NatsServer

    server = NatsServer(tmp_path_factory.mktemp("kit-nats"))
    yield server
    server.stop()


@pytest.fixture(params=["local", "shm", "net"])
def mk(request: pytest.FixtureRequest) -> Iterator[Chans]:
    """Makes a shared test's channels: ``csp.Channel`` (local), one moved to shared memory
    (shm), or networked (tests/_chans.py)."""
    if request.param in ("local", "shm"):
        yield Chans(request.param)
        return
    import ferrocsp.net as net

    conn = net.connect(request.getfixturevalue("kit_nats").url)
    chans = Chans("net", conn)
    try:
        yield chans
    finally:
        chans.close()
        conn.close()


@pytest.fixture(params=["thread", "greenlet"])
def plain_backend(request: pytest.FixtureRequest) -> str:
    """A backend for plain-function processes (``@csp.process`` on a def), for tests whose
    processes are plain functions by nature (builtins, examples, io)."""
    name: str = request.param
    return name
