"""``csp.farm``: N outer processes (OS processes or threads) each multiplexing M greenlet
workers over shared jobs/results channels.

Covered: every job done exactly once with plain-function and factory workers, the shape of
the network (N OS processes, M workers each), greenlet workers overlapping blocking calls made
through ``csp.io``, shutdown by retire and by poison, a failing worker, nesting the farm, and
the argument checks. Every test runs under ``no_leaks``.
"""

from __future__ import annotations

import os
import threading

import pytest

import ferrocsp as csp
from _os_support import no_leaks
from _support import all_exceptions, notes

pytestmark = [pytest.mark.usefixtures("no_leaks"), pytest.mark.timeout(60)]
__all__ = ["no_leaks"]


def square(x: int) -> int:
    return x * x


def tag(x: int) -> tuple[int, int]:
    return x, os.getpid()


def fail_on_7(x: int) -> int:
    if x == 7:
        raise ValueError("seven")
    return x


@csp.process
def feed(out: csp.Writer, n: int) -> None:
    with out:
        for i in range(n):
            out.write(i)


@csp.process
def collect(inp: csp.Reader) -> list[object]:
    return list(inp)


@csp.process
def meet(jobs: csp.Reader, results: csp.Writer, barrier: threading.Barrier) -> int:
    """Waits at ``barrier`` through ``csp.io`` for its first job (that parks only itself)."""
    n = 0
    with results:
        for job in jobs:
            if n == 0:
                csp.io(barrier.wait)()  # io(fn) alone wraps fn: call it
            results.write((job, threading.get_ident()))
            n += 1
    return n


@csp.process
def echo_pid(jobs: csp.Reader, results: csp.Writer) -> int:
    with results:
        for job in jobs:
            results.write((job, os.getpid()))
    return os.getpid()


@pytest.mark.parametrize("backend", ["os", "thread"])
def test_plain_function_every_job_once(backend: str) -> None:
    jobs, results = csp.Channel(), csp.Channel()
    net = csp.farm(square, jobs, results, workers=2, per_worker=3, backend=backend)
    res = csp.Par(feed(jobs.writer(), 100), net, collect(results.reader())).run()
    _, done, got = res
    assert sorted(got) == [i * i for i in range(100)]
    assert len(done) == 2
    assert all(len(per) == 3 for per in done)
    assert sum(sum(per) for per in done) == 100  # each worker returns its number of jobs


def test_factory_worker_runs_n_os_processes() -> None:
    jobs, results = csp.Channel(), csp.Channel()
    net = csp.farm(echo_pid, jobs, results, workers=2, per_worker=2)
    _, pids, got = csp.Par(feed(jobs.writer(), 40), net, collect(results.reader())).run()
    assert sorted(j for j, _ in got) == list(range(40))
    (a1, a2), (b1, b2) = pids
    assert a1 == a2
    assert b1 == b2
    assert len({a1, b1, os.getpid()}) == 3
    assert {p for _, p in got} <= {a1, b1}


def test_default_workers_is_one_per_core() -> None:
    jobs, results = csp.Channel(), csp.Channel()
    net = csp.farm(tag, jobs, results)
    assert len(net.processes) == len(os.sched_getaffinity(0))
    assert net.backend == "os"
    assert [len(p.fn.__self__.processes) for p in net.processes] == [1] * len(net.processes)


def test_greenlet_workers_overlap_io_calls() -> None:
    # All 8 workers of one scheduler must be blocked in csp.io at once for the barrier to
    # open: were a blocking call to stop the scheduler, the barrier would time out.
    jobs, results = csp.Channel(), csp.Channel()
    barrier = threading.Barrier(8, timeout=20)
    net = csp.farm(meet, jobs, results, workers=1, per_worker=8, backend="thread", args=(barrier,))
    _, done, got = csp.Par(feed(jobs.writer(), 8), net, collect(results.reader())).run()
    assert sorted(j for j, _ in got) == list(range(8))
    assert len({t for _, t in got}) == 1  # one scheduler thread multiplexes all 8
    assert done == [[1] * 8]


def test_plain_function_gets_args() -> None:
    jobs, results = csp.Channel(), csp.Channel()
    net = csp.farm(pow, jobs, results, workers=2, args=(3,))
    _, _, got = csp.Par(feed(jobs.writer(), 5), net, collect(results.reader())).run()
    assert sorted(got) == [0, 1, 8, 27, 64]  # type: ignore[type-var]


def test_retire_of_jobs_ends_the_farm_and_results_end_of_stream() -> None:
    jobs, results = csp.Channel(), csp.Channel()
    h = csp.farm(square, jobs, results, workers=2, per_worker=2).start()
    with jobs.writer():
        pass  # no jobs at all
    assert list(results.reader()) == []
    assert h.join(timeout=30) == [[0, 0], [0, 0]]


def test_poison_stops_the_farm() -> None:
    jobs, results = csp.Channel(), csp.Channel()
    h = csp.farm(square, jobs, results, workers=2, per_worker=2).start()
    w = jobs.writer()
    w.write(3)
    assert results.read(timeout=20) == 9
    w.poison()
    assert h.join(timeout=30) == [[None, None], [None, None]]
    with pytest.raises(csp.ChannelPoisoned):
        results.read(timeout=5)


def test_failing_worker_names_its_path_and_stops_the_others() -> None:
    jobs, results = csp.Channel(), csp.Channel()
    net = csp.farm(fail_on_7, jobs, results, workers=2, per_worker=2, name="f")
    with pytest.raises(BaseExceptionGroup) as info:
        csp.Par(feed(jobs.writer(), 1000), net, collect(results.reader())).run()
    (leaf,) = all_exceptions(info.value)
    assert isinstance(leaf, ValueError)
    assert str(leaf) == "seven"
    assert "in process 'fail_on_7[" in notes(leaf)
    assert "]' (in Par 'f' > Par 'f[" in notes(leaf)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"workers": 0}, ValueError, "workers must be >= 1"),
        ({"workers": 1.5}, TypeError, "workers must be an int"),
        ({"workers": True}, TypeError, "workers must be an int"),
        ({"per_worker": -1}, ValueError, "per_worker must be >= 1"),
        ({"per_worker": "2"}, TypeError, "per_worker must be an int"),
        ({"backend": "nope"}, ValueError, "unknown backend"),
        ({"backend": "asyncio"}, ValueError, "use 'os' or 'thread'"),
        ({"name": 3}, TypeError, "name must be a str"),
        ({"args": [1]}, TypeError, "args must be a tuple"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        csp.farm(square, csp.Channel(), csp.Channel(), **kwargs)  # type: ignore[arg-type]


def test_bad_worker_and_channels() -> None:
    ch = csp.Channel()
    with pytest.raises(TypeError, match="worker must be callable"):
        csp.farm(3, ch, csp.Channel())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not a Process"):
        csp.farm(echo_pid(ch.reader(), ch.writer()), csp.Channel(), csp.Channel())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="jobs must be a Channel"):
        csp.farm(square, ch.reader(), csp.Channel())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="results must be a Channel"):
        csp.farm(square, csp.Channel(), ch.writer())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="is a lambda"):
        csp.farm(lambda x: x, csp.Channel(), csp.Channel())
    # On threads nothing crosses an OS process: a lambda is fine.
    jobs, results = csp.Channel(), csp.Channel()
    net = csp.farm(lambda x: -x, jobs, results, workers=1, backend="thread")
    _, _, got = csp.Par(feed(jobs.writer(), 3), net, collect(results.reader())).run()
    assert sorted(got) == [-2, -1, 0]  # type: ignore[type-var]
