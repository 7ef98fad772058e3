"""@process, Process, Par, Seq, Spawn and their handles (thread backend)."""

from __future__ import annotations

import functools
import threading
import time

import pytest

import ferrocsp as csp
from _support import all_exceptions, wait_until

pytestmark = pytest.mark.timeout(30)


@csp.process
def add(a: int, b: int) -> int:
    return a + b


@csp.process(name="custom-name")
def named() -> str:
    return "named"


@csp.process
def produce(cout: csp.Channel, n: int) -> str:
    for i in range(n):
        cout.write(i)
    return "produced"


@csp.process
def consume(cin: csp.Channel, n: int) -> list[int]:
    return [cin.read() for _ in range(n)]


@csp.process
def read_one(cin: csp.Channel) -> object:
    return cin.read()


# --------------------------------------------------------------------------- @process


def test_process_factory_does_not_start() -> None:
    ran = threading.Event()

    @csp.process
    def side_effect() -> None:
        ran.set()

    p = side_effect()
    assert isinstance(p, csp.Process)
    assert not ran.is_set()
    assert csp.Par(p).run() == [None]
    assert ran.is_set()


def test_process_default_name_is_function_name() -> None:
    assert add(1, 2).name == "add"


def test_process_name_option() -> None:
    p = named()
    assert p.name == "custom-name"
    assert csp.Par(p).run() == ["named"]


def test_process_thread_backend_option() -> None:
    @csp.process(backend="thread")
    def on_thread() -> int:
        return 7

    assert csp.Par(on_thread()).run() == [7]


def test_process_args_and_kwargs() -> None:
    @csp.process
    def f(a: int, *, b: int = 0) -> tuple[int, int]:
        return a, b

    assert csp.Par(f(1, b=2), f(3)).run() == [(1, 2), (3, 0)]


def test_par_backend_option() -> None:
    assert csp.Par(add(1, 2), lambda: 4, backend="thread").run() == [3, 4]


def test_empty_par_and_seq() -> None:
    assert csp.Par().run() == []
    assert csp.Seq().run() == []


def test_set_default_backend_thread() -> None:
    csp.set_default_backend("thread")
    assert csp.Par(add(2, 3)).run() == [5]


# --------------------------------------------------------------------------- Par


def test_par_returns_results_in_order(backend: str) -> None:
    assert csp.Par(add(1, 1), add(2, 2), add(3, 3), backend=backend).run() == [2, 4, 6]


def test_par_runs_in_parallel_over_rendezvous(backend: str) -> None:
    ch = csp.Channel()
    assert csp.Par(consume(ch, 50), produce(ch, 50), backend=backend).run() == [
        list(range(50)),
        "produced",
    ]


def test_par_processes_run_concurrently() -> None:
    n = 4
    barrier = threading.Barrier(n, timeout=10)

    def meet() -> int:
        return barrier.wait()

    results = csp.Par(*[meet for _ in range(n)]).run()
    assert sorted(results) == list(range(n))


def test_par_with_plain_callables(backend: str) -> None:
    ch = csp.Channel()
    assert csp.Par(lambda: ch.write("x"), lambda: ch.read(), backend=backend).run() == [None, "x"]


def test_par_with_partial(backend: str) -> None:
    def mul(a: int, b: int) -> int:
        return a * b

    assert csp.Par(
        functools.partial(mul, 3, 4), functools.partial(mul, 5, b=6), backend=backend
    ).run() == [12, 30]


def test_par_mixes_processes_and_callables(backend: str) -> None:
    assert csp.Par(add(1, 2), lambda: "plain", backend=backend).run() == [3, "plain"]


def test_par_values_by_reference(backend: str) -> None:
    ch = csp.Channel()
    obj = object()

    def send() -> None:
        ch.write(obj)

    results = csp.Par(send, read_one(ch), backend=backend).run()
    assert results[1] is obj


def test_nested_par_is_a_process(backend: str) -> None:
    ch = csp.Channel()
    inner = csp.Par(produce(ch, 3), add(1, 1), backend=backend)
    assert csp.Par(inner, consume(ch, 3), backend=backend).run() == [["produced", 2], [0, 1, 2]]


def test_par_many_processes(backend: str) -> None:
    ch = csp.Channel()
    n = 32
    results = csp.Par(*[produce(ch, 1) for _ in range(n)], consume(ch, n), backend=backend).run()
    assert results[:n] == ["produced"] * n
    assert sorted(results[n]) == [0] * n


# --------------------------------------------------------------------------- Seq


def test_seq_runs_one_after_another() -> None:
    log: list[str] = []
    active = []

    def step(name: str) -> str:
        active.append(name)
        assert len(active) == 1, f"{active} overlap"
        time.sleep(0.01)
        log.append(name)
        active.remove(name)
        return name.upper()

    results = csp.Seq(*[functools.partial(step, s) for s in "abcd"]).run()
    assert results == ["A", "B", "C", "D"]
    assert log == ["a", "b", "c", "d"]


def test_seq_with_processes() -> None:
    ch = csp.Channel(3)
    assert csp.Seq(produce(ch, 3), consume(ch, 3)).run() == ["produced", [0, 1, 2]]


def test_seq_failure_raises() -> None:
    def boom() -> None:
        raise ValueError("seq boom")

    with pytest.raises((ValueError, ExceptionGroup)) as info:
        csp.Seq(add(1, 1), boom).run()
    leaves = all_exceptions(info.value)
    assert [type(e) for e in leaves] == [ValueError]


# --------------------------------------------------------------------------- start / handles


def test_par_start_join_returns_results(backend: str) -> None:
    h = csp.Par(add(1, 2), add(3, 4), backend=backend).start()
    assert h.join() == [3, 7]
    assert h.result == [3, 7]
    assert not h.alive
    assert isinstance(h.name, str)


def test_handle_while_running(backend: str) -> None:
    ch = csp.Channel()
    h = csp.Par(read_one(ch), add(0, 1), backend=backend).start()
    wait_until(lambda: ch.stats().readers_waiting == 1, what="process blocked on read")
    assert h.alive
    with pytest.raises(RuntimeError):
        _ = h.result
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        h.join(timeout=0.05)
    assert time.monotonic() - t0 < 5
    assert h.alive  # a join timeout does not stop anything
    ch.write("done")
    assert h.join(timeout=10) == ["done", 1]
    assert not h.alive
    assert h.result == ["done", 1]


def test_spawn_returns_value(backend: str) -> None:
    h = csp.Spawn(add(20, 22), backend=backend)
    assert h.join() == 42
    assert h.result == 42
    assert not h.alive
    assert "add" in h.name


def test_spawn_runs_without_waiting(backend: str) -> None:
    ch = csp.Channel()
    h = csp.Spawn(read_one(ch), backend=backend)
    wait_until(lambda: ch.stats().readers_waiting == 1, what="spawned process blocked")
    assert h.alive
    with pytest.raises(RuntimeError):
        _ = h.result
    with pytest.raises(TimeoutError):
        h.join(timeout=0.02)
    ch.write(99)
    assert h.join(timeout=10) == 99


def test_spawn_plain_callable(backend: str) -> None:
    h = csp.Spawn(lambda: "plain", backend=backend)
    assert h.join(timeout=10) == "plain"


def test_spawn_name_option() -> None:
    h = csp.Spawn(named())
    assert h.join() == "named"
    assert "custom-name" in h.name


def test_spawn_failure_join_reraises(backend: str) -> None:
    @csp.process
    def fails() -> None:
        raise KeyError("spawned failure")

    h = csp.Spawn(fails(), backend=backend)
    with pytest.raises((KeyError, ExceptionGroup)) as info:
        h.join(timeout=10)
    leaves = all_exceptions(info.value)
    assert [type(e) for e in leaves] == [KeyError]
    assert not h.alive
    with pytest.raises((KeyError, ExceptionGroup)):
        _ = h.result


def test_par_handle_failure_join_raises_group(backend: str) -> None:
    def boom() -> None:
        raise ValueError("handle boom")

    h = csp.Par(add(1, 1), boom, backend=backend).start()
    with pytest.raises(ExceptionGroup) as info:
        h.join(timeout=10)
    assert [type(e) for e in all_exceptions(info.value)] == [ValueError]
    with pytest.raises(ExceptionGroup):
        _ = h.result


def test_handle_poison_ends_processes_cleanly(backend: str) -> None:
    a, b = csp.Channel(name="a"), csp.Channel(name="b")
    h = csp.Par(read_one(a), read_one(b), backend=backend).start()
    wait_until(
        lambda: a.stats().readers_waiting == 1 and b.stats().readers_waiting == 1,
        what="both processes blocked",
    )
    h.poison()
    assert h.join(timeout=10) == [None, None]
    assert a.stats().poisoned
    assert b.stats().poisoned


def test_spawn_handle_poison(backend: str) -> None:
    ch = csp.Channel()
    h = csp.Spawn(read_one(ch), backend=backend)
    wait_until(lambda: ch.stats().readers_waiting == 1, what="spawned process blocked")
    h.poison()
    assert h.join(timeout=10) is None
    assert ch.stats().poisoned


def test_join_twice(backend: str) -> None:
    h = csp.Par(add(1, 1), backend=backend).start()
    assert h.join() == [2]
    assert h.join() == [2]


def test_asyncio_cannot_be_the_default_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    csp.set_default_backend(None)  # the environment is consulted only without a default
    with pytest.raises(ValueError, match="async def"):
        csp.set_default_backend("asyncio")
    monkeypatch.setenv("FERROCSP_BACKEND", "asyncio")
    with pytest.raises(ValueError, match="FERROCSP_BACKEND"):
        csp.Par(lambda: None).run()


def test_keyboard_interrupt_in_seq_propagates_and_poisons() -> None:
    ch = csp.Channel()

    @csp.process
    def interrupted(c: csp.Channel) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        csp.Seq(interrupted(ch)).run()
    assert ch.stats().poisoned


def test_finished_unjoined_handles_are_not_kept_forever() -> None:
    from ferrocsp import _par

    handles = [csp.Spawn(lambda: None) for _ in range(300)]
    for h in handles:
        h.join()
    more = [csp.Spawn(lambda: None) for _ in range(300)]  # never joined
    wait_until(lambda: not any(h.alive for h in more))
    csp.Spawn(lambda: None).join()
    assert len(_par._running) < 300
