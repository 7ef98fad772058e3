"""The OS-process backend, continued: ends and channels sent over channels (mobility), Alt
over shared channels, payload types, channels that move while in use, Ctrl-C.

Every test runs under ``no_leaks``: no /dev/shm entry and no child process may be left behind.
"""

from __future__ import annotations

import multiprocessing.connection
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import pytest

import ferrocsp as csp
from _os_support import no_leaks
from _support import ANNOUNCE_WHEN_JOINING, all_exceptions, interrupt_child, wait_until

pytestmark = [pytest.mark.usefixtures("no_leaks"), pytest.mark.timeout(60)]
__all__ = ["no_leaks"]


@csp.process(backend="os")
def use_received_writer(box: csp.Reader, n: int) -> str:
    out = box.read()
    with out:
        for i in range(n):
            out.write(i)
    return type(out).__name__


@csp.process(backend="os")
def forward_end(box_in: csp.Reader, box_out: csp.Writer) -> None:
    box_out.write(box_in.read())


@csp.process(backend="os")
def alt_reader(a: csp.Reader, b: csp.Reader, n: int) -> list[tuple[str, int]]:
    alt = csp.Alt(a, b)
    got = []
    for _ in range(n):
        g, v = alt.pri_select()
        got.append(("a" if g is a else "b", v))
    return got


@csp.process(backend="os")
def alt_timeout(a: csp.Reader, t: float) -> str:
    g, _ = csp.Alt(a, csp.Timeout(t)).select()
    return "timeout" if isinstance(g, csp.Timeout) else "read"


@csp.process(backend="os")
def alt_skip(a: csp.Reader) -> str:
    g, _ = csp.Alt(a, csp.Skip()).pri_select()
    return "skip" if isinstance(g, csp.Skip) else "read"


@csp.process(backend="os")
def alt_output(out: csp.Writer, never: csp.Reader) -> str:
    g, _ = csp.Alt(never, csp.Output(out, "sent")).select()
    return "output" if isinstance(g, csp.Output) else "input"


@csp.process(backend="os")
def alt_forever(pids: csp.Writer, a: csp.Reader, b: csp.Reader) -> None:
    pids.write(os.getpid())
    csp.Alt(a, b).select()


@csp.process(backend="os")
def blocked_alt(a: csp.Reader, b: csp.Reader) -> str:
    csp.Alt(a, b).select()
    return "unreachable"


@csp.process(backend="os")
def offer_forever(pids: csp.Writer, box: csp.Reader, inp: csp.Reader) -> None:
    out = box.read()  # received, not an argument: the parent does not poison it on a crash
    pids.write(os.getpid())
    csp.Alt(csp.Output(out, "from the dead"), inp).select()


@csp.process
def offer_once(out: csp.Writer) -> str:
    g, _ = csp.Alt(csp.Output(out, "alive")).select()
    return "output" if isinstance(g, csp.Output) else "?"


@csp.process(backend="os")
def echo_type(inp: csp.Reader, out: csp.Writer) -> None:
    v = inp.read()
    out.write(v)


@csp.process
def thread_feed(out: csp.Writer, values: list[int]) -> None:
    with out:
        for v in values:
            out.write(v)


@csp.process(backend="os")
def os_collect(inp: csp.Reader) -> list[int]:
    return list(inp)


def test_writer_end_sent_to_child_is_used_and_retired_there() -> None:
    ch, box = csp.Channel(), csp.Channel()
    h = csp.Par(use_received_writer(box.reader(), 5)).start()
    w = ch.writer()
    box.write(w, timeout=20)
    r = ch.reader()
    assert list(r) == [0, 1, 2, 3, 4]  # the child retired the end: end-of-stream here
    assert h.join(timeout=20) == ["Writer"]
    assert w.retired  # every copy of an end is that one end


def test_end_travels_through_two_processes_and_comes_back_as_itself() -> None:
    ch, b1, b2 = csp.Channel(), csp.Channel(), csp.Channel()
    w = ch.writer()
    h = csp.Par(forward_end(b1.reader(), b2.writer())).start()
    b1.write(w, timeout=20)
    assert b2.read(timeout=20) is w
    assert h.join(timeout=20) == [None]


def test_alt_over_shared_channels_in_child() -> None:
    a, b = csp.Channel(), csp.Channel()
    h = csp.Par(alt_reader(a.reader(), b.reader(), 4)).start()
    a.write(1, timeout=20)
    b.write(2, timeout=20)
    b.write(3, timeout=20)
    a.write(4, timeout=20)
    assert h.join(timeout=20) == [[("a", 1), ("b", 2), ("b", 3), ("a", 4)]]


def test_alt_timeout_and_skip_in_child() -> None:
    a = csp.Channel()
    assert csp.Par(alt_timeout(a.reader(), 0.05), alt_skip(a.reader())).run() == [
        "timeout",
        "skip",
    ]


def test_alt_output_guard_to_a_blocked_reader() -> None:
    out, never = csp.Channel(), csp.Channel()
    h = csp.Par(alt_output(out.writer(), never.reader())).start()
    assert out.read(timeout=20) == "sent"
    assert h.join(timeout=20) == ["output"]


def test_alt_in_parent_over_shared_channels() -> None:
    a, b = csp.Channel(), csp.Channel()
    h = csp.Par(thread_feed(a.writer(), [7]), os_collect(b.reader())).start()
    with b.writer() as w:
        _, v = csp.Alt(a.reader(), csp.Timeout(20)).select()
        assert v == 7
        w.write(v, timeout=20)
    assert h.join(timeout=20) == [None, [7]]


def test_alt_mixing_shared_and_in_process_channels() -> None:
    # One Alt over both kinds (tests/test_alt_mixed.py has the rest).
    a, local = csp.Channel(), csp.Channel(1)
    h = csp.Par(os_collect(a.reader()))
    handle = h.start()  # a is shared now
    local.write(5)
    assert csp.Alt(a, local).select() == (local, 5)
    handle.poison()


def test_sigkill_mid_alt_crashes_and_wakes_peers() -> None:
    pids, a, b = csp.Channel(), csp.Channel(), csp.Channel()
    handle = csp.Par(
        alt_forever(pids.writer(), a.reader(), b.reader()), blocked_alt(a.reader(), b.reader())
    ).start()
    os.kill(pids.read(timeout=20), signal.SIGKILL)
    with pytest.raises(ExceptionGroup) as ei:
        handle.join(timeout=20)
    (exc,) = all_exceptions(ei.value)
    assert isinstance(exc, csp.ProcessCrashed)
    assert exc.process == "alt_forever"
    assert exc.signal == signal.SIGKILL


def test_sigkill_reported_by_the_sentinel_alone_is_collected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A SIGKILLed child makes its sentinel and its result pipe ready at about the same time,
    and ``multiprocessing.connection.wait`` may report the sentinel alone (2 runs in 15 of the
    test above under ``spawn``, before the fix). The collecting thread then reaps the child
    and closes its pipe; the pipe must leave the wait set with it, or the next wait raises
    ``OSError('handle is closed')``, the peer fails with that instead of its own outcome and
    is never reaped. The wait is wrapped here so that it always reports that order: a pipe
    only once a child has exited (its result is then read by the sentinel's handling)."""
    real = multiprocessing.connection.wait

    def sentinels_first(objects: Sequence[Any], timeout: float | None = None) -> list[Any]:
        sentinels = [o for o in objects if isinstance(o, int)]
        if not sentinels or len(sentinels) == len(objects):  # e.g. Connection.poll()
            return real(objects, timeout)
        real(objects, timeout)  # as the real one: fails on a closed connection
        return real(sentinels, timeout)

    monkeypatch.setattr(multiprocessing.connection, "wait", sentinels_first)
    test_sigkill_mid_alt_crashes_and_wakes_peers()


def test_sigkill_of_a_selecting_peer_with_its_offer_registered() -> None:
    """A selection killed while its conditional offer and its input guard are registered in
    shared memory blocks nobody: its offer is never taken (nothing is delivered from the dead),
    stats() stops counting it, and the channels (not poisoned: the child received them) work on
    with live selections."""
    pids, box = csp.Channel(name="pids"), csp.Channel(name="box")
    data, inp = csp.Channel(name="data"), csp.Channel(name="inp")
    handle = csp.Par(offer_forever(pids.writer(), box.reader(), inp.reader())).start()
    box.write(data.writer(), timeout=20)
    pid = pids.read(timeout=20)
    wait_until(
        lambda: data.stats().writers_waiting == 1 and inp.stats().readers_waiting == 1,
        what="the child's offer and input guard registered",
    )
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(ExceptionGroup) as ei:
        handle.join(timeout=20)
    (exc,) = all_exceptions(ei.value)
    assert isinstance(exc, csp.ProcessCrashed)
    st = data.stats()
    assert (st.poisoned, st.writers_waiting) == (False, 0)
    assert inp.stats().readers_waiting == 0
    # Neither a plain read nor a selecting reader takes the dead selection's value.
    with pytest.raises(TimeoutError):
        data.read(timeout=0.2)
    t = csp.Timeout(0.2)
    assert csp.Alt(data, t).select() == (t, None)
    # A live selection's offer on the same channel reaches a selecting reader.
    h = csp.Par(offer_once(data.writer())).start()
    assert csp.Alt(data, csp.Timeout(20)).select() == (data, "alive")
    assert h.join(timeout=20) == ["output"]


@pytest.mark.parametrize(
    "value",
    [
        b"x" * 100_000,
        bytearray(b"y" * 100_000),
        {"nested": [1, 2.5, "three", (4, None)], "blob": b"z" * 200_000},
        b"",
    ],
    ids=["bytes", "bytearray", "nested", "empty"],
)
def test_payload_types_round_trip(value: object) -> None:
    a, b = csp.Channel(), csp.Channel()
    h = csp.Par(echo_type(a.reader(), b.writer())).start()
    a.write(value, timeout=20)
    back = b.read(timeout=20)
    assert back == value
    assert type(back) is type(value)
    h.join(timeout=20)


def test_memoryview_round_trip() -> None:
    a, b = csp.Channel(), csp.Channel()
    h = csp.Par(echo_type(a.reader(), b.writer())).start()
    mv = memoryview(bytearray(range(256)) * 1024).cast("I")
    a.write(mv, timeout=20)
    back = b.read(timeout=20)
    assert isinstance(back, memoryview)
    assert back.format == "I"
    assert back.tolist() == mv.tolist()
    h.join(timeout=20)


def test_numpy_array_round_trip_and_is_owned() -> None:
    np = pytest.importorskip("numpy")
    a, b = csp.Channel(), csp.Channel()
    h = csp.Par(echo_type(a.reader(), b.writer())).start()
    arr = np.arange(1 << 20, dtype=np.float64).reshape(1024, 1024)
    a.write(arr, timeout=20)
    back = b.read(timeout=20)
    assert back.dtype == arr.dtype
    assert back.shape == arr.shape
    assert (back == arr).all()
    back[0, 0] = -1.0  # the reader owns a writable copy
    assert arr[0, 0] == 0.0
    h.join(timeout=20)


def test_channel_moves_while_a_thread_is_blocked_on_it() -> None:
    ch = csp.Channel(2)
    feeder = csp.Par(thread_feed(ch.writer(), list(range(10)))).start()
    wait_until(lambda: ch.stats().writers_waiting == 1, what="feeder blocked on a full buffer")
    # Sending the channel to a child moves it to shared memory with the buffered values and
    # the blocked writer, which retries there: nothing lost, nothing reordered.
    assert csp.Par(os_collect(ch.reader())).run() == [list(range(10))]
    assert feeder.join(timeout=20) == [None]


@csp.process(backend="greenlet")
def green_sum(inp: csp.Reader) -> int:
    return sum(inp)


@csp.process(backend="greenlet")
def green_tick(out: csp.Writer, n: int) -> None:
    with out:
        for i in range(n):
            out.write(i)


@csp.process(backend="os")
def os_feed(out: csp.Writer, n: int) -> None:
    with out:
        for i in range(n):
            out.write(i)


def test_greenlets_share_channels_with_children_without_blocking_their_scheduler() -> None:
    # Two greenlets of one scheduler: one waits on a shared channel fed by an OS process,
    # the other pair talks over an in-process channel meanwhile.
    shared, local = csp.Channel(), csp.Channel()
    res = csp.Par(
        os_feed(shared.writer(), 50),
        green_sum(shared.reader()),
        green_tick(local.writer(), 50),
        green_sum(local.reader()),
    ).run()
    assert res == [None, sum(range(50)), None, sum(range(50))]


@csp.process(backend="os")
def spin_forever(ch: csp.Reader) -> None:
    while True:  # ignores poison: only a kill ends it
        pass


def test_ctrl_c_kills_children_that_ignore_poison() -> None:
    tests_dir = os.path.dirname(__file__)
    code = f"""
import os, sys, time
sys.path.insert(0, {tests_dir!r})
import ferrocsp as csp
from test_os_mobility_alt import spin_forever

h = csp.Par(spin_forever(csp.Channel().reader())).start()
kid = h._os_host._children[0].pid
announce_when_joining()
try:
    h.join()
except KeyboardInterrupt:
    # Killed and joined; its parent (the forkserver) reaps it within moments.
    deadline = time.monotonic() + 2
    while os.path.exists(f"/proc/{{kid}}") and time.monotonic() < deadline:
        time.sleep(0.01)
    print("INTERRUPTED", os.path.exists(f"/proc/{{kid}}"), flush=True)
"""
    _, out, err = interrupt_child(ANNOUNCE_WHEN_JOINING + code)
    assert "INTERRUPTED False" in out, (out, err)


def test_ctrl_c_ends_children_and_leaves_nothing() -> None:
    tests_dir = os.path.dirname(__file__)
    code = f"""
import os, sys, time
sys.path.insert(0, {tests_dir!r})
import ferrocsp as csp
from test_os_mobility_alt import os_collect, blocked_alt

ch, a, b = csp.Channel(), csp.Channel(), csp.Channel()
h = csp.Par(os_collect(ch.reader()), blocked_alt(a.reader(), b.reader())).start()
kids = [c.pid for c in h._os_host._children]
announce_when_joining()
try:
    h.join()
except KeyboardInterrupt:
    # Ended and joined; their parent (the forkserver) reaps them within moments.
    deadline = time.monotonic() + 2
    while any(os.path.exists(f"/proc/{{k}}") for k in kids) and time.monotonic() < deadline:
        time.sleep(0.01)
    alive = [k for k in kids if os.path.exists(f"/proc/{{k}}")]
    print("INTERRUPTED", alive, flush=True)
"""
    _, out, err = interrupt_child(ANNOUNCE_WHEN_JOINING + code)
    assert "INTERRUPTED []" in out, (out, err)


@csp.process(backend="os")
def report_pid_then_block(pids: csp.Writer, never: csp.Reader) -> None:
    pids.write(os.getpid())
    never.read()


def test_children_do_not_outlive_a_killed_parent() -> None:
    tests_dir = os.path.dirname(__file__)
    code = f"""
import os, sys
sys.path.insert(0, {tests_dir!r})
import ferrocsp as csp
from test_os_mobility_alt import report_pid_then_block

pids, never = csp.Channel(), csp.Channel()
h = csp.Par(report_pid_then_block(pids.writer(), never.reader())).start()
print(pids.read(timeout=20), flush=True)
never.read()  # blocks until killed
"""
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        kid = int(proc.stdout.readline())
        proc.kill()  # SIGKILL: the parent cannot clean up
        proc.communicate(timeout=20)
        wait_until(lambda: not os.path.exists(f"/proc/{kid}"), what="orphan child exited")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_ctrl_c_interrupts_main_thread_blocked_on_a_shared_channel() -> None:
    tests_dir = os.path.dirname(__file__)
    code = f"""
import os, sys, time
sys.path.insert(0, {tests_dir!r})
import ferrocsp as csp
from test_os_mobility_alt import os_collect

ch, out = csp.Channel(), csp.Channel()
h = csp.Par(os_collect(ch.reader()), os_collect(out.reader())).start()  # both shared now
try:
    print("ready", flush=True)
    out.read()  # the main thread blocks on a shared channel nobody writes
except KeyboardInterrupt:
    print("INTERRUPTED", flush=True)
    h.poison()
    h.join(timeout=10)
"""
    _, out, err = interrupt_child(code)
    assert "INTERRUPTED" in out, (out, err)
