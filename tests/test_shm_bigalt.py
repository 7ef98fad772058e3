"""An Alt over 1,000 channels shared with OS processes waits without spinning.

``futex_waitv`` sleeps on at most 128 words; such an Alt waits on more (each channel's change
counter and its own cell). A thread hands them to the process's futex watchers, a greenlet or
an asyncio task always does; either way the wait must sleep (CPU time measured over it, a
generous bound for a loaded machine: a tenth of the wall time, where a spinning wait uses all
of it) and a write on any one of the channels must end it with that channel's guard.
"""

from __future__ import annotations

import asyncio
import resource
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import ferrocsp as csp
from _support import Background, wait_until
from ferrocsp import _shm

pytestmark = pytest.mark.timeout(120)

N = 1000
#: How long the Alt is left waiting while its CPU time is measured (seconds).
QUIET = 1.0
#: How soon a write must end the wait (seconds; generous for a loaded machine).
PROMPT = 2.0


def shared_channels(n: int = N) -> list[csp.Channel]:
    # A shared channel holds a descriptor: a soft limit of 1,024 (a common default) is too few.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4 * n if hard == resource.RLIM_INFINITY else min(hard, 4 * n)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    chans = [csp.Channel(name=f"c{k}") for k in range(n)]
    for c in chans:
        _shm.share(c)
    return chans


def all_waiting(chans: list[csp.Channel]) -> bool:
    return all(c.stats().readers_waiting == 1 for c in chans)


def assert_slept(what: str, cpu: float, wall: float) -> None:
    assert cpu < wall / 10, f"{what}: {cpu:.3f} s of CPU time in {wall:.3f} s of waiting"


def wake_after_quiet(
    chans: list[csp.Channel], k: int, cpu: Callable[[], float] | None = None
) -> float:
    """Once the Alt waits on every channel, lets it sleep QUIET seconds (checking ``cpu``, a
    process-wide clock, if given), then writes on channel ``k``; returns when it wrote."""
    wait_until(lambda: all_waiting(chans), 60.0, "the Alt registered on every channel")
    t0, c0 = time.monotonic(), cpu() if cpu else 0.0
    time.sleep(QUIET)
    if cpu:
        assert_slept("the process", cpu() - c0, time.monotonic() - t0)
    at = time.monotonic()
    chans[k].write(f"to {k}")
    return at


def test_a_thread_alt_over_1000_shared_channels_sleeps_and_wakes() -> None:
    chans = shared_channels()
    alt = csp.Alt(*chans)

    def choose() -> tuple[Any, Any, float, float]:
        c0, t0 = time.thread_time(), time.monotonic()
        guard, value = alt.select()
        return guard, value, time.thread_time() - c0, time.monotonic() - t0

    for k in (999, 0, 500):
        t = Background(choose)
        at = wake_after_quiet(chans, k)
        guard, value, cpu, wall = t.join(timeout=60)
        assert (guard, value) == (chans[k], f"to {k}")
        assert time.monotonic() - at < PROMPT
        assert_slept("the selecting thread", cpu, wall)
        assert not any(c.stats().readers_waiting for c in chans)


def test_the_main_thread_alt_over_1000_shared_channels_sleeps_until_its_timeout() -> None:
    # The main thread sleeps in slices (signal handlers run between them): a slice in which
    # nothing moved must not make the Alt step over every channel again and again.
    assert threading.current_thread() is threading.main_thread()
    chans = shared_channels()
    c0, t0 = time.thread_time(), time.monotonic()
    guard, _ = csp.Alt(*chans, timeout := csp.Timeout(QUIET)).select()
    cpu, wall = time.thread_time() - c0, time.monotonic() - t0
    assert guard is timeout
    assert QUIET <= wall < QUIET + PROMPT
    assert_slept("the main thread", cpu, wall)
    writer = threading.Timer(QUIET, lambda: chans[999].write("late"))
    writer.start()
    c0, t0 = time.thread_time(), time.monotonic()
    guard, value = csp.Alt(*chans).select()
    cpu, wall = time.thread_time() - c0, time.monotonic() - t0
    writer.join()
    assert (guard, value) == (chans[999], "late")
    assert wall < QUIET + PROMPT
    assert_slept("the main thread", cpu, wall)


def test_a_greenlet_alt_over_1000_shared_channels_sleeps_and_wakes() -> None:
    chans = shared_channels()
    got: list[Any] = []

    @csp.process
    def choose() -> None:
        got.append(csp.Alt(*chans).select())

    for k in (999, 0):
        got.clear()
        par = csp.Par(choose(), backend="greenlet").start()
        at = wake_after_quiet(chans, k, time.process_time)
        par.join(timeout=60)
        assert time.monotonic() - at < PROMPT
        assert got == [(chans[k], f"to {k}")]


def test_an_asyncio_alt_over_1000_shared_channels_sleeps_and_wakes() -> None:
    chans = shared_channels()
    for k in (999, 0):
        t = Background(lambda: asyncio.run(csp.Alt(*chans).aselect()))
        at = wake_after_quiet(chans, k, time.process_time)
        assert t.join(timeout=60) == (chans[k], f"to {k}")
        assert time.monotonic() - at < PROMPT


@pytest.mark.parametrize("how", ["thread", "greenlet"])
def test_a_local_guard_beside_1000_shared_ones_wakes_the_alt(how: str) -> None:
    # An in-process counterpart fires the selection's cell without any shared channel moving:
    # the cell's word and bell are among the words the watchers hold for it.
    chans = shared_channels()
    local = csp.Channel(name="local")
    got: list[Any] = []

    @csp.process
    def choose() -> None:
        got.append(csp.Alt(*chans, local).select())

    if how == "thread":
        running: Any = Background(lambda: got.append(csp.Alt(*chans, local).select()))
    else:
        running = csp.Par(choose(), backend="greenlet").start()
    wait_until(lambda: all_waiting(chans), 60.0, "the Alt registered on every channel")
    wait_until(lambda: local.stats().readers_waiting == 1, 60.0, "the local guard registered")
    c0, t0 = time.process_time(), time.monotonic()
    time.sleep(QUIET)
    assert_slept("the process", time.process_time() - c0, time.monotonic() - t0)
    at = time.monotonic()
    local.write("local")
    running.join(timeout=60)
    assert time.monotonic() - at < PROMPT
    assert got == [(local, "local")]
    assert not any(c.stats().readers_waiting for c in chans)
