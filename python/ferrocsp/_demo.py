"""``ferrocsp demo`` (or ``python -m ferrocsp demo``): small networks that show what ferrocsp
does, in a few seconds.

1. Commstime (the classic occam benchmark): Prefix -> Delta -> Succ -> Prefix, with Delta also
   feeding a consumer; four channel communications per cycle. Once per backend that runs
   plain functions (OS threads; greenlets when that backend is available), and once with
   ``async def`` processes on asyncio.
2. A pipeline generate -> square -> accumulate, shut down by poison from the last stage.
3. Where to go next.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from . import _backends
from ._alt import Alt, Timeout
from ._native import Channel, Reader, Writer
from ._par import Par
from ._process import process

__all__ = ["acommstime", "commstime", "main", "poison_pipeline", "sync_backends"]


@process(name="prefix")
def _prefix(inp: Reader, out: Writer, first: int) -> None:
    out.write(first)
    while True:
        out.write(inp.read())


@process(name="delta")
def _delta(inp: Reader, out_a: Writer, out_b: Writer) -> None:
    while True:
        x = inp.read()
        out_a.write(x)
        out_b.write(x)


@process(name="succ")
def _succ(inp: Reader, out: Writer) -> None:
    while True:
        out.write(inp.read() + 1)


@process(name="consumer")
def _consumer(inp: Reader, cycles: int) -> float:
    inp.read()  # warm up: the network is running
    t0 = time.perf_counter()
    for _ in range(cycles):
        inp.read()
    elapsed = time.perf_counter() - t0
    # Ending by poison stops the whole ring: every process holding one of its channels ends.
    inp.poison()
    return elapsed


def commstime(cycles: int = 20_000, backend: _backends.Backend | None = None) -> float:
    """Runs commstime for ``cycles`` cycles with plain-function processes on ``backend``
    (default: the default backend); returns microseconds per communication."""
    a, b, c, d = (Channel(name=n) for n in ("a", "b", "c", "d"))
    results = Par(
        _prefix(c.reader(), a.writer(), 0),
        _delta(a.reader(), b.writer(), d.writer()),
        _succ(b.reader(), c.writer()),
        _consumer(d.reader(), cycles),
        backend=backend,
    ).run()
    elapsed = results[-1]
    assert elapsed is not None  # the consumer returns; it does not end by poison
    return elapsed / (4 * cycles) * 1e6


# The same four processes as async def: they run as tasks on one asyncio event loop.


@process(name="prefix")
async def _aprefix(inp: Reader, out: Writer, first: int) -> None:
    await out.awrite(first)
    while True:
        await out.awrite(await inp.aread())


@process(name="delta")
async def _adelta(inp: Reader, out_a: Writer, out_b: Writer) -> None:
    while True:
        x = await inp.aread()
        await out_a.awrite(x)
        await out_b.awrite(x)


@process(name="succ")
async def _asucc(inp: Reader, out: Writer) -> None:
    while True:
        await out.awrite(await inp.aread() + 1)


@process(name="consumer")
async def _aconsumer(inp: Reader, cycles: int) -> float:
    await inp.aread()
    t0 = time.perf_counter()
    for _ in range(cycles):
        await inp.aread()
    elapsed = time.perf_counter() - t0
    inp.poison()
    return elapsed


def acommstime(cycles: int = 20_000, backend: _backends.Backend = "asyncio") -> float:
    """Commstime with ``async def`` processes (asyncio or coroutine backend); µs per
    communication."""
    a, b, c, d = (Channel(name=n) for n in ("a", "b", "c", "d"))
    results = Par(
        _aprefix(c.reader(), a.writer(), 0),
        _adelta(a.reader(), b.writer(), d.writer()),
        _asucc(b.reader(), c.writer()),
        _aconsumer(d.reader(), cycles),
        backend=backend,
    ).run()
    elapsed = results[-1]
    assert elapsed is not None  # the consumer returns; it does not end by poison
    return elapsed / (4 * cycles) * 1e6


def sync_backends() -> list[_backends.Backend]:
    """The available backends that run plain functions in this interpreter (thread,
    greenlet); the OS-process backend is left out of the demo."""
    return [b for b in _backends.AVAILABLE if b in ("thread", "greenlet")]


@process(name="generate")
def _generate(out: Writer) -> None:
    n = 0
    while True:
        out.write(n)
        n += 1


@process(name="square")
def _square(inp: Reader, out: Writer) -> None:
    for x in inp:
        out.write(x * x)


@process(name="accumulate")
def _accumulate(inp: Reader, limit: int) -> tuple[int, int]:
    total, count = 0, 0
    while True:
        # An Alt with a Timeout guard: a stalled pipeline would be noticed, not hang.
        guard, value = Alt(inp, Timeout(5.0)).pri_select()
        if isinstance(guard, Timeout):
            raise RuntimeError("pipeline stalled")
        total += value
        count += 1
        if total > limit:
            inp.poison()  # stop everything upstream
            return count, total


def poison_pipeline(limit: int = 10_000) -> tuple[int, int]:
    """Sums squares 0, 1, 4, ... until the sum passes ``limit``; returns (count, total)."""
    numbers, squares = Channel(name="numbers"), Channel(4, name="squares")
    results = Par(
        _generate(numbers.writer()),
        _square(numbers.reader(), squares.writer()),
        _accumulate(squares.reader(), limit),
    ).run()
    last = results[-1]
    assert last is not None  # the accumulator returns; the others end by poison
    count, total = last
    return count, total


_WHERE = {
    "thread": "plain functions, one OS thread each",
    "greenlet": "plain functions, greenlets on one scheduler",
    "asyncio": "async def processes, tasks on one event loop",
    "coroutine": "async def processes on the native scheduler",
}


def main(out: Callable[[str], None] = print, cycles: int = 20_000) -> None:
    """Runs the demos, printing what happened."""
    out(f"ferrocsp demo (backends available: {', '.join(_backends.AVAILABLE)})")
    out(f"1. commstime, a ring of 4 processes, {cycles} cycles of 4 communications:")
    for backend in sync_backends():
        us = commstime(cycles, backend)
        out(f"   {backend:<9} {us:7.2f} us per communication   ({_WHERE[backend]})")
    for backend in ("asyncio", "coroutine"):
        if backend in _backends.AVAILABLE:
            out(
                f"   {backend:<9} {acommstime(cycles, backend):7.2f} us per communication   "
                f"({_WHERE[backend]})"
            )
    count, total = poison_pipeline()
    out("2. generate -> square -> accumulate, stopped by poison when the sum passed 10000:")
    out(f"   {count} squares summed to {total}; every process ended cleanly")
    out("3. where to go next:")
    out("   docs:     mkdocs serve (in the source tree), then http://127.0.0.1:8000:")
    out("             tutorial, semantics (shutdown: poison vs retire), API, performance")
    out("   examples: examples/ in the source tree (python examples/<name>.py)")
    out("   numbers:  ferrocsp bench --quick --out /tmp/perf  (tables and plots)")
