"""Shutdown propagation: poison/retire end processes cleanly and spread; failures."""

from __future__ import annotations

import threading

import pytest

import ferrocsp as csp
from _support import all_exceptions, notes, wait_until

pytestmark = pytest.mark.timeout(30)


@csp.process
def generate(cout: csp.Channel) -> str:
    i = 0
    while True:
        cout.write(i)
        i += 1
    return "unreachable"


@csp.process
def identity(cin: csp.Channel | csp.Reader, cout: csp.Channel | csp.Writer) -> str:
    while True:
        cout.write(cin.read())
    return "unreachable"


@csp.process
def take(cin: csp.Channel, n: int) -> list[int]:
    return [cin.read() for _ in range(n)]


@csp.process
def block_reading(cin: csp.Channel, *others: object, **named: object) -> str:
    cin.read()
    return "read something"


@csp.process(name="worker")
def failing_worker(cin: csp.Channel, exc: BaseException) -> None:
    raise exc


# --------------------------------------------------------------------------- poison


def test_poisoned_process_result_is_none_and_poison_spreads(backend: str) -> None:
    c1, c2, c3 = csp.Channel(name="c1"), csp.Channel(name="c2"), csp.Channel(name="c3")
    h = csp.Par(generate(c1), identity(c1, c2), identity(c2, c3), backend=backend).start()
    assert [c3.read() for _ in range(10)] == list(range(10))
    c3.poison()  # the sink end: poison flows upstream through identity and generate
    assert h.join(timeout=10) == [None, None, None]
    for ch in (c1, c2, c3):
        assert ch.stats().poisoned, ch.name


def test_poison_from_the_source_spreads_downstream(backend: str) -> None:
    c1, c2, c3 = csp.Channel(), csp.Channel(3), csp.Channel()
    done = csp.Channel()

    @csp.process
    def source(cout: csp.Channel) -> None:
        for i in range(5):
            cout.write(i)
        cout.poison()

    @csp.process
    def sink(cin: csp.Channel, report: csp.Channel) -> list[int]:
        return [cin.read() for _ in range(100)]

    results = csp.Par(
        source(c1), identity(c1, c2), identity(c2, c3), sink(c3, done), backend=backend
    ).run()
    assert results == [None, None, None, None]
    for ch in (c1, c2, c3, done):
        assert ch.stats().poisoned


def test_channels_in_containers_and_kwargs_are_poisoned(backend: str) -> None:
    trigger = csp.Channel(name="trigger")
    in_list = [csp.Channel(name="l0"), csp.Channel(2, name="l1")]
    in_tuple = (csp.Channel(name="t0"),)
    in_dict = {"x": csp.Channel(name="d0")}
    by_kw = csp.Channel(name="kw")
    untouched = csp.Channel(name="not-an-argument")

    h = csp.Par(
        block_reading(trigger, in_list, in_tuple, in_dict, out=by_kw), backend=backend
    ).start()
    wait_until(lambda: trigger.stats().readers_waiting == 1, what="process blocked")
    trigger.poison()
    assert h.join(timeout=10) == [None]
    for ch in [*in_list, *in_tuple, *in_dict.values(), by_kw]:
        assert ch.stats().poisoned, ch.name
    assert not untouched.stats().poisoned


def test_ends_in_args_poisoned_on_poison(backend: str) -> None:
    trigger = csp.Channel()
    down = csp.Channel(name="down")
    side = csp.Channel(name="side")
    r, w = trigger.reader(), down.writer()
    side_reader = side.reader()
    h = csp.Par(block_reading(r, w, ends={"s": side_reader}), backend=backend).start()
    wait_until(lambda: trigger.stats().readers_waiting == 1, what="process blocked")
    trigger.poison()
    assert h.join(timeout=10) == [None]
    assert down.stats().poisoned
    assert side.stats().poisoned


def test_retire_spreads_through_pipeline_of_ends(backend: str) -> None:
    a, b = csp.Channel(name="a"), csp.Channel(name="b")
    a_w, a_r = a.writer(), a.reader()
    b_w, b_r = b.writer(), b.reader()

    @csp.process
    def producer(cout: csp.Writer, n: int) -> str:
        with cout:
            for i in range(n):
                cout.write(i)
        return "done"

    @csp.process
    def consumer(cin: csp.Reader) -> list[int]:
        return list(cin)

    # identity ends by ChannelRetired (a is retired): it must retire b_w, ending consumer
    results = csp.Par(producer(a_w, 10), identity(a_r, b_w), consumer(b_r), backend=backend).run()
    assert results == ["done", None, list(range(10))]
    assert b.stats().retired
    assert not b.stats().poisoned
    with pytest.raises(csp.ChannelRetired):
        b_w.write(0)


def test_retired_ends_in_containers_are_retired(backend: str) -> None:
    a = csp.Channel(name="a")
    a_r, a_w = a.reader(), a.writer()
    outs = [csp.Channel(1, name=f"o{i}") for i in range(3)]
    out_ws = [o.writer() for o in outs]
    extra = csp.Channel(1, name="extra")

    @csp.process
    def fan(cin: csp.Reader, couts: list[csp.Writer], more: dict[str, csp.Writer]) -> None:
        while True:
            v = cin.read()
            for w in couts:
                w.write(v)

    h = csp.Par(fan(a_r, out_ws, more={"w": extra.writer()}), backend=backend).start()
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


def test_process_ending_by_retired_read_returns_none(backend: str) -> None:
    ch = csp.Channel()
    r = ch.reader()
    ch.writer().retire()
    assert csp.Par(take(r, 1), backend=backend).run() == [None]


# --------------------------------------------------------------------------- failure


def test_failure_raises_group_with_note_and_peers_stop(backend: str) -> None:
    shared = csp.Channel(name="shared")
    with pytest.raises(ExceptionGroup) as info:
        csp.Par(
            failing_worker(shared, ValueError("bad value")), block_reading(shared), backend=backend
        ).run()
    group = info.value
    assert len(group.exceptions) == 1
    exc = group.exceptions[0]
    assert isinstance(exc, ValueError)
    assert str(exc) == "bad value"
    assert "'worker'" in notes(exc)
    assert shared.stats().poisoned


def test_failure_stops_peer_blocked_writing(backend: str) -> None:
    shared = csp.Channel()

    @csp.process
    def writes_forever(cout: csp.Channel) -> None:
        while True:
            cout.write(1)

    with pytest.raises(ExceptionGroup) as info:
        csp.Par(
            writes_forever(shared), failing_worker(shared, RuntimeError("crash")), backend=backend
        ).run()
    assert [type(e) for e in all_exceptions(info.value)] == [RuntimeError]


def test_failure_poisons_peers_transitively(backend: str) -> None:
    c1, c2, c3 = csp.Channel(), csp.Channel(), csp.Channel()
    with pytest.raises(ExceptionGroup):
        csp.Par(
            generate(c1),
            identity(c1, c2),
            identity(c2, c3),
            failing_worker(c3, ZeroDivisionError("deep")),
            backend=backend,
        ).run()
    for ch in (c1, c2, c3):
        assert ch.stats().poisoned


def test_several_failures_all_reported_with_their_names(backend: str) -> None:
    shared = csp.Channel()

    @csp.process(name="first")
    def first(ch: csp.Channel) -> None:
        raise ValueError("one")

    @csp.process(name="second")
    def second(ch: csp.Channel) -> None:
        raise TypeError("two")

    with pytest.raises(ExceptionGroup) as info:
        csp.Par(first(shared), second(shared), backend=backend).run()
    by_type = {type(e): e for e in info.value.exceptions}
    assert set(by_type) == {ValueError, TypeError}
    assert "'first'" in notes(by_type[ValueError])
    assert "'second'" in notes(by_type[TypeError])


def test_failure_of_plain_callable_names_it(backend: str) -> None:
    def plain_failure() -> None:
        raise OSError("plain")

    with pytest.raises(ExceptionGroup) as info:
        csp.Par(plain_failure, lambda: 1, backend=backend).run()
    (exc,) = info.value.exceptions
    assert isinstance(exc, OSError)
    assert "'plain_failure'" in notes(exc)


def test_par_waits_for_every_process_before_raising(backend: str) -> None:
    finished = threading.Event()
    shared = csp.Channel()

    @csp.process
    def slow_cleanup(cin: csp.Channel) -> None:
        try:
            cin.read()
        finally:
            finished.set()

    with pytest.raises(ExceptionGroup):
        csp.Par(
            slow_cleanup(shared), failing_worker(shared, ValueError("x")), backend=backend
        ).run()
    assert finished.is_set()


def test_poisoned_peer_is_not_reported_as_failure(backend: str) -> None:
    shared = csp.Channel()
    with pytest.raises(ExceptionGroup) as info:
        csp.Par(
            block_reading(shared),
            block_reading(shared),
            failing_worker(shared, LookupError("only me")),
            backend=backend,
        ).run()
    assert [type(e) for e in info.value.exceptions] == [LookupError]
