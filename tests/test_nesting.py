"""Multiplexing by nesting (DESIGN 2): a ``Par`` or ``Seq`` is itself a process, so inner
networks run on their own scheduler inside a thread or an OS process of the outer one.

Covered: every outer/inner pair that makes sense (greenlet in thread, greenlet in os, thread in
os, os in thread, three levels), channels crossing each boundary (same scheduler, another
thread, another OS process), Alt inside nested networks, retire and poison crossing levels,
failures as nested ExceptionGroups whose notes give the path of the failed process, and
Ctrl-C. Every test runs under ``no_leaks`` (OS processes are involved in most).
"""

from __future__ import annotations

import itertools
import os
import threading

import pytest

import ferrocsp as csp
from _os_support import no_leaks
from _support import ANNOUNCE_WHEN_JOINING, all_exceptions, interrupt_child, notes

pytestmark = [pytest.mark.usefixtures("no_leaks"), pytest.mark.timeout(60)]
__all__ = ["no_leaks"]


@csp.process
def produce(out: csp.Writer, n: int) -> str:
    with out:
        for i in range(n):
            out.write(i)
    return "sent"


@csp.process
def consume(inp: csp.Reader) -> int:
    return sum(inp)


_thread_serial = itertools.count()
_this_thread = threading.local()


def thread_token() -> int:
    """A number for the calling thread, never reused in this process (thread idents are
    reused once a thread has ended, so two threads that did not overlap could share one)."""
    token: int | None = getattr(_this_thread, "token", None)
    if token is None:
        token = _this_thread.token = next(_thread_serial)
    return token


@csp.process
def where() -> tuple[int, int]:
    """The OS process and thread this process runs in."""
    return os.getpid(), thread_token()


@csp.process
def relay(inp: csp.Reader, out: csp.Writer) -> None:
    with out:
        for v in inp:
            out.write(v + 1)


@csp.process
def fail_after(inp: csp.Reader, n: int) -> None:
    for _ in range(n):
        inp.read()
    raise ValueError("boom")


@csp.process
def die(inp: csp.Reader, code: int) -> None:
    os._exit(code)  # no outcome sent: the parent reports a crash and poisons ``inp``


@csp.process
def read_forever(inp: csp.Reader) -> None:
    while True:
        inp.read()


@csp.process
def write_forever(out: csp.Writer) -> None:
    i = 0
    while True:
        out.write(i)
        i += 1


@csp.process
def poison_after(inp: csp.Reader, n: int) -> int:
    for _ in range(n):
        inp.read()
    inp.poison()
    return n


@csp.process
def alt_merge(a: csp.Reader, b: csp.Reader, n: int) -> list[int]:
    alt = csp.Alt(a, b)
    got = []
    for _ in range(n):
        _, v = alt.select()
        got.append(v)
    return sorted(got)


@csp.process
def where_together(barrier: threading.Barrier) -> tuple[int, int]:
    """``where()``, once the other network's ``where_together`` runs too: so the two
    networks overlap (a kept thread may serve two networks one after the other)."""
    barrier.wait()
    return os.getpid(), thread_token()


def test_greenlet_in_thread_is_m_to_n_and_results_nest() -> None:
    a, b = csp.Channel(), csp.Channel()
    together = threading.Barrier(2, timeout=30)
    res = csp.Par(
        csp.Par(
            produce(a.writer(), 10),
            consume(a.reader()),
            where_together(together),
            backend="greenlet",
        ),
        csp.Par(
            produce(b.writer(), 20),
            consume(b.reader()),
            where_together(together),
            backend="greenlet",
        ),
        backend="thread",
    ).run()
    (s1, n1, (pid1, t1)), (s2, n2, (pid2, t2)) = res
    assert (s1, n1, s2, n2) == ("sent", 45, "sent", 190)
    assert pid1 == pid2 == os.getpid()
    assert t1 != t2  # two schedulers, two threads
    assert thread_token() not in (t1, t2)


def test_greenlet_in_thread_channel_crosses_schedulers() -> None:
    a, b = csp.Channel(), csp.Channel()
    res = csp.Par(
        csp.Par(produce(a.writer(), 50), consume(b.reader()), backend="greenlet"),
        csp.Par(relay(a.reader(), b.writer()), backend="greenlet"),
        backend="thread",
    ).run()
    assert res == [["sent", sum(range(1, 51))], [None]]


def test_greenlet_in_os_channel_crosses_os_processes() -> None:
    # Producer in one OS process's greenlet scheduler, relay in another's, consumer in the
    # parent's main network: one channel per boundary.
    a, b = csp.Channel(), csp.Channel()
    res = csp.Par(
        csp.Par(produce(a.writer(), 30), where(), backend="greenlet"),
        csp.Par(relay(a.reader(), b.writer()), where(), backend="greenlet"),
        backend="os",
    ).start()
    total = consume(b.reader()).run()
    (sent, (pid1, _)), (_, (pid2, _)) = res.join(timeout=30)
    assert total == sum(range(1, 31))
    assert sent == "sent"
    assert len({pid1, pid2, os.getpid()}) == 3


def test_thread_in_os() -> None:
    a = csp.Channel()
    res = csp.Par(
        csp.Par(produce(a.writer(), 25), where(), where(), backend="thread"),
        csp.Par(consume(a.reader()), where(), backend="thread"),
        backend="os",
    ).run()
    (sent, (p1, _), (p1b, _)), (total, (p2, _)) = res
    assert (sent, total) == ("sent", sum(range(25)))
    assert p1 == p1b
    assert len({p1, p2, os.getpid()}) == 3


def test_os_in_thread() -> None:
    # Two threads, each starting OS processes of its own; a channel joins children of both.
    a = csp.Channel()
    res = csp.Par(
        csp.Par(produce(a.writer(), 40), where(), backend="os"),
        csp.Par(consume(a.reader()), where(), backend="os"),
        backend="thread",
    ).run()
    (sent, (p1, _)), (total, (p2, _)) = res
    assert (sent, total) == ("sent", sum(range(40)))
    assert len({p1, p2, os.getpid()}) == 3


def test_three_levels_greenlets_in_threads_in_os_processes() -> None:
    a, b = csp.Channel(), csp.Channel()
    inner1 = csp.Par(produce(a.writer(), 10), where(), backend="greenlet")
    inner2 = csp.Par(relay(a.reader(), b.writer()), where(), backend="greenlet")
    res = csp.Par(
        csp.Par(inner1, csp.Par(where(), backend="greenlet"), backend="thread"),
        csp.Par(inner2, backend="thread"),
        consume(b.reader()),
        backend="os",
    ).run()
    [[sent, (p1, t1)], [(p1b, t1b)]], [[relayed, (p2, _)]], total = res
    assert sent == "sent"
    assert relayed is None
    assert total == sum(range(1, 11))
    assert p1 == p1b
    assert t1 != t1b
    assert len({p1, p2, os.getpid()}) == 3


def test_seq_nests_in_par_on_os() -> None:
    a = csp.Channel()
    res = csp.Par(
        csp.Seq(produce(a.writer(), 5), where()),
        csp.Seq(consume(a.reader()), where()),
        backend="os",
    ).run()
    (sent, (p1, _)), (total, (p2, _)) = res
    assert (sent, total) == ("sent", 10)
    assert len({p1, p2, os.getpid()}) == 3


def test_alt_inside_nested_networks() -> None:
    # In-process Alt on one greenlet scheduler inside an OS process, and an Alt in the parent
    # over channels whose writers are greenlets in two other OS processes.
    a, b, c, d = csp.Channel(), csp.Channel(), csp.Channel(), csp.Channel()
    h = csp.Par(
        csp.Par(
            produce(a.writer(), 5), produce(b.writer(), 5), alt_merge(a.reader(), b.reader(), 10)
        ),
        csp.Par(produce(c.writer(), 4), backend="greenlet"),
        csp.Par(produce(d.writer(), 4), backend="greenlet"),
        backend="os",
    ).start()
    got = alt_merge(c.reader(), d.reader(), 8).run()
    res = h.join(timeout=30)
    assert res[0] == ["sent", "sent", [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]]
    assert got == [0, 0, 1, 1, 2, 2, 3, 3]


def test_retire_crosses_levels() -> None:
    # Two producers in different OS processes share the channel; the consumer (a greenlet in a
    # third) sees end-of-stream once both retired.
    a = csp.Channel()
    res = csp.Par(
        csp.Par(produce(a.writer(), 10), backend="greenlet"),
        csp.Par(produce(a.writer(), 10), backend="thread"),
        csp.Par(consume(a.reader()), backend="greenlet"),
        backend="os",
    ).run()
    assert res == [["sent"], ["sent"], [90]]


def test_poison_crosses_levels() -> None:
    # A greenlet deep inside one OS process poisons its channel; writers in other OS processes
    # and threads stop, and the inner relay spreads the poison to the channel it writes.
    a, b = csp.Channel(), csp.Channel()
    res = csp.Par(
        csp.Par(write_forever(a.writer()), backend="thread"),
        csp.Par(relay(a.reader(), b.writer()), backend="greenlet"),
        csp.Par(csp.Par(poison_after(b.reader(), 7), backend="greenlet"), backend="thread"),
        backend="os",
    ).run()
    assert res == [[None], [None], [[7]]]


def test_failure_path_notes_and_nested_groups() -> None:
    # The failure poisons its channel: the writers, a greenlet in another OS process and a
    # thread of the outer network, stop by poison (clean ends, so not in the group).
    a = csp.Channel()
    net = csp.Par(
        csp.Par(
            csp.Par(fail_after(a.reader(), 3), backend="greenlet", name="inner"),
            backend="thread",
            name="middle",
        ),
        csp.Par(write_forever(a.writer()), backend="greenlet"),
        csp.Par(write_forever(a.writer()), backend="thread"),
        backend="os",
        name="outer",
    )
    with pytest.raises(BaseExceptionGroup) as info:
        net.run()
    group = info.value
    # One failure, three levels down: groups nest as the Pars do.
    assert group.message == "Par 'outer': 1 of 3 processes failed"
    (middle,) = group.exceptions
    assert isinstance(middle, BaseExceptionGroup)
    assert "in Par 'middle' (in Par 'outer')" in notes(middle)
    (inner,) = middle.exceptions
    assert isinstance(inner, BaseExceptionGroup)
    assert "in Par 'inner' (in Par 'outer' > Par 'middle')" in notes(inner)
    (leaf,) = all_exceptions(group)
    assert isinstance(leaf, ValueError)
    assert str(leaf) == "boom"
    assert "in process 'fail_after' (in Par 'outer' > Par 'middle' > Par 'inner')" in notes(leaf)


def test_unnamed_networks_leave_plain_notes_and_mixed_paths_skip_them() -> None:
    a = csp.Channel()
    with pytest.raises(BaseExceptionGroup) as info:
        csp.Par(
            csp.Par(fail_after(a.reader(), 1), backend="greenlet"), produce(a.writer(), 5)
        ).run()
    (leaf,) = all_exceptions(info.value)
    assert notes(leaf) == "in process 'fail_after'"
    # Only named networks are levels of the path: the unnamed middle one is left out.
    b = csp.Channel()
    with pytest.raises(BaseExceptionGroup) as info:
        csp.Par(
            csp.Par(
                csp.Par(fail_after(b.reader(), 1), backend="greenlet", name="in"),
                backend="thread",
            ),
            produce(b.writer(), 5),
            name="out",
        ).run()
    (leaf,) = all_exceptions(info.value)
    assert notes(leaf) == "in process 'fail_after' (in Par 'out' > Par 'in')"


def test_crash_of_a_nested_os_process_poisons_the_others() -> None:
    a = csp.Channel()
    with pytest.raises(BaseExceptionGroup) as info:
        csp.Par(
            csp.Par(die(a.reader(), 3), backend="os", name="children"),
            csp.Par(write_forever(a.writer()), backend="greenlet"),
            backend="thread",
            name="top",
        ).run()
    (leaf,) = all_exceptions(info.value)
    assert isinstance(leaf, csp.ProcessCrashed)
    assert "in process 'die' (in Par 'top' > Par 'children')" in notes(leaf)


def test_par_name_is_validated() -> None:
    with pytest.raises(TypeError, match="name must be a str"):
        csp.Par(where(), name=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="name must be a str"):
        csp.Seq(where(), name=b"x")  # type: ignore[arg-type]


def test_ctrl_c_ends_a_nested_network_and_leaves_nothing() -> None:
    tests_dir = os.path.dirname(__file__)
    code = f"""
import os, sys, time
sys.path.insert(0, {tests_dir!r})
import ferrocsp as csp
from test_nesting import read_forever, write_forever

a, b = csp.Channel(), csp.Channel()
h = csp.Par(
    csp.Par(read_forever(a.reader()), write_forever(b.writer()), backend="greenlet"),
    csp.Par(read_forever(b.reader()), backend="thread"),
    backend="os",
).start()
kids = [c.pid for c in h._os_host._children]
announce_when_joining()
try:
    h.join()
except KeyboardInterrupt:
    deadline = time.monotonic() + 2
    while any(os.path.exists(f"/proc/{{k}}") for k in kids) and time.monotonic() < deadline:
        time.sleep(0.01)
    print("INTERRUPTED", [k for k in kids if os.path.exists(f"/proc/{{k}}")], flush=True)
"""
    _, out, err = interrupt_child(ANNOUNCE_WHEN_JOINING + code)
    assert "INTERRUPTED []" in out, (out, err)
