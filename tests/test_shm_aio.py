"""The native asyncio awaitable on channels shared with OS processes (``shm_aio.rs``).

What the broader races in ``test_mixing.py`` and ``test_os_asyncio.py`` do not pin down: a
write cancelled while its large value is being copied by the reader (the hand-off under way
completes, so the value arrives exactly once and the write reports it), a task that is
nothing but the operation (it finishes with the result instead of being re-cancelled), the
coroutine protocol of the awaitable itself (``close``, a foreign exception thrown in, a second
await), and an operation greenlet left sleeping when its loop goes away (no crash at exit).

Every test runs under ``no_leaks``: no /dev/shm entry and no child process may be left behind.
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
import subprocess
import sys
import textwrap
import weakref
from pathlib import Path
from typing import Any

import pytest

import ferrocsp as csp
from _os_support import no_leaks

pytestmark = [pytest.mark.usefixtures("no_leaks"), pytest.mark.timeout(120)]
__all__ = ["no_leaks"]  # fixture, used by name

JOIN = 60.0
#: Large enough that a rendezvous hand-off copies it from the writer's memory
#: (``process_vm_readv``): the writer waits, in the hand-off, until the copy is done.
BIG = 1 << 20


@csp.process(backend="os")
def read_heads(inp: csp.Reader) -> list[int]:
    """Reads until the writer retires; returns each value's 4-byte index."""
    return [int.from_bytes(v[:4], "little") for v in inp]


@csp.process(backend="os")
def read_all(inp: csp.Reader) -> list[Any]:
    return list(inp)


@csp.process(backend="os")
def hold(go: csp.Channel, ch: csp.Channel) -> None:
    """Keeps ``ch`` shared (and unused) until told to end."""
    go.read()


def _big(i: int) -> bytes:
    return i.to_bytes(4, "little") + bytes(BIG)


async def _pause(rng: random.Random) -> None:
    for _ in range(rng.randrange(3)):
        await asyncio.sleep(0)
    if rng.random() < 0.5:
        await asyncio.sleep(rng.random() * 1e-3)


def test_cancelled_large_writes_deliver_each_value_exactly_once() -> None:
    """Writes of 1 MiB values cancelled at random moments, many of them while the reader
    copies the value: a value arrives iff its write returned, once, in order."""
    ch = csp.Channel(name="big")
    r, w = ch.reader(), ch.writer()
    reader = csp.Spawn(read_heads(r))
    sent: list[int] = []

    async def main() -> int:
        rng = random.Random(7)

        async def writer(i: int) -> None:
            await w.awrite(_big(i))
            sent.append(i)

        await w.awrite(_big(0))  # the reader is up
        sent.append(0)
        cancelled = 0
        for i in range(1, 301):
            t = asyncio.create_task(writer(i))
            await _pause(rng)
            t.cancel()
            try:
                await t
            except asyncio.CancelledError:
                cancelled += 1
        w.retire()
        return cancelled

    cancelled = asyncio.run(asyncio.wait_for(main(), JOIN))
    assert reader.join(timeout=JOIN) == sent
    assert 0 < cancelled < 300  # both outcomes of the race happened


def test_a_task_that_is_the_write_itself_keeps_its_result_when_cancelled() -> None:
    """``create_task(w.awrite(v))`` cancelled in the race: a write that completed finishes
    its task normally (not cancelled), one that was withdrawn cancels it; the reader gets
    exactly the values of the tasks that finished normally."""
    ch = csp.Channel(name="bare")
    r, w = ch.reader(), ch.writer()
    reader = csp.Spawn(read_all(r))

    async def main() -> list[int]:
        rng = random.Random(5)
        await w.awrite(-1)  # the reader is up
        sent = [-1]
        for i in range(300):
            t = asyncio.create_task(w.awrite(i))
            await _pause(rng)
            t.cancel()
            try:
                await t
                sent.append(i)
            except asyncio.CancelledError:
                pass
        w.retire()
        return sent

    sent = asyncio.run(asyncio.wait_for(main(), JOIN))
    assert reader.join(timeout=JOIN) == sent
    assert 1 < len(sent) < 301  # both outcomes of the race happened


def test_close_and_a_foreign_exception_withdraw_a_waiting_read() -> None:
    """Driving the awaitable by hand: ``close()`` and ``throw(ValueError)`` on a read waiting
    on a shared channel withdraw it (nothing taken: the next value reaches a live reader), and
    an op that ended cannot be resumed again."""
    ch, go = csp.Channel(name="hand"), csp.Channel(name="go")
    child = csp.Spawn(hold(go, ch))  # `ch` is shared now; only this test writes it

    async def main() -> None:
        op = ch.aread()
        waiter = op.send(None)  # the read must wait: it yields what the task would await
        assert not waiter.done()
        assert ch.stats().readers_waiting == 1
        op.close()
        assert ch.stats().readers_waiting == 0
        with pytest.raises(RuntimeError, match="already awaited"):
            op.send(None)

        op = ch.aread()
        op.send(None)
        assert ch.stats().readers_waiting == 1
        with pytest.raises(ValueError, match="foreign"):
            op.throw(ValueError("foreign"))
        assert ch.stats().readers_waiting == 0

        # Nothing was taken by the abandoned reads: a value written now reaches a live one.
        live = ch.aread()
        task = asyncio.create_task(live)
        while ch.stats().readers_waiting < 1:
            await asyncio.sleep(0.001)
        await asyncio.to_thread(ch.write, "kept")
        assert await task == "kept"
        with pytest.raises(RuntimeError, match="already awaited"):
            live.send(None)

    asyncio.run(asyncio.wait_for(main(), JOIN))
    go.write(None)
    child.join(timeout=JOIN)


EXIT_SCRIPT = """
import asyncio, sys, threading
import ferrocsp as csp


@csp.process(backend="os")
def hold(go, ch):
    go.read()


def leave_waiting(ch, kept):
    # A loop that stops and closes with shared operations still waiting on it: their
    # operation greenlets stay suspended in their sleep. An in-process exchange first, so
    # that the thread also caches Python objects of its own (the loop's run queue).
    loop = asyncio.new_event_loop()
    local = csp.Channel()

    async def exchange():
        t = asyncio.ensure_future(local.aread())
        await asyncio.sleep(0)
        await local.awrite(1)
        await t

    loop.run_until_complete(exchange())
    kept.append(loop.create_task(ch.aread()))
    kept.append(loop.create_task(csp.Alt(ch).aselect()))
    loop.run_until_complete(asyncio.sleep(0.3))
    assert ch.stats().readers_waiting == 2, ch.stats()
    loop.close()


if __name__ == "__main__":
    ch, go = csp.Channel(name="left"), csp.Channel(name="go")
    child = csp.Spawn(hold(go, ch))
    kept = []
    if sys.argv[1] == "thread":
        t = threading.Thread(target=leave_waiting, args=(ch, kept))
        t.start()
        t.join()
    else:
        leave_waiting(ch, kept)
    go.write(None)
    child.join(timeout=30)
    if sys.argv[2] == "drop":
        kept.clear()
        import gc
        gc.collect()
    print("exiting", flush=True)
"""


@pytest.mark.parametrize("where", ["main", "thread"])
@pytest.mark.parametrize("kept", ["keep", "drop"])
def test_operation_greenlets_left_waiting_by_a_closed_loop_do_not_crash_at_exit(
    tmp_path: Path, where: str, kept: str
) -> None:
    """A loop closed (on the main thread, or a thread that then ends) with a shared read and
    an Alt still waiting: the interpreter exits cleanly, whether the tasks are kept until
    exit or dropped and collected first. (It crashed at exit, in the thread-locals' release
    of cached Python objects, while an abandoned operation greenlet held PyO3's count of calls
    into Rust raised: `py_tls.rs`.)"""
    script = tmp_path / "left_waiting.py"
    script.write_text(textwrap.dedent(EXIT_SCRIPT))
    proc = subprocess.run(
        [sys.executable, str(script), where, kept],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        env={**os.environ, "PYTHONFAULTHANDLER": "1"},
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "exiting" in proc.stdout
    assert "Fatal Python error" not in proc.stderr, proc.stderr


class Payload:
    """A value whose lifetime the test watches (module level: picklable by reference)."""


def test_an_idle_operation_greenlet_keeps_nothing_of_its_last_operation() -> None:
    """Once an operation on a shared channel has returned, its pooled operation greenlet holds
    none of it: not the job's arguments (an Alt's output value), not its outcome (the
    exception, whose traceback holds the caller's frame). They held user objects, and with
    them channels and their shared segments, until the thread ended: the soak saw a lane's
    memfds climb with every operation greenlet that joined the pool (up to 64 per thread)."""
    ch = csp.Channel(name="kept")
    go = csp.Channel()
    holder = csp.Spawn(hold(go, ch))
    r = ch.reader()

    async def offered() -> weakref.ref[Payload]:
        p = Payload()
        g, _ = await csp.Alt(csp.Output(ch, p), csp.Timeout(0.01)).aselect()
        assert isinstance(g, csp.Timeout)  # nobody reads: the offer is withdrawn
        return weakref.ref(p)

    async def failed() -> weakref.ref[Payload]:
        p = Payload()
        asyncio.get_running_loop().call_later(0.05, ch.poison)  # while the read waits
        with pytest.raises(csp.ChannelPoisoned):
            await r.aread()
        return weakref.ref(p)

    try:
        sent = asyncio.run(asyncio.wait_for(offered(), JOIN))
        gc.collect()
        assert sent() is None, "the operation greenlet kept the Alt's arguments"
        held = asyncio.run(asyncio.wait_for(failed(), JOIN))
        gc.collect()
        assert held() is None, "the operation greenlet kept the failed read's exception"
    finally:
        go.write(None)
        holder.join(timeout=JOIN)
