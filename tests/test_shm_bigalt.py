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
#: Time for an Alt that registered to go to sleep (seconds; generous for a loaded machine).
SETTLE = 0.3


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


def quiet_cpu(clock: int | None = None) -> tuple[float, float]:
    """Lets a waiting Alt settle into its sleep, then returns the CPU time of ``clock`` (a
    thread's CPU clock; None: the whole process's) and the wall time over QUIET seconds of it:
    the Alt's own steps before (building 1,000 guards, scanning them) are work, not waiting."""
    read = time.process_time if clock is None else lambda: time.clock_gettime(clock)
    time.sleep(SETTLE)
    c0, t0 = read(), time.monotonic()
    time.sleep(QUIET)
    return read() - c0, time.monotonic() - t0


def wake_after_quiet(chans: list[csp.Channel], k: int, thread: int | None = None) -> float:
    """Once the Alt waits on every channel, checks that it sleeps (on thread ``thread``, or
    anywhere in the process: a cooperative Alt's sleeping is done by the watcher threads),
    then writes on channel ``k``; returns when it wrote."""
    wait_until(lambda: all_waiting(chans), 60.0, "the Alt registered on every channel")
    clock = None if thread is None else time.pthread_getcpuclockid(thread)
    assert_slept("the selecting thread" if thread else "the process", *quiet_cpu(clock))
    at = time.monotonic()
    chans[k].write(f"to {k}")
    return at


def test_a_thread_alt_over_1000_shared_channels_sleeps_and_wakes() -> None:
    chans = shared_channels()
    alt = csp.Alt(*chans)
    for k in (999, 0, 500):
        t = Background(alt.select)
        at = wake_after_quiet(chans, k, t.thread.ident)
        assert t.join(timeout=60) == (chans[k], f"to {k}")
        assert time.monotonic() - at < PROMPT
        assert not any(c.stats().readers_waiting for c in chans)


def test_the_main_thread_alt_over_1000_shared_channels_sleeps() -> None:
    # The main thread sleeps in slices (signal handlers run between them): a slice in which
    # nothing moved must not make the Alt step over every channel again and again.
    main = threading.main_thread()
    assert threading.current_thread() is main
    assert main.ident is not None
    chans = shared_channels()
    clock = time.pthread_getcpuclockid(main.ident)
    sampler = Background(quiet_cpu, clock)
    t0 = time.monotonic()
    guard, _ = csp.Alt(*chans, timeout := csp.Timeout(SETTLE + QUIET + 0.2)).select()
    assert guard is timeout
    assert time.monotonic() - t0 < SETTLE + QUIET + 0.2 + PROMPT
    assert_slept("the main thread", *sampler.join(timeout=60))
    sampler = Background(quiet_cpu, clock)
    writer = threading.Timer(SETTLE + QUIET + 0.2, lambda: chans[999].write("late"))
    writer.start()
    guard, value = csp.Alt(*chans).select()
    at = time.monotonic()
    writer.join()
    assert (guard, value) == (chans[999], "late")
    assert_slept("the main thread", *sampler.join(timeout=60))
    assert at - t0 < 2 * (SETTLE + QUIET + 0.2) + PROMPT


def test_a_greenlet_alt_over_1000_shared_channels_sleeps_and_wakes() -> None:
    chans = shared_channels()
    got: list[Any] = []

    @csp.process
    def choose() -> None:
        got.append(csp.Alt(*chans).select())

    for k in (999, 0):
        got.clear()
        par = csp.Par(choose(), backend="greenlet").start()
        at = wake_after_quiet(chans, k)
        par.join(timeout=60)
        assert time.monotonic() - at < PROMPT
        assert got == [(chans[k], f"to {k}")]


def test_an_asyncio_alt_over_1000_shared_channels_sleeps_and_wakes() -> None:
    chans = shared_channels()
    for k in (999, 0):
        t = Background(lambda: asyncio.run(csp.Alt(*chans).aselect()))
        at = wake_after_quiet(chans, k)
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
    assert_slept("the process", *quiet_cpu())
    at = time.monotonic()
    local.write("local")
    running.join(timeout=60)
    assert time.monotonic() - at < PROMPT
    assert got == [(local, "local")]
    assert not any(c.stats().readers_waiting for c in chans)
