"""Deadlock detection: a network in which every participant waits forever raises ``Deadlock``.

Deadlocking programs run in a subprocess (so a missed detection fails the test by timeout
instead of hanging the suite, and no thread left over by another test can hide the deadlock);
programs that must *not* be reported run in-process and simply have to finish normally.

Process bodies are written once (tests/_kit.py): two processes reading each other run for
every pair of backends, the philosophers, the stalled pipeline, the no-false-positive cases
and the participant records under each backend. Run once: the main thread's own waits, the
environment switch, and the cases specific to one backend (``io()``, asyncio ``wait_for``).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import ferrocsp as csp
from _chans import Chans
from _kit import BACKENDS, Kit
from ferrocsp import _native

#: A deadlock must be reported well within this many seconds.
LIMIT = 20.0

TESTS = str(Path(__file__).resolve().parent)

PRELUDE = """
import sys, threading, time
sys.path.insert(0, TESTS)
import ferrocsp as csp
from _kit import Kit

def report(exc):
    group = exc if isinstance(exc, BaseExceptionGroup) else None
    leaves = list(group.exceptions) if group else [exc]
    kinds = sorted({type(e).__name__ for e in leaves})
    print("KINDS", ",".join(kinds))
    for e in leaves:
        print("MSG", e)
""".replace("TESTS", repr(TESTS))


def run_program(body: str, env: dict[str, str] | None = None, timeout: float = LIMIT) -> str:
    """Runs ``PRELUDE + body`` in a fresh interpreter; returns its stdout (fails on error)."""
    code = PRELUDE + textwrap.dedent(body)
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("FERROCSP_TRACE", None)
    t0 = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert time.monotonic() - t0 < timeout
    return r.stdout


def deadlock_messages(out: str) -> list[str]:
    assert "KINDS Deadlock\n" in out, out
    msgs = [line[4:] for line in out.splitlines() if line.startswith("MSG ")]
    assert msgs, out
    return msgs


# ----- real deadlocks are reported -----

CROSS = """
async def relay(k, inp, out):
    await k.write(out, await k.read(inp))

left = Kit({lb!r}).process(relay, name="left")
right = Kit({rb!r}).process(relay, name="right")

a, b = csp.Channel(name="a"), csp.Channel(name="b")
if {shm!r}:
    from ferrocsp import _shm

    _shm.share(a)
    _shm.share(b)
try:
    csp.Par(left(a, b), right(b, a)).run()
except BaseException as exc:
    report(exc)
"""


@pytest.mark.parametrize("chans", ["local", "shm"])
@pytest.mark.parametrize(("lb", "rb"), list(itertools.combinations_with_replacement(BACKENDS, 2)))
def test_two_processes_reading_each_other(lb: str, rb: str, chans: str) -> None:
    # Over in-process channels, and over channels moved to shared memory (the same type, its
    # shared-memory transport; networked waits are never proven stuck: another machine may
    # complete them, DESIGN 7).
    msgs = deadlock_messages(run_program(CROSS.format(lb=lb, rb=rb, shm=chans == "shm")))
    assert len(msgs) == 2  # every blocked operation raised Deadlock
    # Waits on shared channels are proven by the detection across OS processes, whose report
    # names each process's OS process id.
    pid = r" \(pid \d+\)" if chans == "shm" else ""
    for m in msgs:
        assert m.startswith("Deadlock: 2 processes wait forever"), m
        assert re.search(f"'left'{pid} reads 'a'", m), m
        assert re.search(f"'right'{pid} reads 'b'", m), m
        assert "'MainThread'" in m, m  # joining them


THREAD_AND_ASYNCIO = """
    @csp.process
    def left(inp, out):
        out.write(inp.read())

    @csp.process
    async def right(inp, out):
        await out.awrite(await inp.aread())

    a, b = csp.Channel(name="a"), csp.Channel(name="b")
    try:
        csp.Par(left(a, b), right(b, a)).run()
    except BaseException as exc:
        report(exc)
    """


def test_thread_and_asyncio_processes() -> None:
    body = THREAD_AND_ASYNCIO
    msgs = deadlock_messages(run_program(body))
    assert len(msgs) == 2
    assert all("'left' reads 'a'" in m and "'right' reads 'b'" in m for m in msgs), msgs


def test_asyncio_arun_deadlock() -> None:
    body = """
    import asyncio

    @csp.process
    async def left(inp, out):
        await out.awrite(await inp.aread())

    @csp.process
    async def right(inp, out):
        await out.awrite(await inp.aread())

    a, b = csp.Channel(name="a"), csp.Channel(name="b")
    try:
        asyncio.run(csp.Par(left(a, b), right(b, a)).arun())
    except BaseException as exc:
        report(exc)
    """
    msgs = deadlock_messages(run_program(body))
    assert all("'left' reads 'a'" in m and "'right' reads 'b'" in m for m in msgs), msgs


def test_dining_philosophers_without_butler(backend: str) -> None:
    # Forks are one-token channels; a channel barrier makes every philosopher hold their left
    # fork before anyone reaches for the right one, so the deadlock is certain.
    body = f"""
    k = Kit({backend!r})
    N = 5
    forks = [csp.Channel(1, name=f"fork{{i}}") for i in range(N)]
    for f in forks:
        f.write("fork")
    ready, go = csp.Channel(name="ready"), csp.Channel(name="go")

    async def philosopher(k, i):
        left, right = forks[i], forks[(i + 1) % N]
        await k.read(left)
        await k.write(ready, i)
        await k.read(go)
        await k.read(right)  # never: the right fork is somebody's left fork
        return "ate"

    async def barrier(k):
        for _ in range(N):
            await k.read(ready)
        for _ in range(N):
            await k.write(go, None)

    procs = [k.process(philosopher, name=f"phil{{i}}")(i) for i in range(N)]
    try:
        k.Par(*procs, k.process(barrier)()).run()
    except BaseException as exc:
        report(exc)
    """
    msgs = deadlock_messages(run_program(body))
    assert len(msgs) == 5
    for m in msgs:
        assert m.startswith("Deadlock: 5 processes wait forever"), m
        for i in range(5):
            assert f"'phil{i}' reads 'fork{(i + 1) % 5}'" in m, m


def test_pipeline_whose_last_stage_stopped_reading(backend: str) -> None:
    body = f"""
    k = Kit({backend!r})

    async def producer(k, out):
        i = 0
        while True:
            await k.write(out, i)
            i += 1

    async def relay(k, inp, out):
        async for x in k.iter(inp):
            await k.write(out, x)

    async def consumer(k, inp):
        return [await k.read(inp) for _ in range(3)]  # and stops reading

    c1, c2 = csp.Channel(name="c1"), csp.Channel(name="c2")
    procs = [
        k.process(producer)(c1),
        k.process(relay)(c1, c2),
        k.process(consumer)(c2),
    ]
    try:
        k.Par(*procs).run()
    except BaseException as exc:
        report(exc)
    """
    msgs = deadlock_messages(run_program(body))
    assert len(msgs) == 2
    for m in msgs:
        assert "'producer' writes 'c1'" in m, m
        assert "'relay' writes 'c2'" in m, m
        assert "'consumer'" not in m, m  # it ended; it is no longer part of the network


# ----- no false positives: these networks finish normally -----


async def relay_once(k: Kit, inp: csp.Channel, out: csp.Channel) -> Any:
    v = await k.read(inp)
    await k.write(out, v)
    return v


async def last(k: Kit, inp: csp.Channel) -> Any:
    return await k.read(inp)


async def sleeper(k: Kit, out: csp.Channel) -> None:
    # k.call: a greenlet sleeps through csp.io, asyncio through asyncio.to_thread
    await k.call(time.sleep, 0.3)
    await k.write(out, "late")


async def computer(k: Kit, out: csp.Channel) -> None:
    deadline = time.monotonic() + 0.3
    n = 0
    while time.monotonic() < deadline:
        n += 1
    await k.write(out, "computed")


@pytest.mark.parametrize("starter", [sleeper, computer])
def test_sleeping_or_computing_process_is_not_a_deadlock(k: Kit, mk: Chans, starter: Any) -> None:
    a, b = mk(name="a"), mk(name="b")
    res = k.Par(k.process(relay_once)(a, b), k.process(last)(b), k.process(starter)(a)).run()
    assert res[:2] in (["late", "late"], ["computed", "computed"])


def test_pending_timeout_is_not_a_deadlock(k: Kit, mk: Chans) -> None:
    async def patient(k: Kit, a: csp.Channel, b: csp.Channel) -> str:
        await k.select(csp.Alt(a, csp.Timeout(0.3)))
        await k.write(b, "timed out")
        return "alt"

    async def patient_read(k: Kit, c: csp.Channel, d: csp.Channel) -> str:
        try:
            await k.read(c, timeout=0.3)
        except TimeoutError:
            await k.write(d, "timed out")
        return "read"

    a, b, c, d = (mk(name=n) for n in "abcd")
    lst = k.process(last)
    res = k.Par(k.process(patient)(a, b), lst(b), k.process(patient_read)(c, d), lst(d)).run()
    assert res == ["alt", "timed out", "read", "timed out"]


last_thread = Kit("thread").process(last)


def test_main_thread_sleeping_then_writing_is_not_a_deadlock() -> None:
    ch = csp.Channel(name="later")
    h = csp.Spawn(last_thread(ch))
    time.sleep(0.3)  # the process is blocked, the main thread is not: no deadlock
    ch.write(42)
    assert h.join() == 42


def test_greenlet_io_call_is_not_a_deadlock() -> None:
    @csp.process(backend="greenlet")
    def waits_on_io(out: csp.Channel) -> None:
        csp.io(time.sleep, 0.3)
        out.write("io done")

    ch = csp.Channel()
    assert csp.Par(waits_on_io(ch), last_thread(ch), backend="greenlet").run() == [
        None,
        "io done",
    ]


def test_participants_describe_blocked_processes(k: Kit, mk: Chans) -> None:
    name = f"part-a-{k.backend}-{mk.kind}"
    a = mk(name=name)
    h = k.Spawn(k.process(last)(a))
    deadline = time.monotonic() + 10
    while True:
        mine = [p for p in _native._participants() if p["waits"] == [(a.name, "read")]]
        if mine or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert mine, _native._participants()
    p = mine[0]
    # The state says which transport the wait is on (csp.dump() shows it).
    state = {"local": "blocked", "shm": "blocked (shared)", "net": "blocked (networked)"}
    assert (p["name"], p["backend"], p["state"]) == ("last", k.backend, state[mk.kind])
    assert (p["alt"], p["timeout"]) == (False, False)
    assert p["since"] >= 0.0
    a.write(1)
    assert h.join() == 1
    assert not [p for p in _native._participants() if p["name"] == "last"]


def test_foreign_thread_that_will_write_is_not_a_deadlock() -> None:
    # A thread that never used a channel yet might still write: no report while it lives.
    ch = csp.Channel(name="from-foreign")
    writer = threading.Thread(target=lambda: (time.sleep(0.3), ch.write("hello")))
    writer.start()
    assert csp.Par(last_thread(ch)).run() == ["hello"]
    writer.join()


@pytest.mark.parametrize("how", ["timeout", "wait_for"])
def test_asyncio_timeout_on_the_waiting_task_is_not_a_deadlock(how: str) -> None:
    # ``asyncio.timeout`` (and ``wait_for`` since 3.12) arms a timer that cancels the very task
    # that waits: no other task shows the network can move, only the loop's pending timer.
    # (Before 3.12 ``wait_for`` ran the read in a task of its own, which inherits the record.)
    @csp.process
    async def patient(a: csp.Channel, b: csp.Channel) -> str:
        try:
            if how == "timeout":
                async with asyncio.timeout(0.3):
                    await a.aread()
            else:
                await asyncio.wait_for(a.aread(), 0.3)
        except TimeoutError:
            await b.awrite("timed out")
        return "patient"

    @csp.process
    async def waiting(b: csp.Channel) -> Any:
        return await b.aread()

    a, b = csp.Channel(name="a"), csp.Channel(name="b")
    assert csp.Par(patient(a, b), waiting(b)).run() == ["patient", "timed out"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_declared_deadlock_with_asyncio_exits_cleanly_every_time() -> None:
    """The watchdog wakes asyncio participants through ``call_soon_threadsafe``; the main
    thread, freed by the report, used to finalize the interpreter while the watchdog was still
    inside that call, and the process aborted at exit (SIGABRT) about one run in eight. Each
    run must exit 0 (``run_program`` checks it); 80 runs catch the old failure with ~98%
    probability."""
    for _ in range(80):
        msgs = deadlock_messages(run_program(THREAD_AND_ASYNCIO))
        assert len(msgs) == 2
