"""The compat layer's callable ends (``_native._CallEnd``): calling an end is calling its
ferrocsp end's ``read``/``write`` with the same arguments, on threads and greenlets alike."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import pytest

import ferrocsp
from ferrocsp._native import _CallEnd


@pytest.fixture(params=["parallel", "greenlets"])
def pycsp(request: pytest.FixtureRequest) -> ModuleType:
    return importlib.import_module(f"ferrocsp.compat.pycsp.{request.param}")


def _message(fn: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(TypeError) as info:
        fn(*args, **kwargs)
    return str(info.value)


def test_ends_read_and_write_by_call_in_both_modes(pycsp: ModuleType) -> None:
    got: list[Any] = []

    @pycsp.process
    def source(cout: Any) -> None:
        for v in [1, "two", None, (3,)]:
            cout(v)
        pycsp.retire(cout)

    @pycsp.process
    def sink(cin: Any) -> None:
        while True:
            got.append(cin())

    ch = pycsp.Channel()
    pycsp.Parallel(source(-ch), sink(+ch))
    assert got == [1, "two", None, (3,)]


def test_other_call_shapes_behave_as_the_engine_methods() -> None:
    from ferrocsp.compat.pycsp import Channel

    ch = Channel(buffer=1)
    cin, cout = +ch, -ch
    raw = ferrocsp.Channel(1)
    r, w = raw.reader(), raw.writer()
    # Wrong shapes: the very TypeError (and message) of the engine's read/write.
    assert _message(cin, 1) == _message(r.read, 1)
    assert _message(cout) == _message(w.write)
    assert _message(cout, 1, 2) == _message(w.write, 1, 2)
    assert _message(cin, bogus=1) == _message(r.read, bogus=1)
    # Keywords go through: a timeout on an empty channel, then a timed write and read.
    with pytest.raises(TimeoutError):
        cin(timeout=0.01)
    cout(value=5, timeout=1.0)
    with pytest.raises(TimeoutError):
        cout(6, timeout=0.01)  # the buffer is full
    assert cin(timeout=1.0) == 5
    cout(7)
    assert cin() == 7


def test_a_wrong_call_in_a_process_gets_the_pycsp_note(pycsp: ModuleType) -> None:
    @pycsp.process
    def wrong(cin: Any) -> None:
        cin(1)  # a reader end takes no argument

    ch = pycsp.Channel()
    with pytest.raises(ExceptionGroup) as info:
        pycsp.Parallel(wrong(+ch))
    leaf: BaseException = info.value
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    assert isinstance(leaf, TypeError)
    assert any("a reader end is called with no arguments" in n for n in leaf.__notes__)


def test_call_end_takes_only_engine_ends() -> None:
    with pytest.raises(TypeError, match="needs a ferrocsp Reader or Writer, got int"):
        _CallEnd(3)  # type: ignore[arg-type]
    raw = ferrocsp.Channel(1)
    w, r = _CallEnd(raw.writer()), _CallEnd(raw.reader())
    w("x")
    assert r() == "x"


HAVE_VECTORCALL = 1 << 11  # Py_TPFLAGS_HAVE_VECTORCALL


def test_compat_ends_are_called_by_vectorcall() -> None:
    """Calling an end is the hot path of PyCSP programs: the compat ends are called by
    vectorcall (no argument tuple, no argument parsing), on CPython 3.11 too, where a class
    statement's subclass does not inherit it from ``_CallEnd`` by itself."""
    from ferrocsp._native import _vectorcall
    from ferrocsp.compat.pycsp._channel import ChannelEndRead, ChannelEndWrite

    for cls in (_CallEnd, ChannelEndRead, ChannelEndWrite):
        assert cls.__flags__ & HAVE_VECTORCALL, cls
        assert cls is _CallEnd or _vectorcall(cls)

    class Own(_CallEnd):
        """Defines its own ``__call__``: it must keep it."""

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return "own"

    assert not _vectorcall(Own)
    assert not Own.__flags__ & HAVE_VECTORCALL
    assert Own(ferrocsp.Channel(1).reader())() == "own"
    with pytest.raises(TypeError, match="needs a subclass of _CallEnd, got int"):
        _vectorcall(int)  # type: ignore[arg-type]


def test_tp_call_behaves_as_the_vectorcall() -> None:
    """``tp_call`` (what C code such as ``type.__call__`` or ``PyObject_Call`` uses) and the
    vectorcall entry give the same results and the same errors."""
    raw = ferrocsp.Channel(1)
    r, w = raw.reader(), raw.writer()
    cin, cout = _CallEnd(r), _CallEnd(w)
    call = _CallEnd.__call__  # a slot wrapper: calls tp_call with a tuple and a dict
    call(cout, "a")
    assert call(cin) == "a"
    call(cout, value="b", timeout=1.0)
    assert call(cin, timeout=1.0) == "b"
    assert _message(call, cin, 1) == _message(r.read, 1)
    assert _message(call, cout) == _message(w.write)
    assert _message(call, cout, 1, 2) == _message(w.write, 1, 2)
    assert _message(call, cin, bogus=1) == _message(r.read, bogus=1)
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'end'"):
        _CallEnd()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="takes 1 positional arguments but 2 were given"):
        _CallEnd(r, w)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        _CallEnd(r, bogus=1)  # type: ignore[call-arg]
    cout("c")
    assert _CallEnd(end=r)() == "c"


def test_calls_in_greenlets_behave_as_the_engine_methods(tmp_path: Any) -> None:
    """In a process greenlet, a call takes the scheduler's short path (`plain_op`); what it
    does must still be what ``read``/``write`` do: values, poison and retirement seen while
    blocked or before, a retired end, a loan, a traced run, a buffered channel."""
    green = ferrocsp.process(backend="greenlet")
    got: list[Any] = []

    @green
    def writer(w: ferrocsp.Writer, values: list[Any]) -> None:
        cout = _CallEnd(w)
        for v in values:
            cout(v)

    @green
    def reader(r: ferrocsp.Reader, n: int) -> None:
        cin = _CallEnd(r)
        got.extend(cin() for _ in range(n))

    for capacity in (0, 2):
        got.clear()
        ch = ferrocsp.Channel(capacity)
        values = [*range(50), "x", None]
        ferrocsp.Par(writer(ch.writer(), values), reader(ch.reader(), len(values))).run()
        assert got == values

    # Poisoned while a reader is blocked in a call, and before a writer's call.
    ch = ferrocsp.Channel()
    errors: list[type[BaseException]] = []

    @green
    def blocked_reader(r: ferrocsp.Reader) -> None:
        try:
            _CallEnd(r)()
        except ferrocsp.ChannelPoisoned as e:
            errors.append(type(e))

    @green
    def poisoner() -> None:
        ch.poison()
        try:
            _CallEnd(ch.writer())(1)
        except ferrocsp.ChannelPoisoned as e:
            errors.append(type(e))

    ferrocsp.Par(blocked_reader(ch.reader()), poisoner()).run()
    assert errors == [ferrocsp.ChannelPoisoned, ferrocsp.ChannelPoisoned]

    # A retired end, and the last writer retiring under a blocked reader.
    ch = ferrocsp.Channel()
    w = ch.writer()

    @green
    def retired_calls(r: ferrocsp.Reader) -> None:
        dead = ch.writer()
        dead.retire()
        with pytest.raises(ferrocsp.ChannelRetired):
            _CallEnd(dead)(1)
        with pytest.raises(ferrocsp.ChannelRetired):
            _CallEnd(r)()  # blocks until the last writer end retires

    @green
    def retirer() -> None:
        w.retire()

    ferrocsp.Par(retired_calls(ch.reader()), retirer()).run()

    # A loan written by a call arrives as its buffer; a traced run records the calls.
    ch = ferrocsp.Channel()
    lw = ch.writer()
    loan = lw.loan(64)
    memoryview(loan)[:3] = b"abc"
    got.clear()
    with ferrocsp.trace(tmp_path / "t.jsonl"):
        ferrocsp.Par(writer(lw, [loan, 5]), reader(ch.reader(), 2)).run()
    assert isinstance(got[0], ferrocsp.LoanBuffer)
    assert bytes(memoryview(got[0])[:3]) == b"abc"
    assert got[1] == 5
    events = (tmp_path / "t.jsonl").read_text()
    assert events.count('"ev":"read"') >= 2
    assert events.count('"ev":"write"') >= 2


def test_a_cycle_through_a_call_end_is_collected() -> None:
    """The end is visible to the collector: an end buffered in its own channel is freed."""
    import gc
    import weakref

    class End(_CallEnd):
        pass

    ch = ferrocsp.Channel(1)
    end = End(ch.writer())
    end(end)  # the channel's buffer now holds the end, which holds the channel
    ref = weakref.ref(end)
    del end, ch
    gc.collect()
    assert ref() is None


NESTED_AT_EXIT = """
from ferrocsp.compat.pycsp.greenlets import Channel, Parallel, poison, process, shutdown

@process
def prefix(cin, cout, first):
    t = first
    while True:
        cout(t)
        t = cin()

@process
def delta2(cin, cout1, cout2):
    while True:
        t = cin()
        cout1(t)
        cout2(t)

@process
def successor(cin, cout):
    while True:
        cout(cin() + 1)

@process
def consumer(cin):
    for _ in range(200):
        cin()
    poison(cin)

@process
def network():
    a, b, c, d = Channel("a"), Channel("b"), Channel("c"), Channel("d")
    Parallel(prefix(+c, -a, 0), delta2(+a, -b, -d), successor(+b, -c), consumer(+d))

for _ in range(3):
    Parallel(network())
shutdown()
print("done")
"""


@pytest.mark.timeout(120)
def test_ends_freed_while_the_interpreter_finalizes() -> None:
    """PyCSP's examples/Commstime.py (greenlets): ends of a nested network are still freed,
    by a thread, once the interpreter finalizes, when PyO3 refuses to attach; freeing (and
    calling) an end then must not panic (a panic there aborts the process)."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", NESTED_AT_EXIT],
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("done")
    assert "panicked" not in proc.stderr
