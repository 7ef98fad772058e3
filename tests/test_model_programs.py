"""Hypothesis runs random CSP programs for real and checks every history against the model.

A program (tests/_programs.py) is a few channels of random capacity and transport and a few
processes on random backends doing blocking and non-blocking reads and writes, Alts with
input, output, timeout and skip guards and ``when`` conditions, poison, retire, and ends sent
to other processes and used there. Its recorded history (who did what, between which two
instants, with what outcome, and the final state of each channel) must be linearizable
against the reference model (tests/_refmodel.py): some order of the operations that respects
real time and pairs each rendezvous write with its read explains every outcome.

Short mode (the default suite): fixed examples (``derandomize``, no example database), so CI
runs the same programs every time, within about a minute. Full mode (``FERROCSP_SLOW=1``):
many more random examples, OS processes and networked channels too; the command is in
docs/design.md ("How it is checked: hypothesis models"), with
``--hypothesis-show-statistics`` to print the number of examples run.

Every divergence found becomes a regression test (``test_regression_*`` below), written as
the program hypothesis shrank it to; a known one not fixed yet is marked
``xfail(strict=True)``, so that its fix makes the mark fail until it goes.

Invariants: every test here can fail (tests/test_refmodel.py shows the checker rejecting
non-linearizable histories); nothing is skipped silently (the networked tests need
nats-server, and say so when it is missing).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import ferrocsp as csp
from _greenlet_ft import greenlet_unusable
from _nats import NatsServer, nats_fixture
from _programs import ChanPlan, Program, programs, run, to_history
from _refmodel import OK, Op, check

__all__ = ["nats_fixture"]  # a fixture, registered for this module by importing it

FULL = os.environ.get("FERROCSP_SLOW") == "1"
#: FERROCSP_MODEL_EXAMPLES overrides the number of examples of each full-mode test.
FULL_EXAMPLES = int(os.environ.get("FERROCSP_MODEL_EXAMPLES", "2000"))

IN_PROCESS = ("thread", "greenlet", "asyncio", "coroutine")


def in_process_programs(transports: tuple[str, ...], *extra: str, **kw: int) -> Any:
    """Programs over the in-process backends (and ``extra``) and ``transports``. Where
    greenlets cannot run (a free-threaded 3.13, tests/_greenlet_ft.py: the interpreter
    crashes), none runs: no greenlet process, and asyncio and coroutine processes only on
    in-process channels (on a shared or networked one their operations wait on greenlets:
    ``shm_aio.rs``, the coroutine backend's greenlet tasks). The GIL builds' programs, CI's,
    are unchanged."""
    if greenlet_unusable() is None:
        return programs((*IN_PROCESS, *extra), transports, **kw)
    return st.one_of(
        programs(("thread", *extra), transports, **kw),
        programs(("thread", "asyncio", "coroutine", *extra), ("local",), **kw),
    )


#: The per-test limit: a full run lasts as long as its examples need.
LIMIT = pytest.mark.timeout(24 * 3600 if FULL else 600)


def _settings(short: int, full: int = FULL_EXAMPLES) -> Any:
    return settings(
        max_examples=full if FULL else short,
        deadline=None,
        derandomize=not FULL,
        database=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def run_and_check(
    program: Program, conn: Any = None, *, events: bool = True, known_gaps: bool = True
) -> None:
    r = run(program, conn)
    chans, ops = to_history(r, known_gaps=known_gaps)
    if events:
        event(f"operations recorded: {len(ops) // 10 * 10}+")
        event("backends: " + "+".join(sorted({b for _, b, _ in program.procs})))
        taken = sum(1 for o in ops if o.proc != "main" and _took(o))
        event(f"values taken by the processes: {min(taken, 5)}{'+' if taken >= 5 else ''}")
    why = check(chans, ops)
    assert why is None, f"program:\n{program}\n{why}"


def _took(o: Op) -> bool:
    """Whether ``o`` took a value (a read, or an Alt whose input guard fired)."""
    if o.outcome[0] != OK:
        return False
    return o.kind == "read" or (o.kind == "alt" and o.guards[o.outcome[1][0]].kind == "in")


@LIMIT
@_settings(short=150)
@given(in_process_programs(("local", "shm")))
def test_programs_in_process(program: Program) -> None:
    run_and_check(program)


@LIMIT
@_settings(short=30)
@given(programs(("thread",), ("local",), max_procs=4, max_ops=12, max_chans=1))
def test_dense_thread_histories(program: Program) -> None:
    """Four threads on one channel, many operations each: long overlapping histories, where
    the linearizability search has real work to do."""
    run_and_check(program)


@pytest.mark.slow
@LIMIT
@_settings(short=10, full=FULL_EXAMPLES // 4)
@given(in_process_programs(("local", "shm"), "os", max_procs=4))
def test_programs_with_os_processes(program: Program) -> None:
    run_and_check(program)


@pytest.fixture(scope="module")
def net_conn(nats: NatsServer) -> Iterator[Any]:
    import ferrocsp.net as net

    conn = net.connect(nats.url)
    yield conn
    conn.close()


@pytest.mark.slow
@LIMIT
@_settings(short=10, full=FULL_EXAMPLES // 4)
@given(in_process_programs(("local", "net")))
def test_programs_on_networked_channels(net_conn: Any, program: Program) -> None:
    run_and_check(program, net_conn)


# ------------------------------------------------------------------------------ regressions


def _one_chan(capacity: int, transport: str, *procs: tuple[str, str, tuple[Any, ...]]) -> Program:
    return Program((ChanPlan("c0", capacity, transport, (), ("c0w0",)),), procs)


@pytest.mark.parametrize("capacity", [0, 1])
@pytest.mark.parametrize("transport", ["local", "shm"])
@pytest.mark.parametrize("mode", ["nowait", 0.0, 0.01])
def test_regression_write_after_the_writers_retired(
    capacity: int, transport: str, mode: Any
) -> None:
    """Found by test_programs_in_process: on a channel in shared memory, a write through the
    channel object after every writer end retired was not refused (a rendezvous one waited,
    a buffered one was buffered); in process it raises ChannelRetired, as DESIGN says."""
    ops = (("retire", "c0w0"), ("write", "c0", None, mode, 1))
    run_and_check(_one_chan(capacity, transport, ("p0", "thread", ops)), events=False)


@pytest.mark.parametrize("capacity", [0, 1])
@pytest.mark.parametrize("transport", ["local", "shm"])
def test_regression_output_guard_after_the_writers_retired(capacity: int, transport: str) -> None:
    """The same for an Output guard: after every writer end retired it can never fire (the
    Alt takes its Timeout), on a channel in shared memory as in process."""
    guards = (("out", "c0", None, 1, None), ("timeout", 0.01, None))
    ops = (("retire", "c0w0"), ("alt", "pri_select", guards))
    run_and_check(_one_chan(capacity, transport, ("p0", "thread", ops)), events=False)


def _read_ends_chan(transport: str, *procs: tuple[str, str, tuple[Any, ...]]) -> Program:
    return Program((ChanPlan("c0", 1, transport, ("c0r0",), ()),), procs)


@pytest.mark.parametrize("transport", ["local", "shm"])
@pytest.mark.parametrize("mode", ["nowait", 0.0, 0.01])
def test_regression_read_after_the_readers_retired(transport: str, mode: Any) -> None:
    """Found by test_programs_in_process: on a channel in shared memory, after every reader
    end retired, a read through the channel object still took a buffered value (here the
    program's own read and then the final drain's); in process it raises ChannelRetired and
    the buffer is dropped (docs/design.md, "Semantics details decided here")."""
    ops = (("write", "c0", None, "nowait", 1), ("retire", "c0r0"), ("read", "c0", None, mode))
    run_and_check(_read_ends_chan(transport, ("p0", "thread", ops)), events=False)


@pytest.mark.parametrize("transport", ["local", "shm"])
def test_regression_input_guard_after_the_readers_retired(transport: str) -> None:
    """The same for an input guard: it can never fire (the Alt takes its Timeout)."""
    guards = (("in", "c0", None, None), ("timeout", 0.01, None))
    ops = (("write", "c0", None, "nowait", 1), ("retire", "c0r0"), ("alt", "pri_select", guards))
    run_and_check(_read_ends_chan(transport, ("p0", "thread", ops)), events=False)


NET_GAP = (
    "known divergence of networked channels (docs/design.md, 'How it is checked: hypothesis "
    "models'): an operation through the channel object ignores that every end of its own "
    "side retired; strict, so fixing it fails this mark and the model's allowance must go"
)


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=NET_GAP)
@pytest.mark.parametrize("capacity", [0, 1])
def test_regression_net_read_after_the_readers_retired(net_conn: Any, capacity: int) -> None:
    """Found by test_programs_on_networked_channels: after every reader end retired, a read
    through a networked channel object waits (or takes a buffered value) where a local or
    shared one raises ChannelRetired."""
    program = Program(
        (ChanPlan("c0", capacity, "net", ("c0r0",), ()),),
        (("p0", "thread", (("retire", "c0r0"), ("read", "c0", None, "nowait"))),),
    )
    run_and_check(program, net_conn, events=False, known_gaps=False)


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=NET_GAP)
@pytest.mark.parametrize("capacity", [0, 1])
def test_regression_net_write_after_the_writers_retired(net_conn: Any, capacity: int) -> None:
    """The same for a write after every writer end retired: accepted (buffered, or waiting
    for a reader) where a local or shared channel raises ChannelRetired."""
    ops = (("retire", "c0w0"), ("write", "c0", None, 0.01, 1))
    run_and_check(
        _one_chan(capacity, "net", ("p0", "thread", ops)), net_conn, events=False, known_gaps=False
    )


def test_regression_a_move_completes_no_blocked_write() -> None:
    """Found by test_programs_in_process: a buffered channel that moved to shared memory (one
    of its ends was written to a shared channel) while a writer waited for room completed
    that write with nobody reading: the move handed out the blocked writers' values with the
    buffer, so the channel then held twice its capacity. A blocked write now retries on the
    shared channel, where it waits (here: until its timeout)."""
    program = Program(
        (
            ChanPlan("c0", 1, "local", ("c0r0",), ()),
            ChanPlan("c1", 1, "shm", (), ()),
            ChanPlan("c2", 0, "local", (), ()),
        ),
        (
            ("p0", "thread", (("write", "c0", None, "nowait", 1), ("write", "c0", None, 0.2, 2))),
            # The read of c2 times out: a pause, so that the move finds p0 waiting.
            (
                "p1",
                "thread",
                (("read", "c2", None, 0.05), ("write", "c1", None, 0, ("end", "c0r0"))),
            ),
        ),
    )
    run_and_check(program, events=False)


def test_regression_a_channel_holding_its_own_end_moves() -> None:
    """Found by test_programs_in_process: a local channel whose buffer held one of its own
    ends could not move to shared memory (checking that the buffered values pickle pickled
    the end, which moved the same channel again, until RecursionError, reported as
    TypeError). The check now passes over the channel and its ends (``_shm.check_travels``)."""
    from ferrocsp import _shm

    ch = csp.Channel(1, name="c0")
    r = ch.reader()
    ch.write_nowait(r)
    _shm.share(ch)
    assert ch.read_nowait() is r


def test_regression_write_nowait_to_a_waiting_coroutine_on_a_shared_channel() -> None:
    """Found by test_programs_in_process (a hang: the run's join timed out): two asyncio
    processes, one waiting in ``aread(timeout=...)`` on a shared rendezvous channel, the
    other calling ``write_nowait`` there. In process the hand-off is immediate. In shared
    memory a rendezvous write that found a reader waiting waits for the take; here the
    reader is a coroutine of the writer's own event loop, which cannot run during the call,
    so the write waits only briefly and then withdraws (``WouldBlock``, nothing sent)
    instead of waiting for ever (``shm.rs``'s ``NOWAIT_TAKE``)."""
    import asyncio

    from ferrocsp import _shm

    ch = csp.Channel(0, name="c0")
    _shm.share(ch)

    async def reader() -> object:
        try:
            return await ch.aread(timeout=0.5)
        except TimeoutError:
            return "timeout"

    async def writer() -> object:
        await asyncio.sleep(0.05)  # the reader waits first
        try:
            ch.write_nowait(1)
        except csp.WouldBlock:
            return "wouldblock"
        return "sent"

    h = csp.Par(reader, writer).start()
    try:
        got = h.join(timeout=5)
    except TimeoutError:
        ch.poison()  # ends the stuck write_nowait, so nothing is left running
        h.join(timeout=30)
        raise
    assert got in ([1, "sent"], ["timeout", "wouldblock"])
