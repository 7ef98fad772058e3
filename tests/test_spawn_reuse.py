"""Kept host threads (``_backends/_pool.py``): networks reuse the threads, greenlet hubs and
event loops of earlier runs, and nothing of a run leaks into the next.

Each test names what reuse could break: many runs in a row, runs from several threads at
once, a run after a failed one, context variables and leftover asyncio tasks of one run,
deadlock detection with idle workers alive, ``fork`` after a run, interpreter exit.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import ferrocsp as csp
from _support import wait_until
from ferrocsp._backends import _pool

BACKENDS = ("thread", "greenlet", "asyncio")


def _ident() -> int:
    return threading.get_ident()


async def _aident() -> int:
    return threading.get_ident()


def _one(backend: str, fn: Callable[[], Any], afn: Callable[[], Any]) -> csp.Par[Any]:
    if backend == "asyncio":
        return csp.Par(csp.process(afn)())
    return csp.Par(csp.process(fn)(), backend=backend)


def _wait_idle(n: int = 1) -> None:
    """Waits until at least ``n`` workers are parked idle (a worker parks just after the run
    it served has been reported done)."""
    wait_until(lambda: len(_pool.idle_threads()) >= n, what=f"{n} workers idle")


def _wait_parked(ident: int) -> None:
    """Waits until the worker whose thread is ``ident`` is parked idle (it parks just after
    the run it served was reported done), so the next run is handed to it."""
    wait_until(lambda: any(t.ident == ident for t in _pool.idle_threads()), what="worker parked")


@pytest.mark.parametrize("backend", BACKENDS)
def test_sequential_runs_reuse_one_thread(backend: str) -> None:
    idents = set()
    for _ in range(30):
        (ident,) = _one(backend, _ident, _aident).run()
        idents.add(ident)
        _wait_parked(ident)
    # The warmest idle worker is handed the next run: one thread serves them all.
    assert len(idents) == 1
    assert threading.get_ident() not in idents


@pytest.mark.parametrize("backend", BACKENDS)
def test_runs_from_several_threads_at_once(backend: str) -> None:
    """Concurrent runs each get a worker of their own; every result arrives intact."""
    errors: list[BaseException] = []

    def produce(ch: csp.Channel, n: int) -> int:
        for i in range(n):
            ch.write(i)
        return n

    def consume(ch: csp.Channel, n: int) -> int:
        return sum(ch.read() for _ in range(n))

    async def aproduce(ch: csp.Channel, n: int) -> int:
        for i in range(n):
            await ch.awrite(i)
        return n

    async def aconsume(ch: csp.Channel, n: int) -> int:
        return sum([await ch.aread() for _ in range(n)])

    def client(k: int) -> None:
        try:
            for r in range(15):
                ch = csp.Channel(name=f"c{k}.{r}")
                n = 10 + k + r
                if backend == "asyncio":
                    par = csp.Par(csp.process(aproduce)(ch, n), csp.process(aconsume)(ch, n))
                else:
                    p, c = csp.process(produce), csp.process(consume)
                    par = csp.Par(p(ch, n), c(ch, n), backend=backend)
                assert par.run() == [n, n * (n - 1) // 2]
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []


class Boom(Exception):
    pass


def _fail() -> None:
    raise Boom("first run")


async def _afail() -> None:
    raise Boom("first run")


@pytest.mark.parametrize("backend", BACKENDS)
def test_run_after_a_failed_run(backend: str) -> None:
    with pytest.raises(ExceptionGroup) as info:
        _one(backend, _fail, _afail).run()
    assert info.group_contains(Boom)
    _wait_idle()
    assert _one(backend, lambda: 7, _seven).run() == [7]


async def _seven() -> int:
    return 7


_var: contextvars.ContextVar[str] = contextvars.ContextVar("spawn_reuse_var", default="fresh")


def _set_var() -> tuple[str, int]:
    seen = _var.get()
    _var.set("dirty")
    return seen, threading.get_ident()


async def _aset_var() -> tuple[str, int]:
    return _set_var()


@pytest.mark.parametrize("backend", BACKENDS)
def test_context_variables_do_not_leak_into_the_next_run(backend: str) -> None:
    """Each run on a kept thread starts with a fresh context, as on a new thread."""
    idents = set()
    for _ in range(3):
        [(seen, ident)] = _one(backend, _set_var, _aset_var).run()
        assert seen == "fresh"
        idents.add(ident)
        _wait_parked(ident)
    assert len(idents) == 1  # the same thread each time: the context did not come with it


def test_asyncio_tasks_left_over_are_cancelled_at_the_end_of_the_run() -> None:
    """As under ``asyncio.run``: a task a process started and never awaited is cancelled when
    the run ends, and does not run on into the next run on the kept loop."""
    events: list[str] = []

    async def leftover() -> None:
        try:
            await asyncio.sleep(30)
            events.append("ran on")
        except asyncio.CancelledError:
            events.append("cancelled")
            raise

    async def starts_one() -> int:
        asyncio.get_running_loop().create_task(leftover())
        await asyncio.sleep(0)
        return 1

    assert csp.Par(csp.process(starts_one)()).run() == [1]
    assert events == ["cancelled"]
    _wait_idle()
    assert csp.Par(csp.process(_seven)()).run() == [7]
    assert events == ["cancelled"]


def test_asyncio_run_that_used_the_executor_leaves_no_executor_thread() -> None:
    """A run that used the loop's default executor ends its loop as ``asyncio.run`` does
    (the executor's threads are joined); the next run gets a fresh loop."""

    async def uses_executor() -> int:
        return await asyncio.get_running_loop().run_in_executor(None, lambda: 3)

    loops = []

    async def which_loop() -> int:
        loops.append(asyncio.get_running_loop())
        return 0

    assert csp.Par(csp.process(which_loop)()).run() == [0]
    _wait_idle()
    assert csp.Par(csp.process(uses_executor)()).run() == [3]
    _wait_idle()
    assert not [t for t in threading.enumerate() if t.name.startswith("asyncio_")]
    assert csp.Par(csp.process(which_loop)()).run() == [0]
    assert loops[0] is not loops[1]
    assert loops[0].is_closed()


_IDLE_DEADLOCK = """
import sys, threading, time
import ferrocsp as csp
from ferrocsp._backends import _pool

backend = sys.argv[1]
_pool.IDLE_TIMEOUT = 600.0
# Three kept workers (the barrier keeps the three processes on three threads at once); the
# deadlocking network below takes one, two stay parked idle.
barrier = threading.Barrier(3, timeout=10)
csp.Par(barrier.wait, barrier.wait, barrier.wait, backend="thread").run()
deadline = time.monotonic() + 10
while len(_pool.idle_threads()) < 3:
    assert time.monotonic() < deadline, "3 workers idle"
    time.sleep(0.01)

def reader(ch):
    ch.read()

async def areader(ch):
    await ch.aread()

ch = csp.Channel(name="nobody-writes")
if backend == "asyncio":
    par = csp.Par(csp.process(areader, name="lonely")(ch))
else:
    par = csp.Par(csp.process(reader, name="lonely")(ch), backend=backend)
try:
    par.run()
except ExceptionGroup as eg:
    assert eg.subgroup(csp.Deadlock) is not None, repr(eg)
    print(str(eg.exceptions[0]))
else:
    raise SystemExit("no deadlock reported")
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", BACKENDS)
def test_deadlock_is_reported_with_idle_workers_alive(backend: str) -> None:
    """Idle kept workers are alive Python threads that run nothing: they must not keep a
    deadlock from being proven (and the report still names processes and channels).
    Without the idle marking the deadlock would be reported only once they exited: kept
    longer than the test's timeout here, it would never be. In a fresh interpreter: a proof
    needs every Python thread of the process accounted for, and earlier tests of the suite
    may leave threads of their own."""
    r = subprocess.run(
        [sys.executable, "-c", _IDLE_DEADLOCK, backend],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "'lonely'" in r.stdout, r.stdout
    assert "'nobody-writes'" in r.stdout, r.stdout


def test_idle_worker_exits_after_the_idle_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_pool, "IDLE_TIMEOUT", 0.05)
    _wait_idle_drained()  # so that the run below starts a worker parked with the short timeout
    [worker] = csp.Par(threading.current_thread).run()
    assert isinstance(worker, threading.Thread)
    worker.join(10)
    assert not worker.is_alive()
    assert worker not in _pool.idle_threads()


def _wait_idle_drained() -> None:
    """Hands every idle worker (kept with the default timeout) an exit."""
    _pool.release_idle(10.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_release_idle_ends_the_kept_workers_and_their_loops(backend: str) -> None:
    """What the soak relies on before it counts threads and descriptors: every idle worker
    ends, closing the event loop it kept, and the next run starts afresh."""
    _one(backend, _ident, _aident).run()
    _wait_idle()
    kept = _pool.idle_threads()
    loops = [w.loop for w in list(_pool._idle) if w.loop is not None]
    assert _pool.release_idle(10.0) == len(kept)
    assert _pool.idle_threads() == []
    assert not any(t.is_alive() for t in kept)
    assert all(loop.is_closed() for loop in loops)
    if backend == "asyncio":
        assert loops, "an asyncio run keeps its loop on its worker"
    # The next run gets a worker of its own (the released ones are gone, not reused).
    assert len(_one(backend, _ident, _aident).run()) == 1
    _wait_idle()
    assert not set(_pool.idle_threads()) & set(kept)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_after_runs_child_runs_networks_on_fresh_threads() -> None:
    """The child of a fork has none of its parent's threads: it must start its own workers
    (not hand jobs to parked threads that do not exist there), and exit cleanly."""
    for b in BACKENDS:
        _one(b, _ident, _aident).run()
    _wait_idle()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, never return into pytest
        code = 1
        try:
            os.close(r)
            results = [_one(b, lambda: 5, _five).run() for b in BACKENDS]
            code = 0 if results == [[5]] * 3 else 2
        finally:
            os.write(w, bytes([code]))
            os._exit(code)
    os.close(w)
    deadline = time.monotonic() + 30
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung running a network")
        time.sleep(0.01)
    os.close(r)
    assert os.waitstatus_to_exitcode(status) == 0


async def _five() -> int:
    return 5


@pytest.mark.timeout(60)
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_leaves_the_parents_kept_loop_wakeable() -> None:
    """A child made by ``fork`` shares the epoll instance of every event loop kept in the
    parent; closing its copies of those loops unregistered their self-pipes, and the parent's
    kept loop then slept through every wake-up from another thread (a lost read)."""
    ran_on = csp.Par(csp.process(_aident)()).run()[0]
    _wait_parked(ran_on)
    pid = os.fork()
    if pid == 0:  # the child: nothing but the fork hooks, never back into pytest
        os._exit(0)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0

    ch = csp.Channel(name="after-fork")

    async def reader() -> tuple[int, Any]:
        return threading.get_ident(), await ch.aread()

    handle = csp.Par(csp.process(reader)()).start()
    wait_until(lambda: ch.stats().readers_waiting == 1, what="reader blocked")
    ch.write("woken", timeout=10)  # completes only if the loop's thread wakes the reader
    assert handle.join(timeout=10) == [(ran_on, "woken")]


def test_interpreter_exit_with_kept_workers_does_not_hang() -> None:
    """A program whose last networks left kept workers (a thread, a greenlet hub, an event
    loop) exits at once and cleanly: no hang, no warning about an unclosed loop."""
    script = textwrap.dedent(
        """
        import asyncio
        import ferrocsp as csp

        def f():
            return 1

        async def af():
            await asyncio.sleep(0)
            return 2

        for _ in range(3):
            assert csp.Par(f, f).run() == [1, 1]
            assert csp.Par(f, backend="greenlet").run() == [1]
            assert csp.Par(csp.process(af)()).run() == [2]
        h = csp.Spawn(f, backend="greenlet")
        assert h.join() == 1
        print("done", flush=True)
        """
    )
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "done"
    assert proc.stderr == ""
    assert time.monotonic() - start < 30
