"""The builtin processes (``ferrocsp.builtins``): each alone, in networks, and their shutdown.

Every builtin is checked to end cleanly on poison (from upstream and from downstream) and on
retire (end-of-stream from upstream, readers gone downstream), on every backend that runs
plain functions. Networks are joined with a timeout so a hang fails the test instead of
blocking the run.
"""

from __future__ import annotations

import inspect
import io
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

import ferrocsp as csp
import ferrocsp._backends
import ferrocsp.builtins as bi
from _support import all_exceptions, notes, wait_until

pytestmark = pytest.mark.timeout(60)

BACKENDS = [b for b in ferrocsp._backends.AVAILABLE if b != "asyncio"]

#: How long a network may run before the test declares it hung.
JOIN = 20.0


def run(*procs: Any, backend: str) -> list[Any]:
    """Runs ``procs`` in a Par; fails (after poisoning the network) if it does not end."""
    h = csp.Par(*procs, backend=backend).start()
    try:
        return h.join(timeout=JOIN)
    except TimeoutError:
        h.poison()
        h.join(timeout=JOIN)
        raise AssertionError("network did not end") from None


# --------------------------------------------------------------------------- test processes

# Module-level functions rather than lambdas: the "os" backend pickles a process's arguments
# by reference into the child process.


def _mod3(x: int) -> bool:
    return x % 3 == 0


def _inverse(x: float) -> float:
    return 1 / x


def _square(x: int) -> int:
    return x * x


def _odd(x: int) -> bool:
    return x % 2 == 1


def _even(x: int) -> bool:
    return x % 2 == 0


def _triple(x: int) -> int:
    return 3 * x


def in_process_only(backend: str, why: str) -> None:
    """Skips a test that cannot hold on the "os" backend, saying why."""
    if backend == "os":
        pytest.skip(why)


@csp.process
def feed(cout: csp.Writer, values: list[Any]) -> None:
    """Writes ``values``, then retires its end (end-of-stream)."""
    with cout:
        for v in values:
            cout.write(v)


@csp.process
def feed_forever(cout: csp.Writer) -> None:
    """Writes 1, 2, 3, ... until poisoned or until the readers retire."""
    n = 1
    while True:
        cout.write(n)
        n += 1


@csp.process
def feed_then_poison(cout: csp.Writer, n: int) -> None:
    """Writes 1 .. n, then poisons the channel."""
    for i in range(1, n + 1):
        cout.write(i)
    cout.poison()


@csp.process
def collect(cin: csp.Reader) -> list[Any]:
    """Reads until end-of-stream; returns the values."""
    return list(cin)


@csp.process
def take(cin: csp.Reader, n: int) -> list[Any]:
    """Reads ``n`` values, then retires its end ("nobody listens any more")."""
    values = [cin.read() for _ in range(n)]
    cin.retire()
    return values


@csp.process
def take_then_poison(cin: csp.Reader | csp.Channel, n: int) -> list[Any]:
    """Reads ``n`` values, then poisons the channel."""
    out = [cin.read() for _ in range(n)]
    cin.poison()
    return out


# --------------------------------------------------------------------------- the module


def test_exports_are_documented_process_factories() -> None:
    names = [n for n in bi.__all__ if n not in ("In", "Out")]
    assert sorted(names) == sorted(
        [
            *("Id", "Succ", "Prefix", "Delta", "Tail", "Plus", "Mult", "Generate", "Count"),
            *("Mux", "Demux", "Merge", "Zip", "Map", "Filter", "Printer", "Sink", "Clock"),
        ]
    )
    for name in names:
        factory = getattr(bi, name)
        doc = inspect.getdoc(factory) or ""
        assert len(doc) > 80, name
        assert "poison" in doc.lower(), f"{name}: docstring does not say how it ends"
        assert repr(factory).startswith("<process factory"), name


def test_not_in_top_level_namespace() -> None:
    for name in ("Id", "Delta", "Merge", "Generate", "Printer"):
        assert not hasattr(csp, name)


@pytest.mark.parametrize("name", [n for n in bi.__all__ if n not in ("In", "Out")])
def test_argument_order_inputs_outputs_parameters(name: str) -> None:
    params = list(inspect.signature(getattr(bi, name)).parameters)
    rank = [0 if p.startswith("cin") else 1 if p.startswith("cout") else 2 for p in params]
    assert rank == sorted(rank), f"{name}{params}: inputs first, then outputs, then parameters"


def test_process_names() -> None:
    a, b = csp.Channel(), csp.Channel()
    assert bi.Id(a, b).name == "Id"
    assert bi.Delta(a, b, parallel=True).name == "Delta"


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda a, b: bi.Id(a.writer(), b.writer()), TypeError, "is an input"),
        (lambda a, b: bi.Id(a.reader(), b.reader()), TypeError, "is an output"),
        (lambda a, b: bi.Id(a), TypeError, "missing a required argument"),
        (lambda a, b: bi.Id(a, b, 3), TypeError, "too many"),
        (lambda a, b: bi.Succ(1, b), TypeError, "must be a Reader or a Channel, not int"),
        (lambda a, b: bi.Map(a, b, 3), TypeError, "'fn' must be callable"),
        (lambda a, b: bi.Filter(a, b, None), TypeError, "'pred' must be callable"),
        (lambda a, b: bi.Delta(a), ValueError, "'couts' must not be empty"),
        (lambda a, b: bi.Delta(a, b, a.reader()), TypeError, r"couts'\[1\] is an output"),
        (lambda a, b: bi.Merge([], b), ValueError, "must not be empty"),
        (lambda a, b: bi.Merge(iter([a]), b), TypeError, "list or tuple"),
        (lambda a, b: bi.Mux([a, b.writer()], a), TypeError, r"cins'\[1\] is an input"),
        (lambda a, b: bi.Demux(a, b), TypeError, "list or tuple"),
        (lambda a, b: bi.Zip([a], 5), TypeError, "must be a Writer or a Channel"),
        (lambda a, b: bi.Plus(a, b.writer(), b), TypeError, "'cin2' is an input"),
        (lambda a, b: bi.Clock(a, 0), ValueError, "> 0"),
        (lambda a, b: bi.Clock(a, -1.0), ValueError, "> 0"),
        (lambda a, b: bi.Clock(a, math.inf), ValueError, "finite"),
        (lambda a, b: bi.Clock(a, "1"), TypeError, "number of seconds"),
        (lambda a, b: bi.Count(a, step=0), ValueError, "must not be zero"),
        (lambda a, b: bi.Generate(a.reader()), TypeError, "is an output"),
        (lambda a, b: bi.Printer(a, prefix=3), TypeError, "must be a str"),
        (lambda a, b: bi.Printer(a, file=3), TypeError, "text file"),
        (lambda a, b: bi.Sink(a.writer()), TypeError, "is an input"),
    ],
)
def test_bad_arguments_raise_at_the_call(
    make: Callable[[csp.Channel, csp.Channel], Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        make(csp.Channel(), csp.Channel())


# --------------------------------------------------------------------------- each alone


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def pipe(builtin: Callable[..., csp.Process[Any]], values: list[Any], *params: Any,
         backend: str, capacity: int = 0) -> list[Any]:  # fmt: skip
    """feed(values) -> builtin(cin, cout, *params) -> collect: the values collected."""
    a, b = csp.Channel(capacity), csp.Channel(capacity)
    results = run(
        feed(a.writer(), values),
        builtin(a.reader(), b.writer(), *params),
        collect(b.reader()),
        backend=backend,
    )
    assert results[1] is None  # ended by retire
    assert a.stats().retired
    assert b.stats().retired
    collected: list[Any] = results[2]
    return collected


@pytest.mark.parametrize("capacity", [0, 3])
def test_id(backend: str, capacity: int) -> None:
    assert pipe(bi.Id, [1, "x", None, 4], backend=backend, capacity=capacity) == [1, "x", None, 4]


def test_id_passes_objects_by_reference(backend: str) -> None:
    in_process_only(backend, "values crossing OS processes are copies (DESIGN 2, Channels)")
    obj = object()
    assert pipe(bi.Id, [obj], backend=backend)[0] is obj


def test_succ(backend: str) -> None:
    assert pipe(bi.Succ, [0, 5, -1], backend=backend) == [1, 6, 0]


def test_prefix(backend: str) -> None:
    assert pipe(bi.Prefix, [1, 2], "first", backend=backend) == ["first", 1, 2]
    assert pipe(bi.Prefix, [], 0, backend=backend) == [0]


def test_tail(backend: str) -> None:
    assert pipe(bi.Tail, [1, 2, 3], backend=backend) == [2, 3]
    assert pipe(bi.Tail, [1], backend=backend) == []
    assert pipe(bi.Tail, [], backend=backend) == []


def test_mult_is_a_scaled_identity(backend: str) -> None:
    assert pipe(bi.Mult, [1, 2, 3], 10, backend=backend) == [10, 20, 30]
    assert pipe(bi.Mult, ["ab"], 2, backend=backend) == ["abab"]


def test_map(backend: str) -> None:
    assert pipe(bi.Map, [1, 2, 3], str, backend=backend) == ["1", "2", "3"]


def test_filter(backend: str) -> None:
    assert pipe(bi.Filter, list(range(10)), _mod3, backend=backend) == [0, 3, 6, 9]


def test_generate_counts_up_forever(backend: str) -> None:
    a = csp.Channel()
    results = run(bi.Generate(a.writer()), take(a.reader(), 5), backend=backend)
    assert results == [None, [0, 1, 2, 3, 4]]
    results = run(
        bi.Generate(a := csp.Channel(), start=10), take_then_poison(a, 3), backend=backend
    )
    assert results == [None, [10, 11, 12]]


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"stop": 5}, [0, 1, 2, 3, 4]),
        ({"start": 10, "step": -3, "stop": 0}, [10, 7, 4, 1]),
        ({"start": 0, "step": 0.5, "stop": 2}, [0, 0.5, 1.0, 1.5]),
        ({"start": 3, "stop": 3}, []),
        ({"start": 3, "stop": 0}, []),
    ],
)
def test_count_with_stop_ends_the_stream(
    backend: str, kwargs: dict[str, Any], expected: list[Any]
) -> None:
    a = csp.Channel()
    assert run(bi.Count(a.writer(), **kwargs), collect(a.reader()), backend=backend) == [
        None,
        expected,
    ]


def test_count_without_stop(backend: str) -> None:
    a = csp.Channel()
    results = run(bi.Count(a.writer(), 7, 7), take(a.reader(), 4), backend=backend)
    assert results == [None, [7, 14, 21, 28]]


def test_clock_ticks(backend: str) -> None:
    a = csp.Channel()
    period = 0.02
    t0 = time.monotonic()
    results = run(bi.Clock(a.writer(), period), take(a.reader(), 4), backend=backend)
    elapsed = time.monotonic() - t0
    assert results == [None, [0, 1, 2, 3]]
    assert elapsed >= 4 * period * 0.9


def test_clock_does_not_burst_after_a_slow_reader(backend: str) -> None:
    in_process_only(backend, "a local function cannot be pickled into an OS process")
    """A reader that comes late does not get the missed ticks back to back."""
    a = csp.Channel()
    period = 0.02

    @csp.process
    def slow_reader(cin: csp.Reader) -> list[float]:
        cin.read()
        csp.select(csp.Timeout(10 * period))  # miss about ten ticks
        times = []
        for _ in range(5):
            cin.read()
            times.append(time.monotonic())
        cin.retire()
        return times

    _, times = run(bi.Clock(a.writer(), period), slow_reader(a.reader()), backend=backend)
    # At most two ticks come at once (the one waiting, and one at the restart), then one per
    # period: five reads span about three periods; a burst of missed ticks would span ~0.
    assert times[-1] - times[0] >= 1.5 * period


def test_sink_returns_the_count(backend: str) -> None:
    a = csp.Channel()
    assert run(feed(a.writer(), list(range(7))), bi.Sink(a.reader()), backend=backend) == [None, 7]
    assert a.stats().retired


def test_printer(backend: str) -> None:
    in_process_only(backend, "a child OS process prints to its own stdout, not capsys")
    a, out = csp.Channel(), io.StringIO()
    results = run(
        feed(a.writer(), [1, "two", None]),
        bi.Printer(a.reader(), file=out, prefix="> "),
        backend=backend,
    )
    assert results == [None, 3]
    assert out.getvalue() == "> 1\n> two\n> None\n"


def test_printer_default_is_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    a = csp.Channel()
    assert run(feed(a.writer(), ["hello"]), bi.Printer(a.reader()), backend="thread")[1] == 1
    assert capsys.readouterr().out == "hello\n"


@pytest.mark.parametrize("parallel", [False, True])
def test_delta_copies_to_every_output(backend: str, parallel: bool) -> None:
    a = csp.Channel()
    outs = [csp.Channel() for _ in range(3)]
    values = list(range(20))
    results = run(
        feed(a.writer(), values),
        bi.Delta(a.reader(), *(o.writer() for o in outs), parallel=parallel),
        *(collect(o.reader()) for o in outs),
        backend=backend,
    )
    assert results[1] is None
    assert results[2:] == [values, values, values]


def test_delta_one_output_parallel(backend: str) -> None:
    a, b = csp.Channel(), csp.Channel()
    results = run(
        feed(a.writer(), [1, 2]),
        bi.Delta(a.reader(), b.writer(), parallel=True),
        collect(b.reader()),
        backend=backend,
    )
    assert results[2] == [1, 2]


@csp.process
def read_in_order(cins: list[csp.Reader], n: int) -> list[Any]:
    """Reads ``n`` rounds from ``cins`` in the order given, then retires them."""
    out = [[cin.read() for cin in cins] for _ in range(n)]
    for cin in cins:
        cin.retire()
    return out


def test_parallel_delta_serves_readers_in_any_order(backend: str) -> None:
    """Readers that take the outputs in reverse order: fine in parallel, deadlock if not."""
    a, b, c = csp.Channel(), csp.Channel(), csp.Channel()
    results = run(
        feed(a.writer(), [1, 2, 3]),
        bi.Delta(a.reader(), b.writer(), c.writer(), parallel=True),
        read_in_order([c.reader(), b.reader()], 3),
        backend=backend,
    )
    assert results[2] == [[1, 1], [2, 2], [3, 3]]


@pytest.mark.parametrize("parallel", [False, True])
def test_delta_write_order(backend: str, parallel: bool) -> None:
    """Sequential Delta writes ``b`` before ``c``; parallel Delta serves whichever reader
    comes first."""
    a, b, c = csp.Channel(), csp.Channel(), csp.Channel()
    rb, rc = b.reader(), c.reader()
    h = csp.Par(
        feed(a.writer(), [1]),
        bi.Delta(a.reader(), b.writer(), c.writer(), parallel=parallel),
        backend=backend,
    ).start()
    if parallel:
        assert rc.read(timeout=JOIN) == 1  # while nobody reads b
    else:
        with pytest.raises(TimeoutError):
            rc.read(timeout=0.2)  # Delta waits on b first
    assert rb.read(timeout=JOIN) == 1
    if not parallel:
        assert rc.read(timeout=JOIN) == 1
    assert h.join(timeout=JOIN) == [None, None]  # end-of-stream on a
    assert list(rb) == []  # Delta retired its outputs
    assert list(rc) == []


def test_demux_round_robin(backend: str) -> None:
    a = csp.Channel()
    outs = [csp.Channel() for _ in range(3)]
    results = run(
        feed(a.writer(), list(range(8))),
        bi.Demux(a.reader(), [o.writer() for o in outs]),
        *(collect(o.reader()) for o in outs),
        backend=backend,
    )
    assert results[2:] == [[0, 3, 6], [1, 4, 7], [2, 5]]


def test_mux_round_robin(backend: str) -> None:
    ins = [csp.Channel() for _ in range(3)]
    out = csp.Channel()
    results = run(
        *(feed(c.writer(), [f"{i}{k}" for k in range(3)]) for i, c in enumerate(ins)),
        bi.Mux([c.reader() for c in ins], out.writer()),
        collect(out.reader()),
        backend=backend,
    )
    assert results[-1] == ["00", "10", "20", "01", "11", "21", "02", "12", "22"]


def test_merge_takes_everything_and_ends_when_all_inputs_end(backend: str) -> None:
    ins = [csp.Channel() for _ in range(3)]
    out = csp.Channel()
    lengths = [5, 0, 40]
    results = run(
        *(feed(c.writer(), [(i, k) for k in range(lengths[i])]) for i, c in enumerate(ins)),
        bi.Merge([c.reader() for c in ins], out.writer()),
        collect(out.reader()),
        backend=backend,
    )  # fmt: skip
    merged = results[-1]
    assert len(merged) == sum(lengths)
    for i, n in enumerate(lengths):
        assert [k for j, k in merged if j == i] == list(range(n))  # each input's order kept


def test_merge_is_fair(backend: str) -> None:
    """Two inputs that stay ready (buffers filled before the merge starts): the merge takes
    from them in turn."""
    a, b, out = csp.Channel(16), csp.Channel(16), csp.Channel()
    feeders = csp.Par(feed(a.writer(), ["a"] * 200), feed(b.writer(), ["b"] * 200)).start()
    wait_until(lambda: a.stats().buffered == b.stats().buffered == 16, what="buffers full")
    results = run(bi.Merge((a.reader(), b.reader()), out.writer()), collect(out.reader()),
                  backend=backend)  # fmt: skip
    assert feeders.join(timeout=JOIN) == [None, None]
    merged = "".join(results[-1])
    assert merged.count("a") == merged.count("b") == 200
    first = merged[:32]  # both inputs hold at least 16 values each here
    assert first in ("ab" * 16, "ba" * 16), first


def test_zip(backend: str) -> None:
    a, b, out = csp.Channel(), csp.Channel(), csp.Channel()
    results = run(
        feed(a.writer(), [1, 2, 3]),
        feed(b.writer(), ["x", "y", "z"]),
        bi.Zip([a.reader(), b.reader()], out.writer()),
        collect(out.reader()),
        backend=backend,
    )
    assert results[-1] == [(1, "x"), (2, "y"), (3, "z")]


def test_zip_stops_at_the_shortest_input(backend: str) -> None:
    a, b, out = csp.Channel(), csp.Channel(), csp.Channel()
    results = run(
        feed(a.writer(), [1, 2, 3]),
        feed(b.writer(), ["x"]),
        bi.Zip([a.reader(), b.reader()], out.writer()),
        collect(out.reader()),
        backend=backend,
    )
    assert results[-1] == [(1, "x")]


def test_zip_reads_its_inputs_in_parallel(backend: str) -> None:
    """A sequential Delta writes ``b`` first; a Zip over ``[c, b]`` must not wait on ``c``."""
    a, b, c, out = csp.Channel(), csp.Channel(), csp.Channel(), csp.Channel()
    results = run(
        feed(a.writer(), [1, 2]),
        bi.Delta(a.reader(), b.writer(), c.writer()),
        bi.Zip([c.reader(), b.reader()], out.writer()),
        collect(out.reader()),
        backend=backend,
    )
    assert results[-1] == [(1, 1), (2, 2)]


def test_plus(backend: str) -> None:
    a, b, out = csp.Channel(), csp.Channel(), csp.Channel()
    results = run(
        feed(a.writer(), [1, 2, 3]),
        feed(b.writer(), [10, 20, 30]),
        bi.Plus(a.reader(), b.reader(), out.writer()),
        collect(out.reader()),
        backend=backend,
    )
    assert results[-1] == [11, 22, 33]


def test_user_function_failure_poisons_and_is_reported(backend: str) -> None:
    a, b = csp.Channel(), csp.Channel()
    with pytest.raises(BaseExceptionGroup) as info:
        run(feed(a.writer(), [1, 0]), bi.Map(a.reader(), b.writer(), _inverse),
            collect(b.reader()), backend=backend)  # fmt: skip
    [exc] = all_exceptions(info.value)
    assert isinstance(exc, ZeroDivisionError)
    assert "'Map'" in notes(exc)
    assert a.stats().poisoned
    assert b.stats().poisoned


# --------------------------------------------------------------------------- shutdown rules


@dataclass(frozen=True)
class Spec:
    """How to build one builtin on ``ins`` readers and ``outs`` writers."""

    name: str
    ins: int
    outs: int
    make: Callable[[list[csp.Reader], list[csp.Writer]], csp.Process[Any]]
    writes_first: bool = False  # its first operation is a write (sources, Prefix)

    def __str__(self) -> str:
        return self.name


SPECS = [
    Spec("Generate", 0, 1, lambda i, o: bi.Generate(o[0])),
    Spec("Count", 0, 1, lambda i, o: bi.Count(o[0])),
    Spec("Clock", 0, 1, lambda i, o: bi.Clock(o[0], 0.001)),
    Spec("Sink", 1, 0, lambda i, o: bi.Sink(i[0])),
    Spec("Printer", 1, 0, lambda i, o: bi.Printer(i[0], file=io.StringIO())),
    Spec("Id", 1, 1, lambda i, o: bi.Id(i[0], o[0])),
    Spec("Succ", 1, 1, lambda i, o: bi.Succ(i[0], o[0])),
    Spec("Prefix", 1, 1, lambda i, o: bi.Prefix(i[0], o[0], 0), writes_first=True),
    Spec("Tail", 1, 1, lambda i, o: bi.Tail(i[0], o[0])),
    Spec("Mult", 1, 1, lambda i, o: bi.Mult(i[0], o[0], 2)),
    Spec("Map", 1, 1, lambda i, o: bi.Map(i[0], o[0], str)),
    Spec("Filter", 1, 1, lambda i, o: bi.Filter(i[0], o[0], bool)),
    Spec("Delta", 1, 3, lambda i, o: bi.Delta(i[0], *o)),
    Spec("Delta-parallel", 1, 3, lambda i, o: bi.Delta(i[0], *o, parallel=True)),
    Spec("Demux", 1, 3, lambda i, o: bi.Demux(i[0], o)),
    Spec("Merge", 3, 1, lambda i, o: bi.Merge(i, o[0])),
    Spec("Mux", 3, 1, lambda i, o: bi.Mux(tuple(i), o[0])),
    Spec("Zip", 3, 1, lambda i, o: bi.Zip(i, o[0])),
    Spec("Plus", 2, 1, lambda i, o: bi.Plus(i[0], i[1], o[0])),
]


def test_specs_cover_every_builtin() -> None:
    covered = {s.name.split("-")[0] for s in SPECS}
    assert covered == {n for n in bi.__all__ if n not in ("In", "Out")}


def build(spec: Spec) -> tuple[csp.Process[Any], list[csp.Channel], list[csp.Channel]]:
    ins = [csp.Channel(name=f"in{k}") for k in range(spec.ins)]
    outs = [csp.Channel(name=f"out{k}") for k in range(spec.outs)]
    proc = spec.make([c.reader() for c in ins], [c.writer() for c in outs])
    return proc, ins, outs


@pytest.mark.parametrize("spec", [s for s in SPECS if s.ins], ids=str)
def test_poison_from_upstream(backend: str, spec: Spec) -> None:
    """One feeder poisons its channel after a few values: every process ends cleanly and
    every channel of the builtin is poisoned."""
    proc, ins, outs = build(spec)
    feeders = [feed_then_poison(ins[0].writer(), 3)] + [feed_forever(c.writer()) for c in ins[1:]]
    drains = [collect(c.reader()) for c in outs]
    results = run(*feeders, proc, *drains, backend=backend)
    assert results[len(feeders)] is None
    assert all(c.stats().poisoned for c in ins + outs)


@pytest.mark.parametrize("spec", [s for s in SPECS if s.outs], ids=str)
def test_poison_from_downstream(backend: str, spec: Spec) -> None:
    proc, ins, outs = build(spec)
    feeders = [feed_forever(c.writer()) for c in ins]
    drains = [take_then_poison(outs[0].reader(), 3)] + [collect(c.reader()) for c in outs[1:]]
    results = run(*feeders, proc, *drains, backend=backend)
    assert results[len(feeders)] is None
    assert len(results[len(feeders) + 1]) == 3
    assert all(c.stats().poisoned for c in ins + outs)


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_poison_before_start(backend: str, spec: Spec) -> None:
    """Poisoned before it starts, the channel it uses first: it ends at its first operation."""
    proc, ins, outs = build(spec)
    (outs[0] if spec.writes_first or not ins else ins[0]).poison()
    assert run(proc, backend=backend) == [None]
    assert all(c.stats().poisoned for c in ins + outs)


@pytest.mark.parametrize("spec", [s for s in SPECS if s.ins], ids=str)
def test_retire_from_upstream(backend: str, spec: Spec) -> None:
    """Every feeder writes a few values and retires: the builtin ends, its outputs reach
    end-of-stream, and nothing is poisoned."""
    proc, ins, outs = build(spec)
    feeders = [feed(c.writer(), [1, 2, 3, 4, 5, 6]) for c in ins]
    drains = [collect(c.reader()) for c in outs]
    results = run(*feeders, proc, *drains, backend=backend)
    result = results[len(feeders)]
    assert result == (6 * len(ins) if spec.name in ("Sink", "Printer") else None)
    assert all(c.stats().retired for c in ins + outs)
    assert not any(c.stats().poisoned for c in ins + outs)
    assert all(results[len(feeders) + 1 :]), "every output got values before end-of-stream"


@pytest.mark.parametrize("spec", [s for s in SPECS if s.outs], ids=str)
def test_retire_from_downstream(backend: str, spec: Spec) -> None:
    """The reader of the first output takes a few values and retires: the builtin ends, its
    inputs are retired (feeders end), its other outputs reach end-of-stream, no poison."""
    proc, ins, outs = build(spec)
    feeders = [feed_forever(c.writer()) for c in ins]
    drains = [take(outs[0].reader(), 3)] + [collect(c.reader()) for c in outs[1:]]
    results = run(*feeders, proc, *drains, backend=backend)
    assert results[len(feeders)] is None
    assert all(c.stats().retired for c in ins + outs)
    assert not any(c.stats().poisoned for c in ins + outs)


def test_plain_channels_carry_poison(backend: str) -> None:
    a, b, c = csp.Channel(), csp.Channel(), csp.Channel()
    results = run(bi.Generate(a), bi.Succ(a, b), bi.Id(b, c), take_then_poison(c, 4),
                  backend=backend)  # fmt: skip
    assert results == [None, None, None, [1, 2, 3, 4]]
    assert all(ch.stats().poisoned for ch in (a, b, c))


def test_plain_channel_is_left_as_it_is_on_retire(backend: str) -> None:
    """End-of-stream on an end ends the builtin; its plain-channel output has no end to
    retire, so it stays open (its readers are not told) and usable."""
    a, b = csp.Channel(), csp.Channel(1)
    results = run(feed(a.writer(), [1]), bi.Id(a.reader(), b), backend=backend)
    assert results == [None, None]
    assert b.read() == 1
    assert not b.stats().retired
    assert not b.stats().poisoned
    b.write_nowait(2)  # still usable

    c = csp.Channel(4)
    assert run(bi.Count(c, stop=3), backend=backend) == [None]
    assert [c.read() for _ in range(3)] == [0, 1, 2]
    assert not c.stats().retired


# --------------------------------------------------------------------------- networks


@csp.process
def check_count(cin: csp.Reader, n: int) -> int:
    """Reads ``n`` values, checks they are 0 .. n-1, then poisons the network."""
    for expected in range(n):
        value = cin.read()
        assert value == expected, (value, expected)
    cin.poison()
    return n


@pytest.mark.parametrize("parallel", [False, True])
def test_commstime(backend: str, parallel: bool) -> None:
    """The commstime ring: Prefix -> Delta -> Succ -> Prefix, Delta's other output counted."""
    a, b, c, d = (csp.Channel(name=n) for n in "abcd")
    results = run(
        bi.Prefix(d.reader(), a.writer(), 0),
        bi.Delta(a.reader(), b.writer(), c.writer(), parallel=parallel),
        bi.Succ(c.reader(), d.writer()),
        check_count(b.reader(), 500),
        backend=backend,
    )
    assert results == [None, None, None, 500]
    assert all(ch.stats().poisoned for ch in (a, b, c, d))


def test_generate_map_filter_sink_by_retire_upstream(backend: str) -> None:
    """An endless source; the consumer leaves after 10 values and the retire flows back."""
    a, b, c = csp.Channel(), csp.Channel(), csp.Channel()
    results = run(
        bi.Generate(a.writer()),
        bi.Map(a.reader(), b.writer(), _square),
        bi.Filter(b.reader(), c.writer(), _odd),
        take(c.reader(), 10),
        backend=backend,
    )
    assert results == [None, None, None, [(2 * k + 1) ** 2 for k in range(10)]]
    assert all(ch.stats().retired for ch in (a, b, c))


def test_count_map_filter_sink_by_end_of_stream(backend: str) -> None:
    a, b, c = csp.Channel(), csp.Channel(2), csp.Channel()
    results = run(
        bi.Count(a.writer(), stop=100),
        bi.Map(a.reader(), b.writer(), _square),
        bi.Filter(b.reader(), c.writer(), _even),
        bi.Sink(c.reader()),
        backend=backend,
    )
    assert results == [None, None, None, 50]


def test_ordered_farm_demux_workers_mux(backend: str) -> None:
    """Demux -> N workers -> Mux gives the results back in the order of the input."""
    n = 4
    src, dst = csp.Channel(), csp.Channel()
    to_w = [csp.Channel() for _ in range(n)]
    from_w = [csp.Channel(1) for _ in range(n)]
    workers = [bi.Map(t.reader(), f.writer(), _triple) for t, f in zip(to_w, from_w, strict=True)]
    results = run(
        bi.Count(src.writer(), stop=50),
        bi.Demux(src.reader(), [c.writer() for c in to_w]),
        *workers,
        bi.Mux([c.reader() for c in from_w], dst.writer()),
        collect(dst.reader()),
        backend=backend,
    )  # fmt: skip
    assert results[-1] == [3 * k for k in range(50)]


def test_merge_of_sources(backend: str) -> None:
    ins = [csp.Channel() for _ in range(3)]
    out = csp.Channel()
    results = run(
        *(bi.Count(c.writer(), start=100 * i, stop=100 * i + 30) for i, c in enumerate(ins)),
        bi.Merge([c.reader() for c in ins], out.writer()),
        collect(out.reader()),
        backend=backend,
    )
    assert sorted(results[-1]) == [100 * i + k for i in range(3) for k in range(30)]


def test_times_from_zip_and_map(backend: str) -> None:
    """The product of two streams (JCSP's Times): Zip then Map."""
    a, b, z, out = csp.Channel(), csp.Channel(), csp.Channel(), csp.Channel()
    results = run(
        bi.Count(a.writer(), 1, stop=6),
        bi.Count(b.writer(), 10, 10, stop=60),
        bi.Zip([a.reader(), b.reader()], z.writer()),
        bi.Map(z.reader(), out.writer(), math.prod),
        collect(out.reader()),
        backend=backend,
    )
    assert results[-1] == [10, 40, 90, 160, 250]


@pytest.mark.parametrize("parallel", [False, True])
def test_fibonacci_network(backend: str, parallel: bool) -> None:
    """F = 0 : G, G = 1 : (F + G): Prefix, Delta and Plus in a feedback loop."""
    f, f1, g, g1, g2, s, out = (csp.Channel(name=n) for n in ("f", "f1", "g", "g1", "g2", "s", "o"))
    results = run(
        bi.Prefix(s.reader(), g.writer(), 1),
        bi.Delta(g.reader(), g1.writer(), g2.writer(), parallel=parallel),
        bi.Prefix(g2.reader(), f.writer(), 0),
        bi.Delta(f.reader(), f1.writer(), out.writer(), parallel=parallel),
        bi.Plus(f1.reader(), g1.reader(), s.writer()),
        take_then_poison(out.reader(), 12),
        backend=backend,
    )
    assert results[-1] == [0, 1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89]


def test_tail_and_prefix_undo_each_other(backend: str) -> None:
    a, b, c = csp.Channel(), csp.Channel(), csp.Channel()
    results = run(
        bi.Count(a.writer(), stop=5),
        bi.Prefix(a.reader(), b.writer(), "p"),
        bi.Tail(b.reader(), c.writer()),
        collect(c.reader()),
        backend=backend,
    )
    assert results[-1] == [0, 1, 2, 3, 4]


def test_clock_network_poisoned_by_consumer(backend: str) -> None:
    a, b = csp.Channel(), csp.Channel()
    results = run(
        bi.Clock(a.writer(), 0.005),
        bi.Mult(a.reader(), b.writer(), 10),
        take_then_poison(b.reader(), 3),
        backend=backend,
    )
    assert results == [None, None, [0, 10, 20]]


def test_printer_in_a_network(backend: str) -> None:
    in_process_only(backend, "a child OS process prints to its own stdout, not capsys")
    a, b, out = csp.Channel(), csp.Channel(), io.StringIO()
    results = run(
        bi.Count(a.writer(), stop=3),
        bi.Succ(a.reader(), b.writer()),
        bi.Printer(b.reader(), file=out, prefix="n="),
        backend=backend,
    )
    assert results[-1] == 3
    assert out.getvalue().splitlines() == ["n=1", "n=2", "n=3"]
