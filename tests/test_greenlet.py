"""The greenlet backend: processes multiplexed as greenlets on one scheduler thread.

Shared Par/Spawn/shutdown tests also run under this backend (the ``backend`` fixture in
test_process.py and test_shutdown.py); this file covers what is specific to greenlets: one
thread for all, mixing with threads and asyncio, Alt, timeouts, ``io()``, scale, Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import textwrap
import threading
import time
import tracemalloc
from typing import Any

import pytest

import ferrocsp as csp
from _support import all_exceptions, interrupt_child, notes, wait_until

pytestmark = pytest.mark.timeout(60)

green = csp.process(backend="greenlet")


@green
def produce(cout: csp.Channel | csp.Writer, n: int) -> str:
    for i in range(n):
        cout.write(i)
    return "produced"


@green
def consume(cin: csp.Channel | csp.Reader, n: int) -> list[int]:
    return [cin.read() for _ in range(n)]


@green
def thread_id() -> int:
    return threading.get_ident()


# --------------------------------------------------------------------------- one scheduler


def test_all_greenlets_of_a_par_share_one_thread_not_the_callers() -> None:
    ids = csp.Par(*[thread_id() for _ in range(5)]).run()
    assert len(set(ids)) == 1
    assert ids[0] != threading.get_ident()


@pytest.mark.parametrize("capacity", [0, 1, 5])
def test_rendezvous_and_buffered_between_greenlets(capacity: int) -> None:
    ch = csp.Channel(capacity)
    assert csp.Par(produce(ch, 200), consume(ch, 200)).run() == ["produced", list(range(200))]


def test_many_writers_one_reader_exact_counts() -> None:
    ch = csp.Channel(2)
    n, k = 20, 50
    results = csp.Par(*[produce(ch, k) for _ in range(n)], consume(ch, n * k)).run()
    assert sorted(results[-1]) == sorted(list(range(k)) * n)


def test_ping_pong_keeps_order() -> None:
    a, b = csp.Channel(), csp.Channel()

    @green
    def ping() -> list[int]:
        got = []
        for i in range(100):
            a.write(i)
            got.append(b.read())
        return got

    @green
    def pong() -> None:
        for _ in range(100):
            b.write(a.read() * 2)

    assert csp.Par(ping(), pong()).run()[0] == [2 * i for i in range(100)]


def test_backend_via_par_and_default() -> None:
    def tid() -> int:
        return threading.get_ident()

    ids = csp.Par(tid, tid, backend="greenlet").run()
    assert ids[0] == ids[1] != threading.get_ident()
    csp.set_default_backend("greenlet")
    try:
        ids = csp.Par(tid, tid).run()
    finally:
        csp.set_default_backend(None)
    assert ids[0] == ids[1]


def test_error_message_names_the_greenlet_process() -> None:
    ch = csp.Channel(name="jobs")
    ch.poison()

    @csp.process(name="the-worker", backend="greenlet")
    def worker() -> str:
        try:
            ch.read()
        except csp.ChannelPoisoned as exc:
            return str(exc)
        return "no error"

    (msg,) = csp.Par(worker()).run()
    assert "'jobs'" in msg
    assert "the-worker" in msg


# --------------------------------------------------------------------------- mixing


@pytest.mark.parametrize("capacity", [0, 3])
def test_greenlet_to_thread_and_back(capacity: int) -> None:
    there, back = csp.Channel(capacity), csp.Channel(capacity)

    @csp.process(backend="thread")
    def echo(cin: csp.Channel, cout: csp.Channel, n: int) -> None:
        for _ in range(n):
            cout.write(cin.read() + 1)

    @green
    def client(cout: csp.Channel, cin: csp.Channel, n: int) -> list[int]:
        out = []
        for i in range(n):
            cout.write(i)
            out.append(cin.read())
        return out

    results = csp.Par(client(there, back, 300), echo(there, back, 300)).run()
    assert results[0] == [i + 1 for i in range(300)]


def test_main_thread_talks_to_greenlets() -> None:
    inp, out = csp.Channel(), csp.Channel()

    @green
    def doubler() -> None:
        for v in inp.reader():
            out.write(v * 2)

    w = inp.writer()
    h = csp.Spawn(doubler())
    for i in range(50):
        w.write(i)
        assert out.read() == 2 * i
    w.retire()
    assert h.join(timeout=10) is None


def test_greenlet_and_asyncio_processes_both_directions() -> None:
    to_aio, to_green = csp.Channel(), csp.Channel(2)

    @csp.process
    async def aio_echo(n: int) -> None:
        for _ in range(n):
            v = await to_aio.aread()
            await to_green.awrite(v * 10)

    @green
    def client(n: int) -> list[int]:
        out = []
        for i in range(n):
            to_aio.write(i)
            out.append(to_green.read())
        return out

    assert csp.Par(client(200), aio_echo(200)).run()[0] == [10 * i for i in range(200)]


def test_greenlet_and_asyncio_from_running_loop() -> None:
    ch = csp.Channel()

    @csp.process
    async def reader(n: int) -> list[int]:
        return [await ch.aread() for _ in range(n)]

    async def main() -> list[Any]:
        return await csp.Par(produce(ch, 30), reader(30)).arun()

    assert asyncio.run(main()) == ["produced", list(range(30))]


def test_two_greenlet_networks_talk_across_schedulers() -> None:
    ch = csp.Channel()
    h1 = csp.Par(produce(ch, 100)).start()
    h2 = csp.Par(consume(ch, 100)).start()
    assert h1.join(timeout=10) == ["produced"]
    assert h2.join(timeout=10) == [list(range(100))]


# --------------------------------------------------------------------------- Alt


def test_alt_input_among_greenlets() -> None:
    a, b = csp.Channel(name="a"), csp.Channel(name="b")

    @green
    def mux(n: int) -> list[int]:
        alt = csp.Alt(a, b)
        return sorted(alt.select()[1] for _ in range(n))

    results = csp.Par(produce(a, 20), produce(b, 20), mux(40)).run()
    assert results[2] == sorted(list(range(20)) * 2)


def test_alt_output_guard_meets_alt_input_between_greenlets() -> None:
    ch = csp.Channel()

    @green
    def sender(n: int) -> int:
        sent = 0
        for i in range(n):
            g, _ = csp.Alt(csp.Output(ch, i), csp.Timeout(5)).select()
            sent += isinstance(g, csp.Output)
        return sent

    @green
    def receiver(n: int) -> list[int]:
        return [csp.Alt(ch, csp.Timeout(5)).select()[1] for _ in range(n)]

    assert csp.Par(sender(50), receiver(50)).run() == [50, list(range(50))]


def test_alt_timeout_and_skip_in_greenlet() -> None:
    ch = csp.Channel()

    @green
    def chooser() -> list[str]:
        out = []
        t = csp.Timeout(0.05)
        start = time.monotonic()
        g, _ = csp.Alt(ch, t).select()
        out.append("timeout" if g is t and time.monotonic() - start >= 0.045 else "bad")
        s = csp.Skip()
        g, _ = csp.Alt(ch, s).pri_select()
        out.append("skip" if g is s else "bad")
        return out

    assert csp.Par(chooser()).run() == [["timeout", "skip"]]


def test_alt_in_greenlet_with_thread_counterpart() -> None:
    ch = csp.Channel()

    @csp.process(backend="thread")
    def thread_writer() -> None:
        for i in range(30):
            ch.write(i)

    @green
    def alt_reader() -> list[int]:
        return [csp.Alt(ch, csp.Timeout(10)).select()[1] for _ in range(30)]

    assert csp.Par(thread_writer(), alt_reader()).run()[1] == list(range(30))


# --------------------------------------------------------------------------- fast path
# Greenlets of one scheduler hand values over through the engine's one algorithm, with each
# task's selection (cell and slots) recycled between operations and wake-ups on the local run
# queue. These tests pin what that reuse must keep: every value once, in order, and correct
# poison/retire/timeout/Alt behaviour on a selection that served earlier operations.


def test_fast_path_hands_every_value_over_once_in_order() -> None:
    n = 5_000
    chans = [csp.Channel() for _ in range(4)]

    @green
    def relay(cin: csp.Channel, cout: csp.Channel) -> None:
        for _ in range(n):
            cout.write(cin.read() + 1)

    results = csp.Par(
        produce(chans[0], n),
        relay(chans[0], chans[1]),
        relay(chans[1], chans[2]),
        relay(chans[2], chans[3]),
        consume(chans[3], n),
    ).run()
    assert results[-1] == [i + 3 for i in range(n)]


def test_poison_reaches_a_greenlet_parked_after_many_hand_offs() -> None:
    data, stop = csp.Channel(name="data"), csp.Channel(name="stop")

    @green
    def reader() -> tuple[int, str]:
        got = 0
        for _ in range(1_000):  # warm the task's recycled selection first
            got += data.read() is not None
        try:
            data.read()  # parks; the writer poisons instead of writing
        except csp.ChannelPoisoned:
            pass
        else:
            return got, "no poison"
        return got, stop.read()  # the same recycled selection serves the next wait

    @green
    def writer() -> None:
        for i in range(1_000):
            data.write(i)
        data.poison()
        stop.write("after poison")

    assert csp.Par(reader(), writer()).run()[0] == (1_000, "after poison")


def test_retire_reaches_a_greenlet_parked_after_many_hand_offs() -> None:
    ch = csp.Channel()
    r, w = ch.reader(), ch.writer()

    @green
    def sink() -> int:
        return sum(1 for _ in r)  # ends when the writer retires while it is parked

    @green
    def source() -> None:
        for i in range(2_000):
            w.write(i)
        w.retire()

    assert csp.Par(sink(), source()).run()[0] == 2_000


def test_greenlets_and_a_thread_peer_share_one_channel_exact_counts() -> None:
    ch = csp.Channel()
    n = 3_000

    @csp.process(backend="thread")
    def thread_writer() -> None:
        for i in range(n):
            ch.write(("t", i))

    @green
    def green_writer() -> None:
        for i in range(n):
            ch.write(("g", i))

    @green
    def reader() -> list[tuple[str, int]]:
        return [ch.read() for _ in range(n)]

    results = csp.Par(thread_writer(), green_writer(), reader(), reader()).run()
    got = results[2] + results[3]
    assert sorted(got) == sorted([("t", i) for i in range(n)] + [("g", i) for i in range(n)])
    for src in "tg":
        for part in (results[2], results[3]):
            seq = [i for s, i in part if s == src]
            assert seq == sorted(seq)  # one writer's values stay in order


def test_alt_and_plain_operations_on_one_channel_between_greenlets() -> None:
    ch, other = csp.Channel(name="ch"), csp.Channel(name="other")
    n = 2_000

    @green
    def plain_writer() -> None:
        for i in range(n):
            ch.write(i)

    @green
    def alt_reader() -> list[int]:
        alt = csp.Alt(other, ch)
        return [alt.select()[1] for _ in range(n)]

    @green
    def alt_writer() -> int:
        for i in range(n):
            csp.Alt(csp.Output(ch, -i - 1)).select()
        return n

    @green
    def plain_reader() -> list[int]:
        return [ch.read() for _ in range(n)]

    out = csp.Par(plain_writer(), alt_reader(), alt_writer(), plain_reader()).run()
    got = sorted(out[1] + out[3])
    assert got == sorted(list(range(n)) + [-i - 1 for i in range(n)])


def test_timeout_after_hand_offs_keeps_the_value_and_the_selection_works_on() -> None:
    ch, go = csp.Channel(name="ch"), csp.Channel(name="go")

    @green
    def writer() -> list[str]:
        out = []
        for i in range(500):
            ch.write(i)
        try:
            ch.write("late", timeout=0.02)  # the reader waits on `go`: nothing is sent
        except TimeoutError:
            out.append("timeout")
        go.write(None)
        ch.write(500)
        return out

    @green
    def reader() -> list[Any]:
        got = [ch.read() for _ in range(500)]
        go.read()
        got.append(ch.read())
        return got

    assert csp.Par(writer(), reader()).run() == [["timeout"], list(range(501))]


def test_thousands_of_blocked_greenlets_start_from_the_hub() -> None:
    # Every process blocks at once; each must start on the hub's stack, not on top of the
    # previous one's (which overflowed Python's recursion limit at about a thousand).
    gate = csp.Channel(name="gate")
    n = 3_000

    @green
    def waiter() -> str:
        try:
            gate.read()
        except csp.ChannelPoisoned:
            return "poisoned"
        return "read"

    handle = csp.Par(*[waiter() for _ in range(n)]).start()
    wait_until(lambda: gate.stats().readers_waiting == n, what="all greenlets blocked")
    gate.poison()
    assert handle.join() == ["poisoned"] * n


# --------------------------------------------------------------------------- timeouts


def test_read_timeout_while_others_keep_running() -> None:
    quiet, busy = csp.Channel(), csp.Channel()

    @green
    def waits() -> float:
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            quiet.read(timeout=0.2)
        return time.monotonic() - start

    @green
    def chatter() -> int:
        n = 0
        end = time.monotonic() + 0.3
        while time.monotonic() < end:
            busy.write(n)
            n += 1
        busy.poison()
        return n

    @green
    def listener() -> None:
        while True:
            busy.read()

    waited, n, _ = csp.Par(waits(), chatter(), listener()).run()
    assert 0.19 <= waited < 2.0
    assert n > 100
    assert quiet.stats().readers_waiting == 0


def test_write_timeout_keeps_the_value() -> None:
    ch = csp.Channel(1)

    @green
    def writer() -> str:
        ch.write("kept")
        try:
            ch.write("dropped", timeout=0.05)
        except TimeoutError:
            return "timed out"
        return "written"

    assert csp.Par(writer()).run() == ["timed out"]
    assert ch.read_nowait() == "kept"
    with pytest.raises(csp.WouldBlock):
        ch.read_nowait()


def test_many_timeouts_fire_in_order() -> None:
    ch = csp.Channel()
    order: list[float] = []

    def waiter(t: float) -> csp.Process[None]:
        @green
        def w() -> None:
            with pytest.raises(TimeoutError):
                ch.read(timeout=t)
            order.append(t)

        return w()

    delays = [0.09, 0.01, 0.05, 0.03, 0.07]
    csp.Par(*[waiter(t) for t in delays]).run()
    assert order == sorted(delays)


# --------------------------------------------------------------------------- shutdown


def test_failure_in_greenlet_poisons_thread_peer_and_groups() -> None:
    ch = csp.Channel(name="shared")

    @csp.process(name="crasher", backend="greenlet")
    def crasher(c: csp.Channel) -> None:
        raise ValueError("boom")

    @csp.process(backend="thread")
    def blocked(c: csp.Channel) -> str:
        c.read()
        return "read"

    with pytest.raises(ExceptionGroup) as info:
        csp.Par(crasher(ch), blocked(ch)).run()
    (exc,) = all_exceptions(info.value)
    assert isinstance(exc, ValueError)
    assert "'crasher'" in notes(exc)
    assert ch.stats().poisoned


def test_poison_from_thread_wakes_blocked_greenlets() -> None:
    ch = csp.Channel()
    h = csp.Par(consume(ch, 1), consume(ch, 1), produce(csp.Channel(), 1)).start()
    wait_until(lambda: ch.stats().readers_waiting == 2, what="greenlets blocked")
    ch.poison()
    h.poison()
    assert h.join(timeout=10) == [None, None, None]


def test_retire_ends_iteration_in_greenlets() -> None:
    ch = csp.Channel()

    @green
    def total(r: csp.Reader) -> int:
        return sum(r)

    @green
    def count(w: csp.Writer) -> None:
        with w:
            for i in range(10):
                w.write(i)

    assert csp.Par(count(ch.writer()), total(ch.reader())).run() == [None, 45]


def test_nested_greenlet_par_inside_greenlet_process() -> None:
    ch, side = csp.Channel(), csp.Channel()

    @green
    def outer() -> list[Any]:
        return csp.Par(produce(ch, 5), consume(ch, 5)).run()

    @green
    def sibling() -> int:
        # keeps talking while outer joins its nested network
        for i in range(20):
            side.write(i)
        return 20

    results = csp.Par(outer(), sibling(), consume(side, 20)).run()
    assert results == [["produced", list(range(5))], 20, list(range(20))]


# --------------------------------------------------------------------------- io()


def test_io_sleep_does_not_block_other_greenlets() -> None:
    ch = csp.Channel()
    progress: list[int] = []

    @green
    def sleeper() -> tuple[int, int]:
        before = len(progress)
        start = time.monotonic()
        csp.io(time.sleep, 0.2)
        assert time.monotonic() - start >= 0.19
        return before, len(progress)

    @green
    def talker() -> None:
        end = time.monotonic() + 0.3
        i = 0
        while time.monotonic() < end:
            ch.write(i)
            i += 1
        ch.poison()

    @green
    def listener() -> None:
        while True:
            progress.append(ch.read())

    (before, after), _, _ = csp.Par(sleeper(), talker(), listener()).run()
    assert after - before > 100, (before, after)


def test_io_returns_and_raises() -> None:
    @csp.io
    def slow_add(a: int, b: int) -> int:
        time.sleep(0.01)
        return a + b

    def fails() -> None:
        raise KeyError("io")

    @green
    def user() -> tuple[int, str, int]:
        with pytest.raises(KeyError) as info:
            csp.io(fails)()
        return slow_add(2, b=3), str(info.value), csp.io(lambda: 7)()

    assert csp.Par(user()).run() == [(5, "'io'", 7)]


def test_io_outside_scheduler_calls_in_place() -> None:
    here = threading.get_ident()
    assert csp.io(threading.get_ident)() == here
    assert csp.io(max, 3, 9) == 9

    @csp.process(backend="thread")
    def in_thread() -> bool:
        return csp.io(threading.get_ident)() == threading.get_ident()

    assert csp.Par(in_thread()).run() == [True]


def test_io_calls_overlap() -> None:
    @green
    def nap() -> None:
        csp.io(time.sleep, 0.2)

    start = time.monotonic()
    csp.Par(*[nap() for _ in range(10)]).run()
    assert time.monotonic() - start < 1.5


# --------------------------------------------------------------------------- scale


def test_hundred_thousand_greenlet_processes() -> None:
    n = 100_000
    chans = [csp.Channel() for _ in range(n // 2)]

    def send(c: csp.Channel, v: int) -> None:
        c.write(v)

    def recv(c: csp.Channel) -> Any:
        return c.read()

    procs: list[csp.Process[Any]] = []
    for i, c in enumerate(chans):
        procs.append(csp.Process(send, (c, i), name="send"))
        procs.append(csp.Process(recv, (c,), name="recv"))
    tracemalloc.start()
    try:
        results = csp.Par(*procs, backend="greenlet").run()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # A hang fails through the suite's timeout; speed is bench/scale's business, not an assertion.
    assert results[1::2] == list(range(n // 2))
    assert peak < 1 << 30, peak


# --------------------------------------------------------------------------- Ctrl-C

CTRL_C = textwrap.dedent(
    """
    import signal, threading, time
    import ferrocsp as csp

    signal.signal(signal.SIGINT, signal.default_int_handler)
    a, b = csp.Channel(name="a"), csp.Channel(name="b")

    @csp.process(backend="greenlet")
    def reader(ch):
        for _ in ch:
            pass

    @csp.process(backend="greenlet")
    def writer(ch):
        while True:
            ch.write(1)
            ch.write(2)

    def watch():
        deadline = time.monotonic() + 20
        while a.stats().readers_waiting != 2:
            if time.monotonic() > deadline:
                print("never ready", flush=True)
                return
            time.sleep(0.005)
        print("ready", flush=True)

    threading.Thread(target=watch, daemon=True).start()
    try:
        csp.Par(reader(a), reader(a), writer(b), reader(b)).run()
    finally:
        # The network's hub thread is kept for the next run: it must be parked idle (it parks
        # just after the run it served was reported done, hence the bounded wait).
        from ferrocsp._backends import _pool
        deadline = time.monotonic() + 5
        while True:
            others = [t.name for t in threading.enumerate()
                      if t is not threading.main_thread() and t.name != "Thread-1 (watch)"
                      and t not in _pool.idle_threads()]
            if not others or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        print("LEFTOVER", others, flush=True)
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_poisons_and_joins_greenlet_par() -> None:
    returncode, out, err = interrupt_child(CTRL_C)
    assert returncode != 0, f"stdout: {out}\nstderr: {err}"
    assert "KeyboardInterrupt" in err, err
    assert "LEFTOVER []" in out, f"threads left behind: {out}\nstderr: {err}"


def test_the_current_process_survives_blocking_reads_and_writes() -> None:
    """After each plain read or write in a greenlet, completed at once or after switches, the
    process is still the scheduler's current one (its name is known), and an error raised
    after a switch names it."""
    from ferrocsp._native import _process_name

    seen: list[str | None] = []
    errors: list[str] = []

    @csp.process(backend="greenlet", name="ping")
    def ping(out: csp.Writer, back: csp.Reader) -> None:
        for i in range(3):
            out.write(i)
            seen.append(_process_name())
            assert back.read() == i
            seen.append(_process_name())

    @csp.process(backend="greenlet", name="pong")
    def pong(inp: csp.Reader, back: csp.Writer, stop: csp.Channel) -> None:
        for _ in range(3):
            back.write(inp.read())
            seen.append(_process_name())
        try:
            stop.read()  # blocks until poisoned, after a switch away
        except csp.ChannelPoisoned as e:
            seen.append(_process_name())
            errors.append(str(e))

    @csp.process(backend="greenlet", name="poisoner")
    def poisoner(stop: csp.Channel) -> None:
        idle = csp.Channel()
        while stop.stats().readers_waiting == 0:
            with contextlib.suppress(TimeoutError):
                idle.read(timeout=0.001)  # lets the others run
            seen.append(_process_name())
        stop.poison()

    a, b, stop = csp.Channel(), csp.Channel(), csp.Channel(name="stop-here")
    csp.Par(ping(a.writer(), b.reader()), pong(a.reader(), b.writer(), stop), poisoner(stop)).run()
    assert set(seen) == {"ping", "pong", "poisoner"}
    assert seen.count("ping") == 6
    assert seen.count("pong") == 4
    assert errors == ["read on channel 'stop-here' in process 'pong': channel is poisoned"]
