"""Support for the OS-process backend tests: the leak check every such test runs under.

``no_leaks`` asserts that a test leaves no new entry in ``/dev/shm`` and no child process
(alive or zombie) behind, apart from multiprocessing's long-lived helpers (the forkserver and
the resource tracker), whose own children are checked too. ``backend_fixture`` makes the
``backend`` fixture of a shared suite (every ``os`` test under ``no_leaks``) and
``in_process_only`` skips a shared test that cannot hold on OS processes, saying why.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

import ferrocsp as csp

START_METHODS = ["fork", "forkserver", "spawn"]


def _helpers() -> set[int]:
    pids: set[int] = set()
    try:
        from multiprocessing import forkserver, resource_tracker

        fs = getattr(forkserver._forkserver, "_forkserver_pid", None)
        rt = getattr(resource_tracker._resource_tracker, "_pid", None)
        pids.update(p for p in (fs, rt) if p)
    except (ImportError, AttributeError):
        pass
    # A nats-server a fixture started during the test (the networked channels' `mk`).
    nats = sys.modules.get("_nats")
    if nats is not None:
        pids.update(nats.SERVER_PIDS)
    return pids


def _children_of(parents: set[int]) -> dict[int, str]:
    """pid -> state of every process whose parent is in ``parents``."""
    out: dict[int, str] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may contain spaces, so split after the last ')'.
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) in parents:
            out[int(d.name)] = fields[0]
    return out


def leftovers() -> tuple[set[str], dict[int, str]]:
    """(entries of /dev/shm, children and grandchildren-via-helpers) right now."""
    helpers = _helpers()
    kids = {p: s for p, s in _children_of({os.getpid(), *helpers}).items() if p not in helpers}
    return set(os.listdir("/dev/shm")), kids


def _mapped_elsewhere(names: set[str], ours: set[int]) -> set[str]:
    """The /dev/shm entries among ``names`` that a process outside ``ours`` has mapped: another
    test run's on this machine (/dev/shm is shared by every process of the machine)."""
    paths = {f"/dev/shm/{n}": n for n in names}
    found: set[str] = set()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) in ours:
            continue
        try:
            maps = (d / "maps").read_text()
        except OSError:
            continue
        found.update(n for p, n in paths.items() if p in maps)
    return found


@pytest.fixture
def no_leaks() -> Iterator[None]:
    """Fails the test if it leaves shared-memory segments or child processes behind."""
    shm_before, kids_before = leftovers()
    yield
    # A child reaped by the forkserver may take a moment to disappear from /proc.
    deadline = time.monotonic() + 5.0
    while True:
        shm_after, kids_after = leftovers()
        new_kids = {p: s for p, s in kids_after.items() if p not in kids_before}
        new_shm = shm_after - shm_before
        if new_shm:
            ours = {os.getpid(), *_helpers(), *kids_after}
            new_shm -= _mapped_elsewhere(new_shm, ours)
        if (not new_kids and not new_shm) or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert new_shm == set(), f"new /dev/shm entries: {new_shm}"
    assert new_kids == {}, f"child processes left behind (pid: state): {new_kids}"


@pytest.fixture(params=START_METHODS)
def start_method(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs the test under each multiprocessing start method."""
    name: str = request.param
    monkeypatch.setenv("FERROCSP_START_METHOD", name)
    return name


def backend_fixture(names: Sequence[str]) -> Any:
    """A ``backend`` fixture over ``names`` (bind it to ``backend`` in a module); an ``os``
    test also runs under ``no_leaks``."""

    @pytest.fixture(params=list(names), name="backend")
    def backend(request: pytest.FixtureRequest) -> str:
        """The backend of a shared test: it runs once under each (use ``k`` for bodies)."""
        name: str = request.param
        if name in ("os", "os-asyncio"):
            request.getfixturevalue("no_leaks")
        return name

    return backend


#: Reasons a shared test cannot hold on OS processes (for ``in_process_only``).
COPIES = "values crossing OS processes are copies (DESIGN 2, Channels)"


def in_process_only(backend: str, why: str) -> None:
    """Skips a shared test that cannot hold on OS processes, saying why."""
    if backend in ("os", "os-asyncio"):
        pytest.skip(f"in-process only: {why}")


__all__ = [
    "COPIES",
    "START_METHODS",
    "backend_fixture",
    "csp",
    "in_process_only",
    "leftovers",
    "no_leaks",
    "start_method",
]
