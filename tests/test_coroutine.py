"""The native coroutine backend (``backend="coroutine"``): what the shared suites do not show.

The shared suites (tests/_kit.py) run every body on it too; these tests cover what is its
own: how it is chosen, what a coroutine may await there, running inline, mixing, nesting in
OS processes, many processes, timers, ``aio`` and the errors of misuse.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from typing import Any

import pytest

import ferrocsp as csp
from _support import wait_until
from ferrocsp._native import _in_coroutine

pytestmark = pytest.mark.timeout(60)


async def echo(inp: csp.Reader, out: csp.Writer, n: int) -> int:
    for _ in range(n):
        await out.awrite(await inp.aread())
    return n


async def produce(out: csp.Writer, n: int) -> str:
    for i in range(n):
        await out.awrite(i)
    out.retire()
    return "produced"


async def collect(inp: csp.Reader) -> list[int]:
    return [v async for v in inp]


async def take(inp: csp.Reader, n: int) -> list[int]:
    return [await inp.aread() for _ in range(n)]


async def where() -> tuple[bool, bool]:
    """(runs on the coroutine scheduler, has an event loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        loop = False
    else:
        loop = True
    return _in_coroutine(), loop


def test_backend_is_chosen_by_the_process_or_its_par() -> None:
    on = csp.process(where, backend="coroutine")
    assert csp.Par(on()).run() == [(True, False)]
    default = csp.process(where)
    assert csp.Par(default()).run() == [(False, True)]  # async def defaults to asyncio
    assert csp.Par(default(), backend="coroutine").run() == [(True, False)]
    # A process that asked for asyncio keeps it inside a coroutine Par.
    asked = csp.process(where, backend="asyncio")
    assert csp.Par(asked(), backend="coroutine").run() == [(False, True)]


def test_plain_functions_beside_coroutines_run_on_the_default_backend() -> None:
    ch = csp.Channel()

    def plain_consumer(inp: csp.Reader) -> list[int]:
        return list(inp)

    got = csp.Par(
        csp.process(produce)(ch.writer(), 50), csp.Process(plain_consumer, (ch.reader(),))
    ).run()
    assert got == ["produced", list(range(50))]
    got = csp.Par(
        csp.process(produce)(ch.writer(), 5),
        csp.Process(plain_consumer, (ch.reader(),)),
        backend="coroutine",
    ).run()
    assert got == ["produced", list(range(5))]


def test_misuse_names_the_backend() -> None:
    def plain() -> None:
        pass

    with pytest.raises(ValueError, match="'coroutine' runs async def functions"):
        csp.process(plain, backend="coroutine")
    with pytest.raises(ValueError, match="'coroutine' cannot be the default backend"):
        csp.set_default_backend("coroutine")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'coroutine' runs async def functions"):
        csp.Process(plain, backend="coroutine")


def test_process_run_steps_it_in_the_calling_thread() -> None:
    assert csp.process(where, backend="coroutine")().run() == (True, False)
    assert not _in_coroutine()


def test_awaiting_an_asyncio_future_is_a_clear_error() -> None:
    loop = asyncio.new_event_loop()

    async def sleeper() -> None:
        await loop.create_future()  # needs its loop to run: not there

    with pytest.raises(ExceptionGroup) as info:
        csp.Par(csp.process(sleeper, backend="coroutine")()).run()
    loop.close()
    (exc,) = info.value.exceptions
    assert isinstance(exc, RuntimeError)
    assert "'coroutine' backend awaited <Future" in str(exc)
    assert "asyncio" in str(exc)


def test_a_bare_yield_gives_the_others_a_turn() -> None:
    order: list[str] = []

    async def polite(tag: str) -> None:
        for i in range(3):
            order.append(f"{tag}{i}")
            await asyncio.sleep(0)  # a bare yield: no event loop needed

    csp.Par(*(csp.process(polite, backend="coroutine")(t) for t in "ab")).run()
    assert order == ["a0", "b0", "a1", "b1", "a2", "b2"]


def test_mixes_with_every_other_backend_in_one_network() -> None:
    a, b, c, d = csp.Channel(), csp.Channel(), csp.Channel(), csp.Channel()

    def thread_echo(inp: csp.Reader, out: csp.Writer, n: int) -> int:
        for _ in range(n):
            out.write(inp.read())
        return n

    async def asyncio_echo(inp: csp.Reader, out: csp.Writer, n: int) -> int:
        for _ in range(n):
            await out.awrite(await inp.aread())
        return n

    n = 200
    results = csp.Par(
        csp.process(produce, backend="coroutine")(a.writer(), n),
        csp.Process(thread_echo, (a.reader(), b.writer(), n), backend="thread"),
        csp.Process(thread_echo, (b.reader(), c.writer(), n), backend="greenlet"),
        csp.process(asyncio_echo)(c.reader(), d.writer(), n),
        csp.process(take, backend="coroutine")(d.reader(), n),
    ).run()
    assert results[-1] == list(range(n))


def test_timeouts_and_timeout_guards_fire() -> None:
    ch = csp.Channel()

    async def waits() -> tuple[str, float]:
        t = time.monotonic()
        try:
            await ch.aread(timeout=0.05)
        except TimeoutError:
            pass
        else:
            raise AssertionError("read returned")
        guard, _ = await csp.Alt(ch, csp.Timeout(0.05)).aselect()
        return type(guard).__name__, time.monotonic() - t

    kind, took = csp.Par(csp.process(waits, backend="coroutine")()).run()[0]
    assert kind == "Timeout"
    assert took >= 0.1


def test_alt_selects_among_ready_and_waiting_guards() -> None:
    a, b = csp.Channel(), csp.Channel()

    async def chooser(n: int) -> list[int]:
        got = []
        alt = csp.Alt(a, b)
        for _ in range(n):
            _, v = await alt.afair_select()
            got.append(v)
        return got

    got = csp.Par(
        csp.process(produce, backend="coroutine")(a.writer(), 100),
        csp.process(produce, backend="coroutine")(b.writer(), 100),
        csp.process(chooser, backend="coroutine")(200),
    ).run()[2]
    assert sorted(got) == sorted([*range(100), *range(100)])


def test_aio_runs_a_blocking_call_while_the_others_run() -> None:
    ticks: list[int] = []

    async def blocking() -> str:
        return await csp.aio(time.sleep, 0.2) or "slept"

    async def ticker() -> None:
        for i in range(5):
            ticks.append(i)
            await asyncio.sleep(0)

    async def fails() -> None:
        await csp.aio(int, "not a number")

    results = csp.Par(
        csp.process(blocking, backend="coroutine")(),
        csp.process(ticker, backend="coroutine")(),
    ).run()
    assert results[0] == "slept"
    assert ticks == list(range(5))
    with pytest.raises(ExceptionGroup) as info:
        csp.Par(csp.process(fails, backend="coroutine")()).run()
    assert isinstance(info.value.exceptions[0], ValueError)


def test_a_deadlock_among_coroutines_is_reported_with_their_names() -> None:
    a, b = csp.Channel(name="a"), csp.Channel(name="b")

    async def first() -> None:
        await a.aread()

    async def second() -> None:
        await b.aread()

    with pytest.raises(ExceptionGroup) as info:
        csp.Par(
            csp.process(first, backend="coroutine")(),
            csp.process(second, backend="coroutine")(),
        ).run()
    text = " ".join(str(e) for e in info.value.exceptions)
    assert all(isinstance(e, csp.Deadlock) for e in info.value.exceptions)
    # (after OS processes ran in this interpreter, each name is followed by its pid)
    assert re.search(r"'first' (\(pid \d+\) )?reads 'a'", text)
    assert re.search(r"'second' (\(pid \d+\) )?reads 'b'", text)


def test_failure_poisons_the_peers_and_is_noted() -> None:
    ch = csp.Channel()

    async def bad(out: csp.Writer) -> None:
        await out.awrite(1)
        raise KeyError("boom")

    with pytest.raises(ExceptionGroup) as info:
        csp.Par(
            csp.process(bad, backend="coroutine")(ch.writer()),
            csp.process(collect, backend="coroutine")(ch.reader()),
        ).run()
    (exc,) = info.value.exceptions
    assert isinstance(exc, KeyError)
    assert "in process 'bad'" in exc.__notes__[0]
    assert ch.stats().poisoned


def test_wrong_arguments_fail_the_process_not_the_scheduler() -> None:
    with pytest.raises(ExceptionGroup) as info:
        csp.Par(
            csp.process(produce, backend="coroutine")(),  # missing arguments
            csp.process(where, backend="coroutine")(),
        ).run()
    (exc,) = info.value.exceptions
    assert isinstance(exc, TypeError)


def test_many_processes_on_one_scheduler() -> None:
    n = 2000
    chans = [csp.Channel() for _ in range(n + 1)]

    async def head(out: csp.Writer) -> None:
        await out.awrite(0)

    async def hop(inp: csp.Reader, out: csp.Writer) -> None:
        await out.awrite(await inp.aread() + 1)

    async def tail(inp: csp.Reader) -> int:
        return await inp.aread()

    procs = [csp.process(head, backend="coroutine")(chans[0].writer())]
    procs += [
        csp.process(hop, backend="coroutine")(chans[i].reader(), chans[i + 1].writer())
        for i in range(n)
    ]
    procs.append(csp.process(tail, backend="coroutine")(chans[n].reader()))
    assert csp.Par(*procs).run()[-1] == n


def test_runs_in_os_processes_and_threads_by_nesting() -> None:
    n = 30
    nested = csp.Par(
        csp.Par(_ring_network(n), backend="os"),
        csp.Par(_ring_network(n), backend="thread"),
    )
    assert nested.run() == [[["produced", list(range(n))]], [["produced", list(range(n))]]]


def _ring_network(n: int) -> csp.Par:
    ch = csp.Channel()
    return csp.Par(
        csp.process(produce, backend="coroutine")(ch.writer(), n),
        csp.process(collect, backend="coroutine")(ch.reader()),
    )


def test_shared_channel_with_an_os_process() -> None:
    ch = csp.Channel()
    got = csp.Par(
        csp.Process(_os_producer, (ch.writer(), 20), backend="os"),
        csp.process(collect, backend="coroutine")(ch.reader()),
    ).run()
    assert got == [None, list(range(20))]


def _os_producer(out: csp.Writer, n: int) -> None:
    for i in range(n):
        out.write(i)
    out.retire()


def test_spawn_and_join_from_another_thread() -> None:
    ch = csp.Channel()
    h = csp.Spawn(csp.process(produce, backend="coroutine")(ch.writer(), 3))
    got: list[int] = []
    t = threading.Thread(target=lambda: got.extend(ch.reader()))
    t.start()
    assert h.join(timeout=10) == "produced"
    t.join(10)
    assert got == [0, 1, 2]


def _os_write(ch: csp.Channel, value: int) -> None:
    ch.write(value)


def _os_read(ch: csp.Channel) -> int:
    value: int = ch.read()
    return value


def test_a_wait_goes_on_when_its_channel_moves_to_shared_memory() -> None:
    """A coroutine blocked on an in-process channel that then moves to shared memory (an
    ``os`` process got it) goes on there: nothing lost, nothing sent twice."""
    ch = csp.Channel(name="moving")

    async def reader() -> int:
        value: int = await ch.aread()
        return value

    h = csp.Spawn(csp.process(reader, backend="coroutine")())
    wait_until(lambda: ch.stats().readers_waiting == 1, what="reader blocked")
    csp.Par(csp.Process(_os_write, (ch, 42), backend="os")).run()
    assert h.join(timeout=20) == 42

    out = csp.Channel(name="moving-out")

    async def writer() -> str:
        await out.awrite(7)
        return "sent"

    h = csp.Spawn(csp.process(writer, backend="coroutine")())
    wait_until(lambda: out.stats().writers_waiting == 1, what="writer blocked")
    assert csp.Par(csp.Process(_os_read, (out,), backend="os")).run() == [7]
    assert h.join(timeout=20) == "sent"


@pytest.mark.timeout(20)
@pytest.mark.parametrize("make", ["read", "alt"])
def test_one_waiting_operation_awaited_by_two_processes(make: str) -> None:
    # As on asyncio: the second awaiter gets a clear error and the first still gets the value
    # (it hung: the second process's step yielded the scheduler's marker with no wake-up of its
    # own registered, so nothing ever stepped it again).
    ch = csp.Channel()
    ops: list[Any] = []

    async def first() -> object:
        ops.append(ch.aread() if make == "read" else csp.Alt(ch).aselect())
        return await ops[0]

    async def second() -> str:
        try:
            await ops[0]
        except RuntimeError as e:
            return str(e)
        return "no error"

    async def writer() -> None:
        await ch.awrite("v")

    got = csp.Par(
        csp.process(first)(), csp.process(second)(), csp.process(writer)(), backend="coroutine"
    ).run()
    assert got[0] == ("v" if make == "read" else (ch, "v"))
    assert "already being awaited" in str(got[1])


def test_a_waiting_alt_goes_on_when_its_channel_moves_to_shared_memory() -> None:
    """An Alt blocked in a coroutine on in-process channels, one of which then moves to shared
    memory (an ``os`` process writes to it), goes on through the general path: the write is
    chosen, nothing is lost or chosen twice."""
    ch, other = csp.Channel(name="moving-alt"), csp.Channel(name="idle")

    async def selector() -> tuple[object, object]:
        guard, value = await csp.Alt(ch, other).aselect()
        return guard, value

    h = csp.Spawn(csp.process(selector, backend="coroutine")())
    wait_until(lambda: ch.stats().readers_waiting == 1, what="the Alt blocked")
    csp.Par(csp.Process(_os_write, (ch, 42), backend="os")).run()
    assert h.join(timeout=20) == (ch, 42)
    assert other.stats().readers_waiting == 0


@pytest.mark.timeout(20)
@pytest.mark.parametrize("make", ["read", "alt"])
def test_a_waiting_operation_withdraws_on_throw_and_close(make: str) -> None:
    # An op stepped by hand inside its own coroutine process: once registered, an exception
    # thrown in withdraws it (and propagates), `close` withdraws it, and a communication that
    # completed before the throw is returned instead of the exception (never lost).
    ch = csp.Channel(name="hand")

    def op() -> Any:
        return ch.aread() if make == "read" else csp.Alt(ch).aselect()

    def registered() -> bool:
        return ch.stats().readers_waiting == 1

    async def body() -> list[object]:
        seen: list[object] = []
        thrown = op()
        thrown.send(None)  # registers and yields the scheduler's marker
        seen.append(registered())
        with pytest.raises(KeyError):
            thrown.throw(KeyError("withdraw"))
        seen.append(registered())
        closed = op()
        closed.send(None)
        closed.close()
        seen.append(registered())
        won = op()
        won.send(None)
        writer = threading.Thread(target=ch.write, args=("v",))
        writer.start()
        await csp.aio(writer.join)  # the thread's write completes the registration
        with pytest.raises(StopIteration) as stop:
            won.throw(KeyError("too late"))
        seen.append(stop.value.value)
        return seen

    got = csp.Par(csp.process(body)(), backend="coroutine").run()[0]
    assert got == [True, False, False, "v" if make == "read" else (ch, "v")]
