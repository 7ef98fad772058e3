"""Shutdown propagation: poison/retire end processes cleanly and spread; failures.

Every test runs under the thread, greenlet and asyncio backends with one process body
(tests/_kit.py): the shutdown rules must be exactly the same for all three.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import ferrocsp as csp
from _kit import SHARED_BACKENDS, Kit
from _os_support import backend_fixture
from _support import all_exceptions, notes, wait_until

backend = backend_fixture(SHARED_BACKENDS)  # these tests run on OS processes too

pytestmark = pytest.mark.timeout(30)


async def generate(k: Kit, cout: csp.Channel) -> str:
    i = 0
    while True:
        await k.write(cout, i)
        i += 1
    return "unreachable"


async def identity(k: Kit, cin: csp.Channel | csp.Reader, cout: csp.Channel | csp.Writer) -> str:
    while True:
        await k.write(cout, await k.read(cin))
    return "unreachable"


async def take(k: Kit, cin: csp.Channel, n: int) -> list[int]:
    return [await k.read(cin) for _ in range(n)]


async def block_reading(k: Kit, cin: csp.Channel, *others: object, **named: object) -> str:
    await k.read(cin)
    return "read something"


async def failing_worker(k: Kit, cin: csp.Channel, exc: BaseException) -> None:
    raise exc


def worker(k: Kit) -> object:
    return k.process(failing_worker, name="worker")


# --------------------------------------------------------------------------- poison


def test_poisoned_process_result_is_none_and_poison_spreads(k: Kit) -> None:
    c1, c2, c3 = csp.Channel(name="c1"), csp.Channel(name="c2"), csp.Channel(name="c3")
    ident = k.process(identity)
    h = k.Par(k.process(generate)(c1), ident(c1, c2), ident(c2, c3)).start()
    assert [c3.read() for _ in range(10)] == list(range(10))
    c3.poison()  # the sink end: poison flows upstream through identity and generate
    assert h.join(timeout=10) == [None, None, None]
    for ch in (c1, c2, c3):
        assert ch.stats().poisoned, ch.name


async def source(k: Kit, cout: csp.Channel) -> None:
    for i in range(5):
        await k.write(cout, i)
    cout.poison()


async def sink(k: Kit, cin: csp.Channel, report: csp.Channel) -> list[int]:
    return [await k.read(cin) for _ in range(100)]


def test_poison_from_the_source_spreads_downstream(k: Kit) -> None:
    c1, c2, c3 = csp.Channel(), csp.Channel(3), csp.Channel()
    done = csp.Channel()
    ident = k.process(identity)
    results = k.Par(
        k.process(source)(c1), ident(c1, c2), ident(c2, c3), k.process(sink)(c3, done)
    ).run()
    assert results == [None, None, None, None]
    for ch in (c1, c2, c3, done):
        assert ch.stats().poisoned


def test_channels_in_containers_and_kwargs_are_poisoned(k: Kit) -> None:
    trigger = csp.Channel(name="trigger")
    in_list = [csp.Channel(name="l0"), csp.Channel(2, name="l1")]
    in_tuple = (csp.Channel(name="t0"),)
    in_dict = {"x": csp.Channel(name="d0")}
    by_kw = csp.Channel(name="kw")
    untouched = csp.Channel(name="not-an-argument")

    h = k.Par(k.process(block_reading)(trigger, in_list, in_tuple, in_dict, out=by_kw)).start()
    wait_until(lambda: trigger.stats().readers_waiting == 1, what="process blocked")
    trigger.poison()
    assert h.join(timeout=10) == [None]
    for ch in [*in_list, *in_tuple, *in_dict.values(), by_kw]:
        assert ch.stats().poisoned, ch.name
    assert not untouched.stats().poisoned


def test_ends_in_args_poisoned_on_poison(k: Kit) -> None:
    trigger = csp.Channel()
    down = csp.Channel(name="down")
    side = csp.Channel(name="side")
    r, w = trigger.reader(), down.writer()
    side_reader = side.reader()
    h = k.Par(k.process(block_reading)(r, w, ends={"s": side_reader})).start()
    wait_until(lambda: trigger.stats().readers_waiting == 1, what="process blocked")
    trigger.poison()
    assert h.join(timeout=10) == [None]
    assert down.stats().poisoned
    assert side.stats().poisoned


async def producer(k: Kit, cout: csp.Writer, n: int) -> str:
    with cout:
        for i in range(n):
            await k.write(cout, i)
    return "done"


async def consumer(k: Kit, cin: csp.Reader) -> list[int]:
    return [v async for v in k.iter(cin)]


def test_retire_spreads_through_pipeline_of_ends(k: Kit) -> None:
    a, b = csp.Channel(name="a"), csp.Channel(name="b")
    a_w, a_r = a.writer(), a.reader()
    b_w, b_r = b.writer(), b.reader()

    # identity ends by ChannelRetired (a is retired): it must retire b_w, ending consumer
    results = k.Par(
        k.process(producer)(a_w, 10), k.process(identity)(a_r, b_w), k.process(consumer)(b_r)
    ).run()
    assert results == ["done", None, list(range(10))]
    assert b.stats().retired
    assert not b.stats().poisoned
    with pytest.raises(csp.ChannelRetired):
        b_w.write(0)


async def fan(
    k: Kit, cin: csp.Reader, couts: list[csp.Writer], more: dict[str, csp.Writer]
) -> None:
    while True:
        v = await k.read(cin)
        for w in couts:
            await k.write(w, v)


def test_retired_ends_in_containers_are_retired(k: Kit) -> None:
    a = csp.Channel(name="a")
    a_r, a_w = a.reader(), a.writer()
    outs = [csp.Channel(1, name=f"o{i}") for i in range(3)]
    out_ws = [o.writer() for o in outs]
    extra = csp.Channel(1, name="extra")

    h = k.Par(k.process(fan)(a_r, out_ws, more={"w": extra.writer()})).start()
    a_w.write(1)
    a_w.retire()
    assert h.join(timeout=10) == [None]
    for o in outs:
        assert o.stats().retired, o.name
        assert o.read() == 1
        with pytest.raises(csp.ChannelRetired):
            o.read()
    assert extra.stats().retired
    assert not extra.stats().poisoned


def test_process_ending_by_retired_read_returns_none(k: Kit) -> None:
    ch = csp.Channel()
    r = ch.reader()
    ch.writer().retire()
    assert k.Par(k.process(take)(r, 1)).run() == [None]


# --------------------------------------------------------------------------- failure


def test_failure_raises_group_with_note_and_peers_stop(k: Kit) -> None:
    shared = csp.Channel(name="shared")
    with pytest.raises(ExceptionGroup) as info:
        k.Par(worker(k)(shared, ValueError("bad value")), k.process(block_reading)(shared)).run()
    group = info.value
    assert len(group.exceptions) == 1
    exc = group.exceptions[0]
    assert isinstance(exc, ValueError)
    assert str(exc) == "bad value"
    assert notes(exc) == "in process 'worker'"
    assert shared.stats().poisoned


async def writes_forever(k: Kit, cout: csp.Channel) -> None:
    while True:
        await k.write(cout, 1)


def test_failure_stops_peer_blocked_writing(k: Kit) -> None:
    shared = csp.Channel()

    with pytest.raises(ExceptionGroup) as info:
        k.Par(k.process(writes_forever)(shared), worker(k)(shared, RuntimeError("crash"))).run()
    assert [type(e) for e in all_exceptions(info.value)] == [RuntimeError]


def test_failure_poisons_peers_transitively(k: Kit) -> None:
    c1, c2, c3 = csp.Channel(), csp.Channel(), csp.Channel()
    ident = k.process(identity)
    with pytest.raises(ExceptionGroup):
        k.Par(
            k.process(generate)(c1),
            ident(c1, c2),
            ident(c2, c3),
            worker(k)(c3, ZeroDivisionError("deep")),
        ).run()
    for ch in (c1, c2, c3):
        assert ch.stats().poisoned


async def first(k: Kit, ch: csp.Channel) -> None:
    raise ValueError("one")


async def second(k: Kit, ch: csp.Channel) -> None:
    raise TypeError("two")


def test_several_failures_all_reported_with_their_names(k: Kit) -> None:
    shared = csp.Channel()

    with pytest.raises(ExceptionGroup) as info:
        k.Par(k.process(first)(shared), k.process(second)(shared)).run()
    assert info.value.message == "Par(first, second): 2 of 2 processes failed"
    by_type = {type(e): e for e in info.value.exceptions}
    assert set(by_type) == {ValueError, TypeError}
    assert notes(by_type[ValueError]) == "in process 'first'"
    assert notes(by_type[TypeError]) == "in process 'second'"


async def plain_failure(k: Kit) -> None:
    raise OSError("plain")


async def one(k: Kit) -> int:
    return 1


def test_failure_of_plain_callable_names_it(k: Kit) -> None:
    with pytest.raises(ExceptionGroup) as info:
        k.Par(k.callable(plain_failure), k.callable(one)).run()
    (exc,) = info.value.exceptions
    assert isinstance(exc, OSError)
    assert notes(exc) == "in process 'plain_failure'"


async def cleans_up(k: Kit, cin: csp.Channel, report: SimpleNamespace) -> None:
    try:
        await k.read(cin)
    finally:
        report.finished.write_nowait("cleaned up")  # buffered: the test reads it after the Par


def test_par_waits_for_every_process_before_raising(k: Kit) -> None:
    # Wrapped: a channel argument would be poisoned (dropping the report) as the process ends.
    report = SimpleNamespace(finished=csp.Channel(1))
    shared = csp.Channel()
    with pytest.raises(ExceptionGroup):
        k.Par(k.process(cleans_up)(shared, report), worker(k)(shared, ValueError("x"))).run()
    assert report.finished.read_nowait() == "cleaned up"


def test_poisoned_peer_is_not_reported_as_failure(k: Kit) -> None:
    shared = csp.Channel()
    block = k.process(block_reading)
    with pytest.raises(ExceptionGroup) as info:
        k.Par(block(shared), block(shared), worker(k)(shared, LookupError("only me"))).run()
    assert [type(e) for e in info.value.exceptions] == [LookupError]


def test_failure_in_spawn_and_nested_par_groups(k: Kit) -> None:
    """A failure inside a nested Par reaches the outer Par as a group inside the group, with
    the inner process's note, and poisons the channels the outer network shares with it."""
    shared = csp.Channel(name="shared")
    inner = k.Par(worker(k)(shared, KeyError("inner")))
    with pytest.raises(ExceptionGroup) as info:
        k.Par(inner, k.process(block_reading)(shared)).run()
    (nested,) = info.value.exceptions
    assert isinstance(nested, ExceptionGroup)
    assert notes(nested) == "in process 'Par(worker)'"
    (exc,) = nested.exceptions
    assert isinstance(exc, KeyError)
    assert notes(exc) == "in process 'worker'"
    assert shared.stats().poisoned


async def interrupted(k: Kit, c: csp.Channel) -> None:
    raise KeyboardInterrupt


async def feed(k: Kit, out: csp.Channel, finished: csp.Channel) -> None:
    for i in range(3):
        await k.write(out, i)
    finished.write_nowait("fed")


async def eat(k: Kit, inp: csp.Channel, finished: csp.Channel) -> None:
    finished.write_nowait([await k.read(inp) for _ in range(3)])


def test_keyboard_interrupt_raised_by_a_process_fails_only_that_process(k: Kit) -> None:
    """A process of a network that raises KeyboardInterrupt itself (Ctrl-C only reaches the
    main thread) is a failure like any other on every backend: its channels are poisoned, its
    siblings (on a greenlet backend: the same scheduler) run to their end, and the group holds
    the interrupt, noted with the process."""
    ch, other = csp.Channel(name="interrupted"), csp.Channel(name="other")
    finished = csp.Channel(2, name="finished")  # buffered: read after the Par
    with pytest.raises(BaseExceptionGroup) as info:
        k.Par(
            k.process(interrupted)(ch),
            k.process(feed)(other, finished),
            k.process(eat)(other, finished),
        ).run()
    assert sorted([finished.read_nowait(), finished.read_nowait()], key=str) == [[0, 1, 2], "fed"]
    (exc,) = info.value.exceptions
    assert isinstance(exc, KeyboardInterrupt)
    assert notes(exc) == "in process 'interrupted'"
    assert ch.stats().poisoned
    assert not other.stats().poisoned
