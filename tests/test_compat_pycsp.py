"""ferrocsp.compat.pycsp: PyCSP 0.9 programs, in the style of PyCSP's documentation, on both
implementations (``pycsp.parallel`` -> threads, ``pycsp.greenlets`` -> greenlets)."""

from __future__ import annotations

import importlib
import pickle
import subprocess
import sys
import time
from types import ModuleType
from typing import Any

import pytest

import ferrocsp
import ferrocsp.compat
import ferrocsp.compat.pycsp as pycsp_pkg
from ferrocsp.compat.pycsp import current, parallel
from ferrocsp.compat.pycsp.common import plugNplay, toolkit

MODULES = ["parallel", "greenlets"]


@pytest.fixture(params=MODULES)
def pycsp(request: pytest.FixtureRequest) -> ModuleType:
    return importlib.import_module(f"ferrocsp.compat.pycsp.{request.param}")


# Module-level processes (an @multiprocess function must be importable by name).
@parallel.multiprocess
def mp_square(cin: Any, cout: Any) -> None:
    while True:
        x = cin()
        cout(x * x)


@parallel.process
def mp_feed(cout: Any, n: int) -> None:
    for i in range(n):
        cout(i)
    parallel.retire(cout)


@parallel.process
def mp_collect(cin: Any) -> list[int]:
    got: list[int] = []
    try:
        while True:
            got.append(cin())
    except parallel.ChannelRetireException:
        return got


def test_package_is_parallel_and_exports_pycsp_names() -> None:
    assert pycsp_pkg.version == (0, 9, 2, "parallel")
    for name in (
        "Channel",
        "AltSelect",
        "FairSelect",
        "PriSelect",
        "InputGuard",
        "Alternation",
        "shutdown",
        "current_process_id",
        "multiprocess",
        "io",
        "Configuration",
    ):
        assert name in pycsp_pkg.__all__, name
        assert hasattr(pycsp_pkg, name), name
    assert pycsp_pkg.Channel is parallel.Channel


def test_exceptions_are_ferrocsp_errors(pycsp: ModuleType) -> None:
    assert pycsp.ChannelPoisonException is ferrocsp.ChannelPoisoned
    assert pycsp.ChannelRetireException is ferrocsp.ChannelRetired


def test_producer_consumer_with_retire(pycsp: ModuleType) -> None:
    @pycsp.process
    def producer(cout: Any, n: int) -> None:
        for i in range(n):
            cout(i)
        pycsp.retire(cout)

    @pycsp.process
    def consumer(cin: Any) -> list[int]:
        got: list[int] = []
        try:
            while True:
                got.append(cin())
        except pycsp.ChannelRetireException:
            return got

    c = pycsp.Channel("c")
    assert pycsp.Parallel(producer(-c, 5), consumer(+c)) == [None, list(range(5))]


def test_retire_happens_when_all_writers_left(pycsp: ModuleType) -> None:
    @pycsp.process
    def producer(cout: Any, base: int) -> None:
        for i in range(3):
            cout(base + i)
        pycsp.retire(cout)

    @pycsp.process
    def consumer(cin: Any) -> list[int]:
        got = []
        while True:
            got.append(cin())  # ChannelRetireException ends the process, result None
            if len(got) == 6:
                return sorted(got)

    c = pycsp.Channel()
    out = pycsp.Parallel(producer(c.writer(), 0), producer(c.writer(), 10), consumer(c.reader()))
    assert out[2] == [0, 1, 2, 10, 11, 12]


def test_poison_spreads_through_process_arguments(pycsp: ModuleType) -> None:
    @pycsp.process
    def source(cout: Any) -> None:
        i = 0
        while True:
            cout(i)
            i += 1

    @pycsp.process
    def relay(cin: Any, cout: Any) -> str:
        while True:
            cout(cin())

    @pycsp.process
    def sink(cin: Any, n: int) -> int:
        for _ in range(n):
            cin()
        pycsp.poison(cin)
        return n

    a, b = pycsp.Channel(), pycsp.Channel()
    assert pycsp.Parallel(source(-a), relay(+a, -b), sink(+b, 10)) == [None, None, 10]


def test_buffered_channel_and_misuse(pycsp: ModuleType) -> None:
    c = pycsp.Channel("buf", buffer=3)
    w, r = c.writer(), c.reader()
    for i in range(3):
        w(i)  # does not block: three slots
    assert [r(), r(), r()] == [0, 1, 2]
    with pytest.raises(ValueError, match=r"pycsp\.Channel: buffer must be a non-negative int"):
        pycsp.Channel(buffer=-1)
    with pytest.raises(TypeError, match=r"pycsp\.Channel: buffer"):
        pycsp.Channel(buffer="2")
    with pytest.raises(TypeError, match=r"pycsp\.InputGuard: needs a reader end"):
        pycsp.InputGuard(w)
    with pytest.raises(TypeError, match=r"pycsp\.OutputGuard: needs a writer end"):
        pycsp.OutputGuard(r, 1)
    with pytest.raises(ValueError, match=r"pycsp\.TimeoutGuard: seconds must be >= 0"):
        pycsp.TimeoutGuard(seconds=-1)
    with pytest.raises(TypeError, match=r"pycsp\.Parallel: .*forget the call"):
        pycsp.Parallel(test_buffered_channel_and_misuse)
    with pytest.raises(TypeError, match=r"pycsp\.retire: expected channel ends"):
        pycsp.retire(42)


def test_ends_retire_once_and_forgotten_ends_do_not_retire(pycsp: ModuleType) -> None:
    c = pycsp.Channel("keep")
    w = c.writer()
    c.writer()  # forgotten: PyCSP keeps it joined, so the channel stays open
    w.retire()
    w.retire()  # a second retire is ignored, as in PyCSP
    assert not c._ch.stats().retired
    with pytest.raises(pycsp.ChannelRetireException):
        w(1)


def test_replication_gives_each_copy_new_ends(pycsp: ModuleType) -> None:
    @pycsp.process
    def reader(cin: Any) -> Any:
        return cin()

    @pycsp.process
    def writer(cout: Any, n: int) -> None:
        for i in range(n):
            cout(i)

    c = pycsp.Channel()
    readers = 4 * reader(c.reader())
    assert len(readers) == 4
    assert len({id(p.args[0]) for p in readers}) == 4
    out = pycsp.Parallel(writer(c.writer(), 4), readers)
    assert sorted(out[1:]) == [0, 1, 2, 3]
    assert len(c * 3) == 3
    assert all(isinstance(x, pycsp.Channel) for x in 3 * c)


def test_sequence_spawn_and_current_process_id(pycsp: ModuleType) -> None:
    @pycsp.process
    def who() -> str:
        return str(pycsp.current_process_id())

    ids = pycsp.Sequence(who(), who())
    assert ids[0] != ids[1]
    assert "__main__" not in ids
    assert pycsp.current_process_id() == "__main__"

    @pycsp.process
    def child(cout: Any) -> None:
        cout("spawned")

    c = pycsp.Channel()
    cin = c.reader()
    pycsp.Spawn(child(c.writer()))
    assert cin() == "spawned"
    pycsp.shutdown()


def test_altselect_input_output_skip_timeout(pycsp: ModuleType) -> None:
    @pycsp.process
    def writer(cout: Any, v: Any) -> None:
        cout(v)

    @pycsp.process
    def reader(cin: Any) -> Any:
        return cin()

    @pycsp.process
    def selector(cin1: Any, cin2: Any, cout: Any) -> list[Any]:
        got = []
        for _ in range(2):
            g, msg = pycsp.AltSelect(pycsp.InputGuard(cin1), pycsp.InputGuard(cin2))
            assert g in (cin1, cin2)
            got.append(msg)
        g, msg = pycsp.PriSelect(pycsp.OutputGuard(cout, msg="out"))
        assert g is cout
        assert msg is None
        return sorted(got)

    a, b, c = pycsp.Channel(), pycsp.Channel(), pycsp.Channel()
    out = pycsp.Parallel(writer(-a, 1), writer(-b, 2), selector(+a, +b, -c), reader(+c))
    assert out[2:] == [[1, 2], "out"]

    skip = pycsp.SkipGuard()
    assert pycsp.PriSelect(pycsp.InputGuard(pycsp.Channel().reader()), skip) == (skip, None)
    t0 = time.monotonic()
    tg = pycsp.TimeoutGuard(seconds=0.05)
    assert pycsp.AltSelect(pycsp.InputGuard(pycsp.Channel().reader()), tg) == (tg, None)
    assert time.monotonic() - t0 >= 0.04


def test_choice_actions_callable_and_string(pycsp: ModuleType) -> None:
    seen: list[Any] = []

    @pycsp.choice
    def record(tag: str, channel_input: Any = None) -> None:
        seen.append((tag, channel_input))

    @pycsp.process
    def writer(cout: Any) -> None:
        cout("x")

    @pycsp.process
    def chooser(cin: Any) -> None:
        pycsp.AltSelect(pycsp.InputGuard(cin, action=record("in")))
        pycsp.PriSelect(pycsp.SkipGuard(action=lambda: seen.append("skip-callable")))
        pycsp.PriSelect(pycsp.SkipGuard(action="seen.append(('string', len(seen)))"))

    c = pycsp.Channel()
    pycsp.Parallel(writer(-c), chooser(+c))
    assert seen == [("in", "x"), "skip-callable", ("string", 2)]
    with pytest.raises(TypeError, match=r"pycsp\.choice: .*not instantiated"):
        pycsp.PriSelect(pycsp.SkipGuard(action=record))


def test_alternation_dict_form_execute_and_select(pycsp: ModuleType) -> None:
    @pycsp.process
    def feed(cout: Any, n: int) -> None:
        for i in range(n):
            cout(i)

    @pycsp.process
    def alt(cin1: Any, cin2: Any, log: list[Any]) -> list[Any]:
        a = pycsp.Alternation(
            [
                {
                    cin1: "log.append(('c1', channel_input))",
                    cin2: lambda channel_input: log.append(("c2", channel_input)),
                }
            ]
        )
        for _ in range(3):
            a.execute()
        g, msg = pycsp.Alternation([{cin1: None, cin2: None}]).select()
        return [g is cin1, msg]

    c1, c2 = pycsp.Channel(), pycsp.Channel()
    log: list[Any] = []
    out = pycsp.Parallel(feed(-c1, 2), feed(-c2, 2), alt(+c1, +c2, log))
    last_c1, last = out[2]
    assert sorted([*log, ("c1" if last_c1 else "c2", last)]) == [
        ("c1", 0),
        ("c1", 1),
        ("c2", 0),
        ("c2", 1),
    ]


def test_alternation_raises_retire_when_a_guard_is_retired(pycsp: ModuleType) -> None:
    a, b = pycsp.Channel(), pycsp.Channel()
    wa = a.writer()
    ra, rb = a.reader(), b.reader()
    b.writer()
    wa.retire()
    with pytest.raises(pycsp.ChannelRetireException):
        pycsp.AltSelect(pycsp.InputGuard(ra), pycsp.InputGuard(rb))


def test_fairselect_serves_every_channel(pycsp: ModuleType) -> None:
    @pycsp.process
    def feed(cout: Any, tag: str, n: int) -> None:
        for _ in range(n):
            cout(tag)

    @pycsp.process
    def fair(c1: Any, c2: Any, n: int) -> list[str]:
        return [pycsp.FairSelect(pycsp.InputGuard(c1), pycsp.InputGuard(c2))[1] for _ in range(n)]

    a, b = pycsp.Channel(), pycsp.Channel()
    out = pycsp.Parallel(feed(-a, "a", 10), feed(-b, "b", 10), fair(+a, +b, 20))
    assert sorted(out[2]) == ["a"] * 10 + ["b"] * 10


def test_io_decorator_runs_blocking_calls(pycsp: ModuleType) -> None:
    @pycsp.io
    def slow(x: int) -> int:
        time.sleep(0.01)
        return x * 2

    @pycsp.process
    def p(x: int) -> int:
        return int(slow(x))

    assert pycsp.Parallel([p(i) for i in range(4)]) == [0, 2, 4, 6]


def test_failure_is_reported_and_peers_stop(pycsp: ModuleType) -> None:
    @pycsp.process
    def bad(cout: Any) -> None:
        raise ValueError("boom")

    @pycsp.process
    def waiting(cin: Any) -> None:
        cin()

    c = pycsp.Channel()
    with pytest.raises(ExceptionGroup) as info:
        pycsp.Parallel(bad(-c), waiting(+c))
    assert info.group_contains(ValueError, match="boom")


def test_unsupported_network_processes_name_the_api() -> None:
    with pytest.raises(parallel.InfoException, match=r"pycsp\.sshprocess"):
        parallel.sshprocess(lambda: None)
    with pytest.raises(ValueError, match=r"pycsp\.Channel: connect="):
        parallel.Channel(connect=("host", 1))


def test_current_follows_the_last_implementation_imported() -> None:
    importlib.import_module("ferrocsp.compat.pycsp.greenlets")
    importlib.reload(current)  # fresh state, then re-install as an import would
    from ferrocsp.compat.pycsp import greenlets

    current.install(vars(greenlets), greenlets.version)
    assert current.version == (0, 9, 2, "greenlets")
    assert current.Channel is greenlets.Channel
    current.install(vars(parallel), parallel.version)
    assert current.process is parallel.process


def test_plugnplay_fibonacci() -> None:
    P = parallel  # noqa: N806

    @P.process
    def take(cin: Any, n: int) -> list[int]:
        got = [cin() for _ in range(n)]
        P.poison(cin)
        return got

    a, b, c, d, out = (P.Channel() for _ in range(5))
    res = P.Parallel(
        plugNplay.Prefix(+b, -a, prefix=0),
        plugNplay.Prefix(+c, -b, prefix=1),
        plugNplay.Pairs(+d, -c),
        plugNplay.Delta2(+a, -d, -out),
        take(+out, 8),
    )
    assert res[-1] == [0, 1, 1, 2, 3, 5, 8, 13]


def test_toolkit_execute_forwards_stdout(tmp_path: Any) -> None:
    P = parallel  # noqa: N806
    out = P.Channel()

    @P.process
    def gather(cin: Any) -> str:
        lines: list[str] = []
        try:
            while True:
                lines.extend(cin())
        except P.ChannelRetireException:
            return "".join(lines)

    res = P.Parallel(
        toolkit.execute(["printf", "a\\nb\\n"], stdoutChEnd=out.writer()), gather(out.reader())
    )
    assert res[1] == "a\nb\n"
    assert toolkit.which("sh").endswith(b"sh")


def test_multiprocess_runs_in_another_os_process() -> None:
    a, b = parallel.Channel(), parallel.Channel()
    res = parallel.Parallel(mp_feed(-a, 4), mp_square(+a, -b), mp_collect(+b))
    assert res[2] == [0, 1, 4, 9]


def test_ends_pickle_as_the_same_end() -> None:
    c = parallel.Channel("p", buffer=1)
    w = pickle.loads(pickle.dumps(c.writer()))
    w(7)
    assert c.reader()() == 7


def test_alias_makes_old_imports_resolve_to_the_compat_layer() -> None:
    code = (
        "import ferrocsp.compat as c; c.alias('pycsp'); c.alias('csp')\n"
        "import pycsp, pycsp.greenlets, csp.csp, csp.builtins\n"
        "import ferrocsp.compat.pycsp.greenlets as g, ferrocsp.compat.python_csp.csp.csp as m\n"
        "print(pycsp.greenlets is g, csp.csp is m, pycsp.version[3])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert out.stdout.split() == ["True", "True", "parallel"]
    with pytest.raises(ValueError, match=r"ferrocsp\.compat\.alias: unknown name 'foo'"):
        ferrocsp.compat.alias("foo")


def test_calling_an_end_wrongly_in_a_process_says_how_pycsp_ends_are_called(
    pycsp: ModuleType,
) -> None:
    c = pycsp.Channel()

    @pycsp.process
    def confused(cin: Any) -> None:
        cin(5)  # meant to write

    with pytest.raises(ExceptionGroup) as info:
        pycsp.Parallel(confused(+c))
    (exc,) = info.value.exceptions
    assert isinstance(exc, TypeError)
    assert any("value = cin()" in n for n in getattr(exc, "__notes__", []))
