"""Processes for tests/test_deadlock_os.py: module-level, so an OS child imports them by
reference (the test programs run with ``python -c``, whose ``__main__`` a child cannot
import)."""

from __future__ import annotations

import time

import ferrocsp as csp

__all__ = [
    "aio_echo_os",
    "aio_relay_os",
    "alt_reader_os",
    "big_alt_os",
    "busy_then_write",
    "die_after_start",
    "echo_with_pauses",
    "greenlet_big_alt_os",
    "greenlet_echo_os",
    "greenlet_relay_os",
    "left",
    "nested_os",
    "read_with_timeout_then_write",
    "relay_os",
    "waiter_os",
]


@csp.process
def left(inp: csp.Reader, out: csp.Writer) -> None:
    out.write(inp.read())


@csp.process(backend="os")
def relay_os(inp: csp.Reader, out: csp.Writer) -> None:
    out.write(inp.read())


@csp.process(backend="os")
def busy_then_write(out: csp.Writer, seconds: float) -> int:
    # Computing, not waiting: the parent blocked on `out` must not be reported meanwhile.
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
    out.write(n)
    return n


@csp.process(backend="os")
def waiter_os(inp: csp.Reader) -> object:
    return inp.read()


@csp.process(backend="os")
def read_with_timeout_then_write(inp: csp.Reader, out: csp.Writer, seconds: float) -> str:
    # Blocked with a deadline: never stuck, so the parent waiting for `out` is not reported.
    try:
        inp.read(timeout=seconds)
    except TimeoutError:
        out.write("timed out")
        return "timed out"
    return "read"


@csp.process(backend="os")
def die_after_start(out: csp.Writer) -> None:
    import os
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


@csp.process(backend="os")
def echo_with_pauses(inp: csp.Reader, out: csp.Writer, seed: int) -> int:
    # Replies to each value after a pause of 0 to 60 ms now and then: while it sleeps it runs,
    # while it waits for the next value it may be confirmed stuck; never both deadlocked.
    import random

    rng = random.Random(seed)
    n = 0
    for v in inp:
        if rng.random() < 0.3:
            time.sleep(rng.random() * 0.06)
        out.write(v)
        n += 1
    return n


@csp.process(backend="os")
def alt_reader_os(a: csp.Reader, b: csp.Reader) -> object:
    return csp.Alt(a, b).select()[1]


@csp.process(backend="os")
def big_alt_os(chans: list[csp.Channel]) -> object:
    # More channels than one futex_waitv takes: the thread's wait goes through the futex
    # watchers, and its quiet slices must still confirm it.
    return csp.Alt(*chans).select()[1]


@csp.process
def big_alt_co(chans: list[csp.Channel]) -> object:
    return csp.Alt(*chans).select()[1]


@csp.process(backend="os")
def greenlet_big_alt_os(chans: list[csp.Channel]) -> object:
    # The same choice by a greenlet: a registration split over two watchers, whose quiet
    # hook (on one part) looks at the other part too.
    return csp.Par(big_alt_co(chans), backend="greenlet").run()


@csp.process(backend="os")
def nested_os(a: csp.Reader, b: csp.Writer) -> object:
    # An OS process that starts its own OS child: the grandchild attaches to the same table.
    return csp.Par(relay_os(a, b)).run()


# Cooperative processes in an OS child, on the shared channels of the parent's network: their
# waits are confirmed by the child's futex watchers (deadlock/xwait.rs), not by sleep slices.


@csp.process
def relay_co(inp: csp.Reader, out: csp.Writer) -> None:
    out.write(inp.read())


@csp.process
async def relay_aio(inp: csp.Reader, out: csp.Writer) -> None:
    await out.awrite(await inp.aread())


@csp.process(backend="os")
def greenlet_relay_os(inp: csp.Reader, out: csp.Writer) -> object:
    # The greenlet process reads `inp` forever; a greenlet bystander reads a channel of its own
    # (also forever), so the child's only thread hosts nothing but waiting greenlets.
    idle = csp.Channel(name="idle")
    return csp.Par(relay_co(inp, out), relay_co(idle, idle), backend="greenlet").run()


@csp.process(backend="os")
def aio_relay_os(inp: csp.Reader, out: csp.Writer) -> object:
    # As greenlet_relay_os, with asyncio processes (an async Par runs on an event loop).
    idle = csp.Channel(name="idle")
    return csp.Par(relay_aio(inp, out), relay_aio(idle, idle)).run()


@csp.process
def echo_co(inp: csp.Reader, out: csp.Writer, pause: float) -> int:
    n = 0
    for v in inp:
        if n % 3 == 0:
            time.sleep(pause)  # a greenlet that computes holds its thread: it runs
        out.write(v)
        n += 1
    return n


@csp.process
async def echo_aio(inp: csp.Reader, out: csp.Writer, pause: float) -> int:
    n = 0
    async for v in inp:
        if n % 3 == 0:
            time.sleep(pause)  # computing on the loop's thread: it runs
        await out.awrite(v)
        n += 1
    return n


@csp.process(backend="os")
def greenlet_echo_os(inp: csp.Reader, out: csp.Writer, pause: float) -> object:
    return csp.Par(echo_co(inp, out, pause), backend="greenlet").run()


@csp.process(backend="os")
def aio_echo_os(inp: csp.Reader, out: csp.Writer, pause: float) -> object:
    return csp.Par(echo_aio(inp, out, pause)).run()
