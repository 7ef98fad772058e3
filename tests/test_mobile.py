"""Mobile processes (DESIGN 2): an unstarted process is a value that pickles (its function by
reference, its arguments including channel ends), so it can be sent over a channel and started
elsewhere. The classic example: a server that receives processes and runs them.

Covered: a runner in another OS process and a runner that is a greenlet, processes carrying
channel ends (which then cross to the runner), a nested Par as a mobile process, and the clear
errors for what cannot move (lambdas, closures). Every test runs under ``no_leaks``.
"""

from __future__ import annotations

import os
import pickle

import pytest

import ferrocsp as csp
from _os_support import no_leaks
from _support import all_exceptions, notes

pytestmark = [pytest.mark.usefixtures("no_leaks"), pytest.mark.timeout(60)]
__all__ = ["no_leaks"]


@csp.process
def runner(inbox: csp.Reader) -> list[object]:
    """The server: starts every process it receives, then waits for all of them."""
    handles = [csp.Spawn(p, backend="greenlet") for p in inbox]
    return [h.join() for h in handles]


@csp.process
def squares(out: csp.Writer, n: int) -> int:
    with out:
        for i in range(n):
            out.write(i * i)
    return os.getpid()


@csp.process
def ping(inp: csp.Reader, out: csp.Writer) -> str:
    with out:
        for v in inp:
            out.write(("pong", v))
    return "done"


@csp.process
def boom(out: csp.Writer) -> None:
    raise ValueError("mobile failure")


def plain_pid() -> int:
    return os.getpid()


def _drain(ch: csp.Channel) -> list[object]:
    return list(ch.reader())


@pytest.mark.parametrize("where", ["os", "greenlet"])
def test_server_runs_processes_it_receives(where: str) -> None:
    inbox, a = csp.Channel(), csp.Channel()
    server = csp.Par(runner(inbox.reader()), backend=where).start()
    with inbox.writer() as send:
        send.write(squares(a.writer(), 5))  # a channel end travels with the process
        send.write(csp.Process(plain_pid))  # an undecorated module-level function
    got = _drain(a)
    ((pid_a, pid_plain),) = server.join(timeout=30)
    assert got == [0, 1, 4, 9, 16]
    assert pid_a == pid_plain
    assert (pid_a != os.getpid()) == (where == "os")


def test_mobile_process_talks_both_ways_with_its_sender() -> None:
    inbox, req, rep = csp.Channel(), csp.Channel(), csp.Channel()
    server = csp.Par(runner(inbox.reader()), backend="os").start()
    with inbox.writer() as send:
        send.write(ping(req.reader(), rep.writer()))
    with req.writer() as w:
        replies = []
        for i in range(3):
            w.write(i)
            replies.append(rep.read())
    assert replies == [("pong", 0), ("pong", 1), ("pong", 2)]
    assert server.join(timeout=30) == [["done"]]


def test_nested_par_moves_as_one_process() -> None:
    inbox, a, b = csp.Channel(), csp.Channel(), csp.Channel()
    server = csp.Par(runner(inbox.reader()), backend="os").start()
    with inbox.writer() as send:
        send.write(csp.Par(squares(a.writer(), 3), squares(b.writer(), 4), backend="greenlet"))
    got = (_drain(a), _drain(b))
    ((pids,),) = server.join(timeout=30)
    assert got == ([0, 1, 4], [0, 1, 4, 9])
    assert len(set(pids)) == 1
    assert pids[0] != os.getpid()


def test_failure_of_a_mobile_process_reaches_the_server_s_caller() -> None:
    inbox, a = csp.Channel(), csp.Channel()
    server = csp.Par(runner(inbox.reader()), backend="os").start()
    with inbox.writer() as send:
        send.write(boom(a.writer()))
    with pytest.raises(BaseExceptionGroup) as info:
        server.join(timeout=30)
    (leaf,) = all_exceptions(info.value)
    assert isinstance(leaf, ValueError)
    assert "in process 'boom'" in notes(leaf)


def test_lambda_cannot_cross_an_os_process_and_says_so() -> None:
    inbox = csp.Channel()
    server = csp.Par(runner(inbox.reader()), backend="os").start()
    with inbox.writer() as send:
        with pytest.raises(TypeError, match=r"process '<lambda>' cannot move .* is a lambda"):
            send.write(csp.Process(lambda: 1))

        def local() -> int:
            return 2

        with pytest.raises(TypeError, match=r"'local' cannot move .* is a closure"):
            send.write(csp.Process(local))
    assert server.join(timeout=30) == [[]]


def test_lambda_on_backend_os_is_a_clear_error_at_start() -> None:
    with pytest.raises(TypeError, match="is a lambda"):
        csp.Par(csp.Process(lambda: 1), backend="os").run()


def test_lambda_moves_within_one_os_process() -> None:
    # In-process channels pass objects by reference: nothing is pickled, so a lambda moves to
    # a greenlet runner freely.
    inbox = csp.Channel()
    server = csp.Par(runner(inbox.reader()), backend="greenlet").start()
    with inbox.writer() as send:
        send.write(csp.Process(lambda: "moved"))
    assert server.join(timeout=30) == [["moved"]]


def test_process_pickles_by_reference_and_runs_after_unpickling() -> None:
    ch = csp.Channel()
    w = ch.writer()
    p = pickle.loads(pickle.dumps(squares(w, 3)))
    assert p.fn is squares(w, 3).fn
    assert p.args == (w, 3)
    assert p.args[0] is w  # within one interpreter an end unpickles as itself
    del w
    h = csp.Spawn(p)
    assert list(ch.reader()) == [0, 1, 4]
    assert h.join(timeout=10) == os.getpid()
