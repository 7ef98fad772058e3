"""ferrocsp.compat.python_csp: python-csp 0.1 programs, in the style of python-csp's
documentation, on threads (``csp.os_thread``) and OS processes (``csp.os_process``)."""

from __future__ import annotations

import importlib
import io
import os
import subprocess
import sys
import time
from typing import Any

import pytest

import ferrocsp
from ferrocsp.compat.python_csp.csp import builtins, guards, os_process, os_thread
from ferrocsp.compat.python_csp.csp import csp as cspmod
from ferrocsp.compat.python_csp.csp.builtins import _printer as _printer_body

T = os_thread


@os_process.process
def proc_square(cin: Any, cout: Any, n: int) -> None:
    for _ in range(n):
        x = cin.read()
        cout.write(x * x)


@os_thread.process
def thread_feed(cout: Any, values: list[int]) -> None:
    for v in values:
        cout.write(v)


@os_thread.process
def thread_collect(cin: Any, n: int, out: list[Any]) -> None:
    for _ in range(n):
        out.append(cin.read())


def test_channel_read_write_par_start() -> None:
    c = T.Channel()
    out: list[int] = []
    T.Par(thread_feed(c, [1, 2, 3]), thread_collect(c, 3, out)).start()
    assert out == [1, 2, 3]
    assert T.ChannelPoison is ferrocsp.ChannelPoisoned


def test_parallel_and_sequence_operators() -> None:
    log: list[int] = []

    @T.process
    def note(n: int) -> None:
        log.append(n)

    note(1) > note(2) > note(3)  # noqa: B015 - python-csp's sequence operator
    assert log == [1, 2, 3]  # the middle process runs once
    log.clear()
    note(1) // (note(2), note(3))
    assert sorted(log) == [1, 2, 3]
    log.clear()
    note(7) * 3
    assert log == [7, 7, 7]


def test_forever_server_and_poison_spreads() -> None:
    @T.forever
    def counter(cout: Any) -> Any:
        n = 0
        while True:
            cout.write(n)
            n += 1
            yield

    @T.process
    def take(cin: Any, n: int, out: list[int]) -> None:
        for _ in range(n):
            out.append(cin.read())
        cin.poison()

    c = T.Channel()
    out: list[int] = []
    T.Par(counter(c), take(c, 4, out)).start()  # ends: poison stops the server
    assert out == [0, 1, 2, 3]


def test_alt_select_pri_fair_and_skip() -> None:
    @T.process
    def chooser(a: Any, b: Any, out: list[Any]) -> None:
        alt = T.Alt(a, b)
        out.extend(alt.select() for _ in range(2))
        out.append(alt.pri_select())
        out.append(alt.fair_select())
        out.append(T.Alt(T.Skip()).select())

    a, b = T.Channel(), T.Channel()
    out: list[Any] = []
    T.Par(thread_feed(a, [1, 2]), thread_feed(b, [10, 20]), chooser(a, b, out)).start()
    assert sorted(out[:4]) == [1, 2, 10, 20]
    assert out[4] == "Skip"


def test_choice_operator_and_alt_repetition() -> None:
    @T.process
    def chooser(a: Any, b: Any, out: list[Any]) -> None:
        out.append(a | b)
        out.extend(T.Alt(a, b) * 3)

    a, b = T.Channel(), T.Channel()
    out: list[Any] = []
    T.Par(thread_feed(a, [1, 2]), thread_feed(b, [3, 4]), chooser(a, b, out)).start()
    assert sorted(out) == [1, 2, 3, 4]


def test_alt_poison_removes_the_guard() -> None:
    @T.process
    def chooser(a: Any, out: list[Any]) -> None:
        alt = T.Alt(a)
        out.append(alt.select())
        alt.poison()
        out.append(len(alt.guards))
        try:
            alt.select()
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            out.append(type(exc).__name__)

    @T.process
    def feeder(a: Any) -> None:
        a.write(5)
        a.write(6)  # poisoned before anyone reads: ends by ChannelPoison

    a = T.Channel()
    out: list[Any] = []
    T.Par(feeder(a), chooser(a, out)).start()
    assert out == [5, 0, "NoGuardInAlt"]


def test_timer_guard_waits_without_polling() -> None:
    t = guards.Timer()
    assert T.Alt(t).select() is None  # no alarm: ready at once
    t.set_alarm(0.05)
    t0 = time.monotonic()
    assert T.Alt(T.Channel(), t).select() is None
    assert time.monotonic() - t0 >= 0.04
    assert guards.TimerGuard is guards.Timer
    with pytest.raises(ValueError, match=r"csp\.Timer\.set_alarm: timeout must be >= 0"):
        t.set_alarm(-1)


def test_misuse_names_the_api() -> None:
    with pytest.raises(TypeError, match=r"csp\.Alt: guards are Channels"):
        T.Alt(42)
    with pytest.raises(TypeError, match=r"csp\.Par: expected processes"):
        T.Par(lambda: None)
    with pytest.raises(TypeError, match=r"csp\.CSPProcess: p \* n needs an int"):
        T.Skip() * 0
    with pytest.raises(TypeError, match=r"csp\.builtins\.Id: expected a csp Channel"):
        builtins.Id(1, 2)


def test_failure_poisons_peers_and_is_reported() -> None:
    @T.process
    def bad(c: Any) -> None:
        raise ValueError("boom")

    @T.process
    def waiting(c: Any) -> None:
        c.read()

    c = T.Channel()
    with pytest.raises(ExceptionGroup) as info:
        T.Par(bad(c), waiting(c)).start()
    assert info.group_contains(ValueError, match="boom")


def test_builtins_pipeline() -> None:
    a, b, c, d = (T.Channel() for _ in range(4))
    out: list[Any] = []

    @T.process
    def take(cin: Any, n: int) -> None:
        for _ in range(n):
            out.append(cin.read())
        cin.poison()

    T.Par(
        builtins.Generate(a),
        builtins.Succ(a, b),
        builtins.Mult(b, c, 10),
        builtins.Sign(c, d, "v="),
        take(d, 3),
    ).start()
    assert out == ["v=10", "v=20", "v=30"]


@T.process
def take_then_poison(cin: Any, n: int, out: list[Any]) -> None:
    for _ in range(n):
        out.append(cin.read())
    cin.poison()  # a network of servers ends by poison


def test_builtins_binary_operators_and_printer(capsys: pytest.CaptureFixture[str]) -> None:
    x, y, s, shown = T.Channel(), T.Channel(), T.Channel(), T.Channel()
    out: list[Any] = []
    T.Par(
        builtins.Generate(x),
        builtins.Generate(y),
        builtins.Plus(x, y, s),
        builtins.Id(s, shown),
        take_then_poison(shown, 3, out),
    ).start()
    assert out == [0, 2, 4]

    p, q, diff = T.Channel(), T.Channel(), T.Channel()
    got: list[Any] = []
    T.Par(
        builtins.Fibonacci(p),
        builtins.Generate(q),
        builtins.Sub(p, q, diff),
        take_then_poison(diff, 5, got),
    ).start()
    assert got == [1, 0, 0, 0, 1]

    buf = io.StringIO()
    c = T.Channel()

    @T.process
    def feed_then_poison(cout: Any) -> None:
        cout.write("a")
        cout.write(2)
        cout.poison()

    T.Par(feed_then_poison(c), T.CSPServer(_printer_body, c)).start()
    assert capsys.readouterr().out == "a\n2\n"
    T.Par(feed_then_poison(c := T.Channel()), T.CSPServer(_printer_body, c, buf)).start()
    assert buf.getvalue() == "a\n2\n"


def test_csp_context_manager_builds_par_and_seq(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cspmod, "CSPProcess", T.CSPProcess)  # threads: the log is shared
    log: list[Any] = []

    def note(*args: Any) -> None:
        log.append(args)

    p = cspmod.CSP()
    with p.seq():
        p.process(note, 1)
        with p.par():
            p.process(note, 2)
            p.process(note, 3)
        p.process(note, 4)
    p.start()
    assert log[0] == (1,)
    assert sorted(log[1:3]) == [(2,), (3,)]
    assert log[3:] == [(4,)]


def test_processes_as_methods() -> None:
    class Pipe:
        def __init__(self) -> None:
            self.chan = T.Channel()
            self.got: list[Any] = []

        @T.process
        def send(self, msg: Any) -> None:
            self.chan.write(msg)

        @T.process
        def recv(self) -> None:
            self.got.append(self.chan.read())

    f = Pipe()
    T.Par(f.send("hello"), f.recv()).start()
    assert f.got == ["hello"]


def test_os_process_backend_runs_in_another_process() -> None:
    a, b = os_process.Channel(), os_process.Channel()
    out: list[int] = []
    os_process.Par(thread_feed(a, [2, 3]), proc_square(a, b, 2), thread_collect(b, 2, out)).start()
    assert out == [4, 9]


@pytest.mark.parametrize(
    ("value", "impl"), [("THREADS", "os_thread"), ("", "os_process"), ("PROCESSES", "os_process")]
)
def test_csp_environment_variable_chooses_the_backend(value: str, impl: str) -> None:
    env = dict(os.environ, CSP=value)
    if not value:
        env.pop("CSP")
    code = (
        "from ferrocsp.compat.python_csp.csp.csp import *; "
        "print(CSP_IMPLEMENTATION, CSPProcess.backend)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert out.stdout.split() == [impl, "thread" if impl == "os_thread" else "os"]


def test_package_layout_mirrors_python_csp() -> None:
    pkg = importlib.import_module("ferrocsp.compat.python_csp.csp")
    assert pkg.__all__ == []
    for name in (
        "process",
        "forever",
        "CSPProcess",
        "CSPServer",
        "Channel",
        "Par",
        "Seq",
        "Alt",
        "Skip",
        "set_debug",
        "CSP_IMPLEMENTATION",
    ):
        assert name in cspmod.__all__, name
