"""asyncio on channels shared with OS processes: an ``async def`` process in the parent talking
to OS-process children, and asyncio inside a child. The event loop is never blocked by a
shared operation, timeouts and poison reach awaiting tasks, choice works over shared channels,
a read waiting when its channel moves follows it, and ``csp.dump()`` shows processes blocked
on shared channels.
(Cancellation races with exact counts are in tests/test_mixing.py, "cancellation".)

Every test runs under ``no_leaks``: no /dev/shm entry and no child process may be left behind.
"""

from __future__ import annotations

import asyncio
import io
from typing import Any

import pytest

import ferrocsp as csp
from _os_support import no_leaks
from _support import wait_until

pytestmark = [pytest.mark.usefixtures("no_leaks"), pytest.mark.timeout(60)]
__all__ = ["no_leaks"]  # fixture, used by name

JOIN = 30.0


@csp.process(backend="os")
def produce(out: csp.Writer, n: int) -> None:
    with out:
        for i in range(n):
            out.write(i)


@csp.process(backend="os")
def echo(inp: csp.Reader, out: csp.Writer) -> None:
    with out:
        for v in inp:
            out.write(v * 2)


@csp.process(backend="os")
def async_child(inp: csp.Reader, out: csp.Writer) -> str:
    """asyncio inside a child: reads with ``async for``, answers with ``awrite``."""

    async def body() -> None:
        with out:
            async for v in inp:
                await out.awrite(v + 1)

    asyncio.run(body())
    return "child done"


def _run(coro: Any) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, JOIN)

    return asyncio.run(bounded())


@pytest.mark.parametrize("capacity", [0, 4])
def test_async_parent_reads_and_writes_a_child(capacity: int) -> None:
    to_child, from_child = csp.Channel(capacity), csp.Channel(capacity)
    w, back = to_child.writer(), from_child.reader()
    h = csp.Spawn(echo(to_child.reader(), from_child.writer()))
    n = 200

    async def main() -> list[int]:
        got: list[int] = []

        async def send() -> None:
            with w:
                for i in range(n):
                    await w.awrite(i)

        sender = asyncio.create_task(send())
        async for v in back:
            got.append(v)
        await sender
        return got

    assert _run(main()) == [2 * i for i in range(n)]
    assert h.join(timeout=JOIN) is None


def test_asyncio_inside_a_child() -> None:
    to_child, from_child = csp.Channel(), csp.Channel(2)
    w, back = to_child.writer(), from_child.reader()
    h = csp.Spawn(async_child(to_child.reader(), from_child.writer()))
    with w:
        for i in range(50):
            w.write(i)
            assert back.read(timeout=JOIN) == i + 1
    assert list(back) == []  # end-of-stream once the child retired its writer
    assert h.join(timeout=JOIN) == "child done"


def test_loop_keeps_running_while_a_shared_read_waits() -> None:
    """A read waiting on a child does not block the loop: a same-loop task makes progress and
    hands the child the go-ahead the read is waiting for."""
    go, data = csp.Channel(), csp.Channel()
    h = csp.Spawn(echo(go.reader(), data.writer()))
    gw, dr = go.writer(), data.reader()

    async def main() -> tuple[int, list[int]]:
        ticks: list[int] = []
        reading = asyncio.create_task(dr.aread())
        for i in range(20):  # the loop runs while the read waits
            ticks.append(i)
            await asyncio.sleep(0)
        assert not reading.done()
        await gw.awrite(21)
        value = await reading
        gw.retire()
        return value, ticks

    assert _run(main()) == (42, list(range(20)))
    assert h.join(timeout=JOIN) is None


def test_shared_aread_times_out_and_poison_wakes_an_awaiting_task() -> None:
    ch = csp.Channel()
    h = csp.Spawn(produce(ch.writer(), 0))  # moves ch to shared memory, writes nothing
    assert h.join(timeout=JOIN) is None

    async def main() -> None:
        with pytest.raises(csp.ChannelRetired):
            await ch.aread()  # its only writer retired: end-of-stream
        ch2 = csp.Channel()
        r = ch2.reader()
        h2 = csp.Spawn(produce(ch2.writer(), 1))
        assert await r.aread(timeout=JOIN) == 0
        assert h2.join(timeout=JOIN) is None
        ch4 = csp.Channel()
        w4 = ch4.writer()
        h4 = csp.Spawn(echo(ch4.reader(), csp.Channel().writer()))
        with pytest.raises(TimeoutError):
            await ch4.aread(timeout=0.05)  # the child only reads ch4: nothing to read here
        waiting = asyncio.create_task(ch4.aread())
        await asyncio.sleep(0)  # let it start waiting (poison wakes it either way)
        ch4.poison()
        with pytest.raises(csp.ChannelPoisoned):
            await waiting
        w4.retire()
        h4.join(timeout=JOIN)

    _run(main())


def test_aselect_over_shared_channels() -> None:
    a, b = csp.Channel(), csp.Channel()
    ha = csp.Spawn(produce(a.writer(), 30))
    hb = csp.Spawn(produce(b.writer(), 30))
    ra, rb = a.reader(), b.reader()

    async def main() -> dict[str, list[int]]:
        got: dict[str, list[int]] = {"a": [], "b": []}
        live = {"a": ra, "b": rb}
        while live:
            alt = csp.Alt(*live.values())
            try:
                guard, value = await alt.afair_select()
            except csp.ChannelRetired:
                break
            name = "a" if guard is ra else "b"
            got[name].append(value)
            if len(got[name]) == 30:
                del live[name]
        return got

    assert _run(main()) == {"a": list(range(30)), "b": list(range(30))}
    assert ha.join(timeout=JOIN) is None
    assert hb.join(timeout=JOIN) is None


@pytest.mark.parametrize("how", ["aread", "reader_aread", "async_for", "aselect"])
def test_async_read_waiting_when_its_channel_moves_follows_it(how: str) -> None:
    """A read already waiting in process when its channel moves to shared memory (a child
    gets the writer) goes on there: it gets the child's values, nothing is lost."""
    ch = csp.Channel()
    r = ch.reader()

    async def main() -> list[int]:
        async def read() -> list[int]:
            if how == "aread":
                return [await ch.aread(), await ch.aread()]
            if how == "reader_aread":
                return [await r.aread(), await r.aread()]
            if how == "async_for":
                return [v async for v in r]
            return [(await csp.Alt(r).aselect())[1] for _ in range(2)]

        reading = asyncio.create_task(read())
        for _ in range(5):
            await asyncio.sleep(0)  # let it start waiting in process (it moves either way)
        assert not reading.done()
        h = csp.Spawn(produce(ch.writer(), 2))
        got = await reading
        assert h.join(timeout=JOIN) is None
        return got

    assert _run(main()) == [0, 1]


@csp.process(backend="os")
def consume(inp: csp.Reader, n: int) -> list[Any]:
    return [inp.read() for _ in range(n)]


@pytest.mark.parametrize("capacity", [0, 1])
@pytest.mark.parametrize("how", ["awrite", "writer_awrite"])
def test_async_write_waiting_when_its_channel_moves_follows_it(how: str, capacity: int) -> None:
    """A write already waiting in process when its channel moves to shared memory (a child
    gets the reader) goes on there: the child reads every value, in order, once. (A blocked
    rendezvous write used to fail with ChannelPoisoned here.)"""
    ch = csp.Channel(capacity)
    w = ch.writer()

    async def main() -> list[Any]:
        async def write() -> None:
            for v in ("a", "b", "c"):
                await (ch.awrite(v) if how == "awrite" else w.awrite(v))

        writing = asyncio.create_task(write())
        for _ in range(5):
            await asyncio.sleep(0)  # let it start waiting in process
        assert not writing.done()
        h = csp.Spawn(consume(ch.reader(), 3))
        await writing
        got: list[Any] = await asyncio.to_thread(h.join, JOIN)
        return got

    assert _run(main()) == ["a", "b", "c"]


# --------------------------------------------------------------------------- csp.dump()


@csp.process
def thread_reader(inp: csp.Channel) -> Any:
    return inp.read()


@csp.process
async def async_reader(inp: csp.Channel) -> Any:
    return await inp.aread()


@pytest.mark.parametrize("reader", [thread_reader, async_reader], ids=["thread", "asyncio"])
def test_dump_shows_a_process_blocked_on_a_shared_channel(reader: Any) -> None:
    """A process blocked on a shared channel is listed as such by ``csp.dump()`` (deadlock
    detection does not see that wait; the dump says so)."""
    go, data = csp.Channel(name="go"), csp.Channel(name="shared-data")
    gw = go.writer()
    h_child = csp.Spawn(echo(go.reader(), data.writer()))  # moves both channels
    h = csp.Spawn(reader(data))
    wanted = "blocked on 'shared-data' read (shared with OS processes"

    def dumped() -> str:
        buf = io.StringIO()
        csp.dump(buf)
        return buf.getvalue()

    wait_until(lambda: wanted in dumped(), what="the blocked read in the dump")
    gw.write(5)
    assert h.join(timeout=JOIN) == 10
    assert wanted not in dumped()
    gw.retire()
    assert h_child.join(timeout=JOIN) is None
