"""@process, Process, Par, Seq, Spawn and their handles.

Tests taking ``k`` (tests/_kit.py) run under the thread, greenlet and asyncio backends with one
process body. Run once: the ``@csp.process`` decorator's options, the default backend, plain
callables without a body (``lambda``), ``Seq``'s ordering with ``time.sleep`` and thread
concurrency (a ``threading.Barrier``, meaningful only for OS threads).
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time

import pytest

import ferrocsp as csp
from _kit import SHARED_BACKENDS, Kit
from _os_support import COPIES, backend_fixture, in_process_only
from _support import all_exceptions, wait_until
from ferrocsp._backends import _pool

backend = backend_fixture(SHARED_BACKENDS)  # these tests run on OS processes too

pytestmark = pytest.mark.timeout(30)


@csp.process
def add_plain(a: int, b: int) -> int:
    return a + b


@csp.process(name="custom-name")
def named() -> str:
    return "named"


async def add(k: Kit, a: int, b: int) -> int:
    return a + b


async def produce(k: Kit, cout: csp.Channel, n: int) -> str:
    for i in range(n):
        await k.write(cout, i)
    return "produced"


async def consume(k: Kit, cin: csp.Channel, n: int) -> list[int]:
    return [await k.read(cin) for _ in range(n)]


async def read_one(k: Kit, cin: csp.Channel) -> object:
    return await k.read(cin)


async def write_one(k: Kit, cout: csp.Channel, value: object) -> None:
    await k.write(cout, value)


async def constant(k: Kit, value: object) -> object:
    return value


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
    assert add_plain(1, 2).name == "add_plain"


def test_process_name_option() -> None:
    p = named()
    assert p.name == "custom-name"
    assert csp.Par(p).run() == ["named"]


def test_process_thread_backend_option() -> None:
    @csp.process(backend="thread")
    def on_thread() -> int:
        return 7

    assert csp.Par(on_thread()).run() == [7]


async def f(k: Kit, a: int, *, b: int = 0) -> tuple[int, int]:
    return a, b


def test_process_args_and_kwargs(k: Kit) -> None:
    assert k.Par(k.process(f)(1, b=2), k.process(f)(3)).run() == [(1, 2), (3, 0)]


def test_par_backend_option() -> None:
    assert csp.Par(add_plain(1, 2), lambda: 4, backend="thread").run() == [3, 4]


def test_empty_par_and_seq() -> None:
    assert csp.Par().run() == []
    assert csp.Seq().run() == []


def test_set_default_backend_thread() -> None:
    csp.set_default_backend("thread")
    assert csp.Par(add_plain(2, 3)).run() == [5]


# --------------------------------------------------------------------------- Par


def test_par_returns_results_in_order(k: Kit) -> None:
    p = k.process(add)
    assert k.Par(p(1, 1), p(2, 2), p(3, 3)).run() == [2, 4, 6]


def test_par_runs_in_parallel_over_rendezvous(k: Kit) -> None:
    ch = csp.Channel()
    assert k.Par(k.process(consume)(ch, 50), k.process(produce)(ch, 50)).run() == [
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


def test_par_with_plain_callables(k: Kit) -> None:
    ch = csp.Channel()
    assert k.Par(k.callable(write_one, ch, "x"), k.callable(read_one, ch)).run() == [None, "x"]


def test_par_with_plain_lambdas(plain_backend: str) -> None:
    ch = csp.Channel()
    assert csp.Par(lambda: ch.write("x"), lambda: ch.read(), backend=plain_backend).run() == [
        None,
        "x",
    ]


async def mul(k: Kit, a: int, b: int) -> int:
    return a * b


def test_par_with_partial(k: Kit) -> None:
    fn = k.function(mul)
    assert k.Par(functools.partial(fn, 3, 4), functools.partial(fn, 5, b=6)).run() == [12, 30]


def test_par_mixes_processes_and_callables(k: Kit) -> None:
    assert k.Par(k.process(add)(1, 2), k.callable(constant, "plain")).run() == [3, "plain"]


def test_par_values_by_reference(k: Kit) -> None:
    in_process_only(k.backend, COPIES)
    ch = csp.Channel()
    obj = object()
    results = k.Par(k.callable(write_one, ch, obj), k.process(read_one)(ch)).run()
    assert results[1] is obj


def test_nested_par_is_a_process(k: Kit) -> None:
    ch = csp.Channel()
    inner = k.Par(k.process(produce)(ch, 3), k.process(add)(1, 1))
    assert k.Par(inner, k.process(consume)(ch, 3)).run() == [["produced", 2], [0, 1, 2]]


def test_par_many_processes(k: Kit) -> None:
    ch = csp.Channel()
    n = 8 if k.backend == "os" else 32  # an OS process costs a forkserver start
    results = k.Par(*[k.process(produce)(ch, 1) for _ in range(n)], k.process(consume)(ch, n)).run()
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


def test_seq_with_processes(k: Kit) -> None:
    ch = csp.Channel(3)
    assert csp.Seq(k.process(produce)(ch, 3), k.process(consume)(ch, 3)).run() == [
        "produced",
        [0, 1, 2],
    ]


def test_seq_failure_raises(k: Kit) -> None:
    async def boom(k: Kit) -> None:
        raise ValueError("seq boom")

    with pytest.raises((ValueError, ExceptionGroup)) as info:
        csp.Seq(k.process(add)(1, 1), k.callable(boom)).run()
    leaves = all_exceptions(info.value)
    assert [type(e) for e in leaves] == [ValueError]


# --------------------------------------------------------------------------- start / handles


def test_par_start_join_returns_results(k: Kit) -> None:
    h = k.Par(k.process(add)(1, 2), k.process(add)(3, 4)).start()
    assert h.join() == [3, 7]
    assert h.result == [3, 7]
    assert not h.alive
    assert isinstance(h.name, str)


def test_handle_while_running(k: Kit) -> None:
    ch = csp.Channel()
    h = k.Par(k.process(read_one)(ch), k.process(add)(0, 1)).start()
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


def test_spawn_returns_value(k: Kit) -> None:
    h = k.Spawn(k.process(add)(20, 22))
    assert h.join() == 42
    assert h.result == 42
    assert not h.alive
    assert "add" in h.name


def test_spawn_runs_without_waiting(k: Kit) -> None:
    ch = csp.Channel()
    h = k.Spawn(k.process(read_one)(ch))
    wait_until(lambda: ch.stats().readers_waiting == 1, what="spawned process blocked")
    assert h.alive
    with pytest.raises(RuntimeError):
        _ = h.result
    with pytest.raises(TimeoutError):
        h.join(timeout=0.02)
    ch.write(99)
    assert h.join(timeout=10) == 99


def test_spawn_plain_callable(k: Kit) -> None:
    h = k.Spawn(k.callable(constant, "plain"))
    assert h.join(timeout=10) == "plain"


def test_spawn_name_option() -> None:
    h = csp.Spawn(named())
    assert h.join() == "named"
    assert "custom-name" in h.name


async def fails(k: Kit) -> None:
    raise KeyError("spawned failure")


def test_spawn_failure_join_reraises(k: Kit) -> None:
    h = k.Spawn(k.process(fails)())
    with pytest.raises((KeyError, ExceptionGroup)) as info:
        h.join(timeout=10)
    leaves = all_exceptions(info.value)
    assert [type(e) for e in leaves] == [KeyError]
    assert not h.alive
    with pytest.raises((KeyError, ExceptionGroup)):
        _ = h.result


async def boom(k: Kit) -> None:
    raise ValueError("handle boom")


def test_par_handle_failure_join_raises_group(k: Kit) -> None:
    h = k.Par(k.process(add)(1, 1), k.callable(boom)).start()
    with pytest.raises(ExceptionGroup) as info:
        h.join(timeout=10)
    assert [type(e) for e in all_exceptions(info.value)] == [ValueError]
    with pytest.raises(ExceptionGroup):
        _ = h.result


def test_handle_poison_ends_processes_cleanly(k: Kit) -> None:
    a, b = csp.Channel(name="a"), csp.Channel(name="b")
    h = k.Par(k.process(read_one)(a), k.process(read_one)(b)).start()
    wait_until(
        lambda: a.stats().readers_waiting == 1 and b.stats().readers_waiting == 1,
        what="both processes blocked",
    )
    h.poison()
    assert h.join(timeout=10) == [None, None]
    assert a.stats().poisoned
    assert b.stats().poisoned


def test_spawn_handle_poison(k: Kit) -> None:
    ch = csp.Channel()
    h = k.Spawn(k.process(read_one)(ch))
    wait_until(lambda: ch.stats().readers_waiting == 1, what="spawned process blocked")
    h.poison()
    assert h.join(timeout=10) is None
    assert ch.stats().poisoned


def test_join_twice(k: Kit) -> None:
    h = k.Par(k.process(add)(1, 1)).start()
    assert h.join() == [2]
    assert h.join() == [2]


def test_asyncio_cannot_be_the_default_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    csp.set_default_backend(None)  # the environment is consulted only without a default
    with pytest.raises(ValueError, match="async def"):
        csp.set_default_backend("asyncio")
    monkeypatch.setenv("FERROCSP_BACKEND", "asyncio")
    with pytest.raises(ValueError, match="FERROCSP_BACKEND"):
        csp.Par(lambda: None).run()


async def interrupted(k: Kit, c: csp.Channel) -> None:
    raise KeyboardInterrupt


def test_keyboard_interrupt_in_seq_propagates_and_poisons(k: Kit) -> None:
    ch = csp.Channel()
    with pytest.raises(KeyboardInterrupt):
        csp.Seq(k.process(interrupted)(ch)).run()
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


def test_arun_returns_results_and_leaves_no_thread_behind(k: Kit) -> None:
    """``await Par(...).arun()`` from a running loop: thread and greenlet processes run on
    their own threads, which have ended or are parked idle (kept for the next run, running
    nothing) when it returns."""
    ch = csp.Channel()
    before = set(threading.enumerate())

    async def main() -> list[object]:
        return await k.Par(k.process(produce)(ch, 20), k.process(consume)(ch, 20)).arun()

    for _ in range(4 if k.backend == "os" else 20):  # an OS process costs a forkserver start
        assert asyncio.run(main()) == ["produced", list(range(20))]
        # Kept host threads park idle just after the run they served ended: bounded wait.
        wait_until(lambda: set(threading.enumerate()) - set(_pool.idle_threads()) <= before)
