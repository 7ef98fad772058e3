"""The OS-process backend: results, failures, crashes, start methods, channels shared between
the parent and child processes (rendezvous and buffered, poison, retire, timeouts), payloads.

Every test runs under ``no_leaks``: no /dev/shm entry and no child process may be left behind.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import ferrocsp as csp
from _os_support import no_leaks, start_method
from _support import all_exceptions

pytestmark = [pytest.mark.usefixtures("no_leaks"), pytest.mark.timeout(60)]
__all__ = ["no_leaks", "start_method"]  # fixtures, used by name


@csp.process(backend="os")
def square(x: int) -> int:
    return x * x


@csp.process(backend="os")
def whoami() -> int:
    return os.getpid()


def plain_add(a: int, b: int) -> int:
    return a + b


@csp.process(backend="os")
def fail(msg: str) -> None:
    raise ValueError(msg)


@csp.process(backend="os")
def producer(out: csp.Writer, n: int) -> str:
    with out:
        for i in range(n):
            out.write(i)
    return "produced"


@csp.process(backend="os")
def consumer(inp: csp.Reader) -> int:
    return sum(inp)


@csp.process
def thread_consumer(inp: csp.Reader) -> int:
    return sum(inp)


@csp.process(backend="os")
def echo(inp: csp.Reader, out: csp.Writer) -> None:
    for v in inp:
        out.write(v)


@csp.process(backend="os")
def kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@csp.process(backend="os")
def exit_abruptly() -> None:
    os._exit(3)


@csp.process(backend="os")
def report_then_block(pids: csp.Writer, never: csp.Reader) -> None:
    pids.write(os.getpid())
    never.read()


@csp.process(backend="os")
def blocked_reader(never: csp.Reader) -> str:
    never.read()
    return "unreachable"


@csp.process(backend="os")
def die_holding_lock(ch: csp.Channel, started: csp.Writer) -> None:
    started.write(os.getpid())
    ch._shm.hold_lock_for_test()  # type: ignore[attr-defined]
    os._exit(0)


@csp.process(backend="os")
def digest(inp: csp.Reader) -> tuple[int, str, str]:
    v = inp.read()
    return len(v), type(v).__name__, hashlib.sha256(v).hexdigest()


@csp.process(backend="os")
def read_with_timeout(ch: csp.Channel, t: float) -> str:
    try:
        ch.read(timeout=t)
    except TimeoutError:
        return "timeout"
    return "value"


@csp.process(backend="os")
def returns_channel(ch: csp.Channel) -> csp.Channel:
    return ch


def test_results_in_order(start_method: str) -> None:
    assert csp.Par(square(2), square(3), square(4)).run() == [4, 9, 16]


def test_runs_in_other_processes() -> None:
    pids = csp.Par(whoami(), whoami()).run()
    assert os.getpid() not in pids
    assert pids[0] != pids[1]


def test_par_backend_os_runs_plain_functions() -> None:
    p = csp.Process(plain_add, (2, 3))
    assert csp.Par(p, backend="os").run() == [5]


def test_exception_comes_back_in_group(start_method: str) -> None:
    with pytest.raises(ExceptionGroup) as ei:
        csp.Par(fail("bad"), square(2)).run()
    (exc,) = all_exceptions(ei.value)
    assert isinstance(exc, ValueError)
    assert str(exc) == "bad"
    assert any("in process 'fail'" in n for n in exc.__notes__)


def test_unpicklable_function_is_a_clear_error() -> None:
    with pytest.raises(TypeError, match="picklable by reference"):
        csp.Par(lambda: 1, backend="os").run()


def test_killed_by_signal_is_process_crashed() -> None:
    with pytest.raises(ExceptionGroup) as ei:
        csp.Par(kill_self(), square(3)).run()
    (exc,) = all_exceptions(ei.value)
    assert isinstance(exc, csp.ProcessCrashed)
    assert exc.process == "kill_self"
    assert exc.signal == signal.SIGKILL
    assert str(exc) == "process 'kill_self' killed by SIGKILL"


def test_abrupt_exit_is_process_crashed() -> None:
    with pytest.raises(ExceptionGroup) as ei:
        csp.Par(exit_abruptly()).run()
    (exc,) = all_exceptions(ei.value)
    assert isinstance(exc, csp.ProcessCrashed)
    assert exc.signal is None
    assert "exit code 3" in str(exc)


def test_rendezvous_between_children(start_method: str) -> None:
    ch = csp.Channel()
    assert csp.Par(producer(ch.writer(), 200), consumer(ch.reader())).run() == [
        "produced",
        sum(range(200)),
    ]


def test_buffered_between_children() -> None:
    ch = csp.Channel(8)
    assert csp.Par(producer(ch.writer(), 500), consumer(ch.reader())).run()[1] == sum(range(500))


def test_parent_thread_and_child_share_a_channel() -> None:
    ch = csp.Channel()
    assert csp.Par(producer(ch.writer(), 100), thread_consumer(ch.reader())).run() == [
        "produced",
        sum(range(100)),
    ]


def test_parent_main_thread_talks_to_child() -> None:
    a, b = csp.Channel(), csp.Channel(2)
    h = csp.Par(echo(a.reader(), b.writer())).start()
    w = a.writer()
    for i in range(20):
        w.write(i)
        assert b.read(timeout=10) == i
    w.retire()
    assert h.join(timeout=20) == [None]


def test_buffered_values_move_with_the_channel() -> None:
    ch = csp.Channel(3)
    w = ch.writer()
    ch.write(1)
    ch.write(2)
    assert csp.Par(consumer(ch.reader()), producer(w, 0)).run() == [3, "produced"]


def test_timeout_in_child() -> None:
    ch = csp.Channel()
    assert csp.Par(read_with_timeout(ch, 0.05)).run() == ["timeout"]
    assert ch.stats().readers_waiting == 0


def test_timeout_in_parent_on_shared_channel() -> None:
    ch = csp.Channel()
    csp.Par(returns_channel(ch)).run()  # moved to shared memory
    with pytest.raises(TimeoutError):
        ch.write(1, timeout=0.05)
    with pytest.raises(TimeoutError):
        ch.read(timeout=0.05)
    with pytest.raises(csp.WouldBlock):
        ch.write_nowait(1)
    assert ch.stats().writers_waiting == 0


def test_channel_identity_survives_the_round_trip() -> None:
    ch = csp.Channel(name="same")
    (back,) = csp.Par(returns_channel(ch)).run()
    assert back is ch


def test_poison_from_parent_wakes_child() -> None:
    never = csp.Channel()
    h = csp.Par(blocked_reader(never.reader())).start()
    never.poison()
    assert h.join(timeout=20) == [None]  # ended by poison: cleanly


def test_sigkill_mid_rendezvous_crashes_and_wakes_peers() -> None:
    pids, never = csp.Channel(), csp.Channel()
    h = csp.Par(report_then_block(pids.writer(), never.reader()), blocked_reader(never.reader()))
    handle = h.start()
    pid = pids.read(timeout=20)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(ExceptionGroup) as ei:
        handle.join(timeout=20)
    (exc,) = all_exceptions(ei.value)
    assert isinstance(exc, csp.ProcessCrashed)
    assert exc.signal == signal.SIGKILL
    assert exc.process == "report_then_block"
    assert never.stats().poisoned


def test_peer_wakes_when_a_process_dies_holding_the_lock() -> None:
    ch, started = csp.Channel(), csp.Channel()
    handle = csp.Par(die_holding_lock(ch, started.writer()), blocked_reader(ch.reader())).start()
    started.read(timeout=20)
    with pytest.raises(ExceptionGroup) as ei:
        handle.join(timeout=20)
    (exc,) = all_exceptions(ei.value)
    assert isinstance(exc, csp.ProcessCrashed)
    assert "exit code 0" in str(exc)
    with pytest.raises(csp.ChannelPoisoned):
        ch.read(timeout=5)


@csp.process(backend="os")
def die_holding_lock_of_received(box: csp.Reader) -> None:
    ch = box.read()
    ch._shm.hold_lock_for_test()
    os._exit(0)


def test_robust_lock_recovery_alone_wakes_the_peer() -> None:
    # The dying process got the channel as a message, not as an argument: the parent does not
    # poison it, so the peer must notice the dead lock owner by itself (robust mutex).
    ch, box = csp.Channel(), csp.Channel()
    handle = csp.Par(die_holding_lock_of_received(box.reader()), blocked_reader(ch.reader()))
    h = handle.start()
    box.write(ch, timeout=20)
    with pytest.raises(ExceptionGroup) as ei:
        h.join(timeout=20)
    (exc,) = all_exceptions(ei.value)
    assert isinstance(exc, csp.ProcessCrashed)
    assert exc.process == "die_holding_lock_of_received"
    assert ch.stats().poisoned


def test_unpicklable_value_is_a_type_error_and_nothing_is_sent() -> None:
    ch = csp.Channel(1)
    h = csp.Par(consumer(ch.reader())).start()
    w = ch.writer()
    with pytest.raises(TypeError, match="cannot be pickled"):
        w.write(threading.Lock())
    w.write(5)
    w.retire()
    assert h.join(timeout=20) == [5]


def test_64_mib_bytes_arrive_intact() -> None:
    data = os.urandom(64 << 20)
    ch = csp.Channel()
    h = csp.Par(digest(ch.reader())).start()
    ch.write(data, timeout=30)
    assert h.join(timeout=30) == [(len(data), "bytes", hashlib.sha256(data).hexdigest())]


def test_retire_in_parent_is_end_of_stream_in_child() -> None:
    ch = csp.Channel()
    w = ch.writer()
    h = csp.Par(consumer(ch.reader())).start()
    for i in range(5):
        w.write(i, timeout=10)
    w.retire()
    assert h.join(timeout=20) == [10]
    assert ch.stats().retired


def test_segment_is_private_and_not_in_dev_shm() -> None:
    ch = csp.Channel()
    csp.Par(returns_channel(ch)).run()
    fd = ch._shm.native.fd
    link = os.readlink(f"/proc/self/fd/{fd}")
    assert link.startswith("/memfd:ferrocsp-")
    assert link.endswith(" (deleted)")  # no name in any file system, /dev/shm included
    assert os.stat(f"/proc/self/fd/{fd}").st_mode & 0o777 == 0o600


@csp.process
def plain_producer(out: csp.Writer, n: int) -> None:
    with out:
        for i in range(n):
            out.write(i)


@csp.process
def plain_consumer(inp: csp.Reader) -> tuple[int, int]:
    return os.getpid(), sum(inp)


def test_nested_par_multiplexes_greenlets_inside_os_processes() -> None:
    # DESIGN's "coroutines inside OS processes": two OS processes, each running a greenlet
    # network on its own scheduler.
    a, b = csp.Channel(), csp.Channel()
    res = csp.Par(
        csp.Par(plain_producer(a.writer(), 10), plain_consumer(a.reader()), backend="greenlet"),
        csp.Par(plain_producer(b.writer(), 20), plain_consumer(b.reader()), backend="greenlet"),
        backend="os",
    ).run()
    (_, (pid1, s1)), (_, (pid2, s2)) = res
    assert (s1, s2) == (sum(range(10)), sum(range(20)))
    assert len({pid1, pid2, os.getpid()}) == 3


def test_large_message_falls_back_to_a_copy_when_the_reader_may_not_read_the_writer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A large rendezvous message is read by the reader straight from the writer's memory
    # (process_vm_readv). A reader that may not do that (here: told so by the environment of
    # its process) makes the writer send the bytes through the segment instead.
    data = os.urandom(4 << 20)
    ch = csp.Channel()
    h = csp.Par(digest(ch.reader())).start()
    ch.write(data, timeout=30)  # the parent decides, once, to use the one-copy path
    h.join(timeout=30)
    monkeypatch.setenv("FERROCSP_START_METHOD", "spawn")  # the child gets this environment
    monkeypatch.setenv("FERROCSP_SHM_VM_READV", "0")
    ch2 = csp.Channel()
    h = csp.Par(digest(ch2.reader())).start()
    ch2.write(data, timeout=30)
    assert h.join(timeout=30) == [(len(data), "bytes", hashlib.sha256(data).hexdigest())]


def test_spawn_and_default_backend_os() -> None:
    h = csp.Spawn(csp.Process(plain_add, (20, 22)), backend="os")
    assert h.join(timeout=20) == 42
    csp.set_default_backend("os")
    try:
        (pid,) = csp.Par(csp.Process(os.getpid)).run()
    finally:
        csp.set_default_backend(None)
    assert pid != os.getpid()


def test_a_script_without_a_main_guard_gets_a_clear_error(tmp_path: Path) -> None:
    """DESIGN: starting "os" processes while a child re-imports the main module raises a
    RuntimeError naming the fix, not multiprocessing's bootstrap traceback."""
    script = tmp_path / "noguard.py"
    script.write_text(
        "import ferrocsp as csp\n"
        "@csp.process(backend='os')\n"
        "def hello():\n"
        "    return 42\n"
        "print(csp.Par(hello()).run())\n"
    )
    r = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert r.returncode != 0
    assert 'put the code that starts them under `if __name__ == "__main__":`' in r.stderr
    assert "An attempt has been made to start a new process" not in r.stderr
