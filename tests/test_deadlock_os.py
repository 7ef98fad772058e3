"""Deadlock detection across OS processes (``backend="os"``): the parent and its children
publish their waits in a participant table in shared memory, and a network in which every
participant of every process waits forever raises ``Deadlock`` in each process.

As in tests/test_deadlock.py, each program runs in a fresh interpreter (a missed detection
fails by the subprocess timeout, and no thread of another test can hide or fake a deadlock).
The processes live in tests/_xdeadlock_procs.py so an OS child can import them. Every test
runs under the default start method (forkserver) and under ``fork`` (a forked child inherits
its parent's detection state, which it must not use: deadlock/fork.rs).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(autouse=True, params=["forkserver", "fork"])
def start_method(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The start method of the OS children (the programs inherit this environment)."""
    method: str = request.param
    monkeypatch.setenv("FERROCSP_START_METHOD", method)
    return method


#: The subprocess limit: a detection that never comes fails the test by this timeout.
LIMIT = 40.0
TESTS = str(Path(__file__).resolve().parent)

PRELUDE = """
import io, os, sys, time
sys.path.insert(0, TESTS)
import ferrocsp as csp
from _xdeadlock_procs import *

def report(exc):
    group = exc if isinstance(exc, BaseExceptionGroup) else None
    leaves = list(group.exceptions) if group else [exc]
    print("KINDS", ",".join(sorted({type(e).__name__ for e in leaves})))
    for e in leaves:
        print("MSG", str(e).replace("\\n", " | "))

if __name__ == "__main__":
    print("PARENT", os.getpid())
""".replace("TESTS", repr(TESTS))


def run_program(body: str) -> str:
    code = PRELUDE + textwrap.indent(textwrap.dedent(body), "    ")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("FERROCSP_TRACE", None)
    env.pop("FERROCSP_DEADLOCK", None)
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=LIMIT,
        env=env,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def parent_pid(out: str) -> int:
    m = re.search(r"^PARENT (\d+)$", out, re.M)
    assert m, out
    return int(m.group(1))


CROSS = """
a, b = csp.Channel(name="a"), csp.Channel(name="b")
t0 = time.monotonic()
try:
    csp.Par(left(a, b), relay_os(b, a)).run()
except BaseException as exc:
    report(exc)
print(f"ELAPSED {time.monotonic() - t0:.2f}")
"""


def test_thread_process_and_os_process_reading_each_other() -> None:
    out = run_program(CROSS)
    assert "KINDS Deadlock\n" in out, out
    msgs = [line[4:] for line in out.splitlines() if line.startswith("MSG ")]
    assert len(msgs) == 2, out  # the operation blocked in each OS process raised Deadlock
    parent = parent_pid(out)
    for m in msgs:
        assert "forever across 2 OS processes: " in m, m
        assert f"'left' (pid {parent}) reads 'a'" in m, m
        child = re.search(r"'relay_os' \(pid (\d+)\) reads 'b'", m)
        assert child, m
        assert int(child.group(1)) != parent, m
        assert "'MainThread'" in m, m  # joining them


def test_two_os_processes_reading_each_other() -> None:
    # The parent only joins: the deadlock is between its two children.
    out = run_program(
        """
        a, b = csp.Channel(name="a"), csp.Channel(name="b")
        try:
            csp.Par(relay_os(a, b), relay_os(b, a)).run()
        except BaseException as exc:
            report(exc)
        """
    )
    assert "KINDS Deadlock\n" in out, out
    msgs = [line[4:] for line in out.splitlines() if line.startswith("MSG ")]
    assert len(msgs) == 2, out
    parent = parent_pid(out)
    for m in msgs:
        assert "forever across 3 OS processes: " in m, m
        pids = {int(p) for p in re.findall(r"'relay_os' \(pid (\d+)\) reads '[ab]'", m)}
        assert len(pids) == 2, m
        assert parent not in pids, m
        assert f"'MainThread' (pid {parent})" in m, m


def test_grandchild_started_by_an_os_process_is_in_the_same_network() -> None:
    out = run_program(
        """
        a, b = csp.Channel(name="a"), csp.Channel(name="b")
        try:
            csp.Par(left(b, a), nested_os(a, b)).run()
        except BaseException as exc:
            report(exc)
        """
    )
    assert "KINDS Deadlock,ExceptionGroup\n" in out, out  # the child's Par holds its Deadlock
    m = next(line for line in out.splitlines() if line.startswith("MSG Deadlock"))
    assert "forever across 3 OS processes: " in m, m
    assert f"'left' (pid {parent_pid(out)}) reads 'b'" in m, m
    assert re.search(r"'relay_os' \(pid \d+\) reads 'a'", m), m
    assert re.search(r"waiting for them: .*'nested_os' \(pid \d+\)", m), m


def test_alt_in_a_child_and_a_read_in_the_parent() -> None:
    out = run_program(
        """
        a, b, c = csp.Channel(name="a"), csp.Channel(name="b"), csp.Channel(name="c")
        try:
            csp.Par(left(c, csp.Channel(name="unused")), alt_reader_os(a, b)).run()
        except BaseException as exc:
            report(exc)
        """
    )
    assert "KINDS Deadlock\n" in out, out
    msgs = [line[4:] for line in out.splitlines() if line.startswith("MSG ")]
    assert len(msgs) == 2, out
    for m in msgs:
        assert re.search(r"'alt_reader_os' \(pid \d+\) alts on reads 'a', reads 'b'", m), m
        assert f"'left' (pid {parent_pid(out)}) reads 'c'" in m, m


@pytest.mark.parametrize("child", ["big_alt_os", "greenlet_big_alt_os"])
def test_alt_over_200_shared_channels_in_a_child_and_a_read_in_the_parent(child: str) -> None:
    out = run_program(
        """
        chans = [csp.Channel(name=f"x{k}") for k in range(200)]
        try:
            csp.Par(left(csp.Channel(name="c"), csp.Channel(name="unused")), CHILD(chans)).run()
        except BaseException as exc:
            report(exc)
        """.replace("CHILD", child)
    )
    kinds = re.search(r"^KINDS (.*)$", out, re.M)
    assert kinds, out
    assert "Deadlock" in kinds.group(1).split(","), out  # a greenlet's in its Par's group
    msgs = [line[4:] for line in out.splitlines() if line.startswith("MSG Deadlock")]
    assert msgs, out
    for m in msgs:
        assert f"'left' (pid {parent_pid(out)}) reads 'c'" in m, m
        assert re.search(r"'big_alt_(os|co)' \(pid \d+\) alts on reads 'x0', ", m), m


def test_busy_ping_pong_with_pauses_is_not_a_deadlock() -> None:
    # Many short waits on both sides, some long enough to be confirmed, while the other side
    # sleeps (runs): no moment at which every process waits forever.
    out = run_program(
        """
        to, back = csp.Channel(name="to"), csp.Channel(name="back")
        got = []

        @csp.process
        def ping(out, inp):
            with out:
                for i in range(200):
                    out.write(i)
                    got.append(inp.read())
                    if i % 7 == 0:
                        time.sleep(0.03)

        csp.Par(ping(to.writer(), back), echo_with_pauses(to.reader(), back, 1)).run()
        print("GOT", got == list(range(200)))
        """
    )
    assert "GOT True" in out, out
    assert "KINDS" not in out, out


def test_child_computing_then_writing_is_not_a_deadlock() -> None:
    out = run_program(
        """
        c = csp.Channel(name="c")
        got = []

        @csp.process
        def take(inp):
            got.append(inp.read())

        csp.Par(take(c), busy_then_write(c, 2.0)).run()
        print("GOT", got[0] > 0)
        """
    )
    assert "GOT True" in out, out
    assert "KINDS" not in out, out


def test_child_waiting_with_a_deadline_is_not_a_deadlock() -> None:
    out = run_program(
        """
        never, back = csp.Channel(name="never"), csp.Channel(name="back")
        got = []

        @csp.process
        def take(inp):
            got.append(inp.read())

        csp.Par(take(back), read_with_timeout_then_write(never, back, 1.5)).run()
        print("GOT", got)
        """
    )
    assert "GOT ['timed out']" in out, out


def test_killed_child_is_a_crash_not_a_deadlock() -> None:
    # The parent waits forever on a channel of a child that dies: the parent's host poisons
    # the child's channels (ProcessCrashed, ChannelPoisoned), and the dead child's slot never
    # makes the parent look deadlocked.
    out = run_program(
        """
        c = csp.Channel(name="c")
        try:
            csp.Par(left(c, csp.Channel(name="unused")), die_after_start(c)).run()
        except BaseException as exc:
            report(exc)
        """
    )
    kinds = re.search(r"^KINDS (.*)$", out, re.M)
    assert kinds, out
    assert "ProcessCrashed" in kinds.group(1).split(","), out
    assert "Deadlock" not in out, out


def test_dump_in_parent_lists_the_childs_wait() -> None:
    out = run_program(
        """
        req = csp.Channel(name="req")
        h = csp.Par(waiter_os(req)).start()
        deadline = time.monotonic() + 30
        text = ""
        while time.monotonic() < deadline:
            buf = io.StringIO()
            csp.dump(buf)
            text = buf.getvalue()
            if "OS processes" in text and "'req' read" in text.split("OS processes", 1)[1]:
                break
            time.sleep(0.05)  # polling the dump's text for the child's published wait
        print(text)
        req.write("go")
        print("RESULT", h.join())
        """
    )
    assert "OS processes" in out, out
    section = out.split("OS processes", 1)[1]
    m = re.search(r"pid (\d+).*waiter_os.*blocked on 'req' read", section)
    assert m, out
    assert int(m.group(1)) != parent_pid(out), out
    assert "RESULT ['go']" in out, out


# ----- cooperative processes (greenlet, asyncio) in an OS child -----

COOP = """
a, b = csp.Channel(name="a"), csp.Channel(name="b")
t0 = time.monotonic()
try:
    csp.Par(left(b, a), CHILD(a, b)).run()
except BaseException as exc:
    report(exc)
print(f"ELAPSED {time.monotonic() - t0:.2f}")
"""


@pytest.mark.parametrize(
    ("child", "proc"), [("greenlet_relay_os", "relay_co"), ("aio_relay_os", "relay_aio")]
)
def test_cooperative_processes_in_a_child_deadlocked_with_the_parent(child: str, proc: str) -> None:
    # The child's processes wait cooperatively: one on the parent's shared channel 'a', one on
    # a channel of its own; the parent's thread process waits on 'b'. Every participant of
    # both OS processes waits forever.
    out = run_program(COOP.replace("CHILD", child))
    kinds = re.search(r"^KINDS (.*)$", out, re.M)
    assert kinds, out
    assert "Deadlock" in kinds.group(1).split(","), out
    msgs = [line[4:] for line in out.splitlines() if line.startswith("MSG Deadlock")]
    assert msgs, out
    parent = parent_pid(out)
    for m in msgs:
        assert "across 2 OS processes: " in m, m
        assert f"'left' (pid {parent}) reads 'b'" in m, m
        found = re.search(rf"'{proc}' \(pid (\d+)\) reads 'a'", m)
        assert found, m
        assert int(found.group(1)) != parent, m
        assert re.search(rf"'{proc}' \(pid \d+\) reads 'idle'", m), m
    elapsed = re.search(r"^ELAPSED (\S+)$", out, re.M)
    assert elapsed, out
    print("from run() to the report:", elapsed.group(1), "s")  # the issue asks for 3 s


COOP_LIVE = """
to, back = csp.Channel(name="to"), csp.Channel(name="back")
got = []

@csp.process
def ping(out, inp):
    with out:
        for i in range(12):
            out.write(i)
            got.append(inp.read())
            if i % 3 == 1:
                time.sleep(0.45)  # longer than a quiet period: the child's wait is confirmed

try:
    csp.Par(ping(to.writer(), back), CHILD(to.reader(), back, 0.45)).run()
except BaseException as exc:
    report(exc)
print("GOT", got == list(range(12)))
"""


@pytest.mark.parametrize("child", ["greenlet_echo_os", "aio_echo_os"])
def test_slow_cooperative_ping_pong_is_not_a_deadlock(child: str) -> None:
    # Each side now and then computes (holds its thread) for longer than a quiet period while
    # the other waits: waits get confirmed on both sides, but never all at once.
    out = run_program(COOP_LIVE.replace("CHILD", child))
    assert "GOT True" in out, out
    assert "KINDS" not in out, out
