"""Networked channels against a real nats-server (started by tests/_nats.py): connect,
rendezvous, buffered capacity, any-to-any exactly once across OS processes, timeouts, asyncio."""

from __future__ import annotations

import asyncio
import io
import pickle
import threading
import time
import uuid
from collections import Counter
from typing import Any

import pytest

import _support
import ferrocsp as csp
import ferrocsp.net as net
from _nats import NatsServer, nats_fixture, spawn  # noqa: F401 - nats_fixture is the fixture 'nats'

pytestmark = pytest.mark.timeout(60)


def name() -> str:
    return "t" + uuid.uuid4().hex[:12]


# --- connect --------------------------------------------------------------------------------
def test_unreachable_server_fails_fast_with_a_clear_error() -> None:
    t0 = time.monotonic()
    with pytest.raises(ConnectionError, match="unreachable") as exc:
        net.connect("nats://127.0.0.1:1", connect_timeout=1.0)
    # It says how to get a server (the feature needs a program ferrocsp does not install).
    assert "nats-server -js" in str(exc.value)
    assert "apt-get install nats-server" in str(exc.value)
    assert time.monotonic() - t0 < 3.0


def test_silent_server_times_out() -> None:
    # A socket that accepts but never speaks NATS: connect must give up, not hang.
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    try:
        t0 = time.monotonic()
        with pytest.raises(ConnectionError):
            net.connect(f"nats://127.0.0.1:{s.getsockname()[1]}", connect_timeout=0.5)
        assert time.monotonic() - t0 < 5.0
    finally:
        s.close()


def test_bad_arguments(nats: NatsServer) -> None:
    with pytest.raises(TypeError):
        net.connect(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="user and password"):
        net.connect(nats.url, user="u")
    with pytest.raises(ValueError, match="connect_timeout"):
        net.connect(nats.url, connect_timeout=0)
    with pytest.raises(ValueError, match="pickle_key"):
        net.connect(nats.url, pickle_key=b"short")
    with net.connect(nats.url) as c:
        with pytest.raises(ValueError, match="invalid networked channel name"):
            c.channel("a.b")
        with pytest.raises(TypeError):
            c.channel("ok", capacity="3")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=">= 0"):
            c.channel("ok", capacity=-1)
        n = name()
        c.channel(n, 2)
        with pytest.raises(ValueError, match="capacity 2"):
            c.channel(n, 3)
        # Another participant must agree too.
        with net.connect(nats.url) as other, pytest.raises(ValueError, match="capacity 2"):
            other.channel(n, 0)


def test_closed_connection_fails_clearly(nats: NatsServer) -> None:
    c = net.connect(nats.url)
    ch = c.channel(name())
    c.close()
    c.close()
    with pytest.raises(ConnectionError, match="closed"):
        ch.write(1)


# --- rendezvous -----------------------------------------------------------------------------
def test_rendezvous_write_blocks_until_read(nats: NatsServer) -> None:
    with net.connect(nats.url) as a, net.connect(nats.url) as b:
        n = name()
        w, r = a.channel(n), b.channel(n)
        with pytest.raises(TimeoutError):
            w.write("nobody", timeout=0.3)
        done = threading.Event()

        def writer() -> None:
            w.write({"k": [1, 2]})
            done.set()

        t = threading.Thread(target=writer)
        t.start()
        # The writer cannot complete before a read: it is still waiting now.
        assert not done.wait(0.3)
        assert r.read(timeout=10) == {"k": [1, 2]}
        assert done.wait(10)
        t.join()
        with pytest.raises(TimeoutError):
            r.read(timeout=0.2)


def test_nowait(nats: NatsServer) -> None:
    with net.connect(nats.url) as c:
        ch = c.channel(name())
        with pytest.raises(csp.WouldBlock):
            ch.write_nowait(1)
        with pytest.raises(csp.WouldBlock):
            ch.read_nowait()


def test_timeout_then_later_value_is_not_lost(nats: NatsServer) -> None:
    with net.connect(nats.url) as c:
        ch = c.channel(name())
        for _ in range(3):
            with pytest.raises(TimeoutError):
                ch.read(timeout=0.05)
        t = threading.Thread(target=ch.write, args=(7,))
        t.start()
        assert ch.read(timeout=10) == 7
        t.join()


WORKER = """
import sys
import ferrocsp.net as net
url, chan, role, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
cap = int(sys.argv[5])
with net.connect(url) as c:
    ch = c.channel(chan, cap)
    if role.startswith("w"):
        with ch.writer() as w:
            for i in range(count):
                w.write(f"{role}-{i}")
        print("done", flush=True)
    else:
        with ch.reader() as r:
            for v in r:
                print(v, flush=True)
"""


@pytest.mark.parametrize("capacity", [0, 5])
def test_any_to_any_exactly_once_across_os_processes(nats: NatsServer, capacity: int) -> None:
    n = name()
    per = 60
    c = net.connect(nats.url)
    # A writer end held until every writer process is done: ends are counted as they are made,
    # so without it a writer finishing before another one started would end the stream.
    hold = c.channel(n, capacity).writer()
    readers = [spawn(WORKER, nats.url, n, f"r{i}", "0", str(capacity)) for i in range(2)]
    writers = [spawn(WORKER, nats.url, n, f"w{i}", str(per), str(capacity)) for i in range(2)]
    for p in writers:
        out, err = p.communicate(timeout=40)
        assert p.returncode == 0, err
        assert out.strip() == "done"
    hold.retire()
    c.close()
    got: list[str] = []
    for p in readers:
        out, err = p.communicate(timeout=40)
        assert p.returncode == 0, err
        got += out.split()
    counts = Counter(got)
    assert set(counts) == {f"w{i}-{k}" for i in range(2) for k in range(per)}
    assert max(counts.values()) == 1


# --- buffered -------------------------------------------------------------------------------
def test_buffered_capacity_is_enforced_across_connections(nats: NatsServer) -> None:
    n = name()
    with net.connect(nats.url) as a, net.connect(nats.url) as b:
        wa, wb = a.channel(n, 3), b.channel(n, 3)
        wa.write(1, timeout=5)
        wb.write(2, timeout=5)
        wa.write(3, timeout=5)
        with pytest.raises(TimeoutError):
            wb.write(4, timeout=0.3)
        with pytest.raises(TimeoutError):
            wa.write(4, timeout=0.3)
        done = threading.Event()

        def blocked() -> None:
            wb.write(4)
            done.set()

        t = threading.Thread(target=blocked)
        t.start()
        assert not done.wait(0.3)
        assert a.channel(n, 3).read(timeout=5) == 1
        assert done.wait(10)
        t.join()
        assert [b.channel(n, 3).read(timeout=5) for _ in range(3)] == [2, 3, 4]


# --- asyncio --------------------------------------------------------------------------------
def test_asyncio_read_write_and_cancel(nats: NatsServer) -> None:
    async def main() -> None:
        with net.connect(nats.url) as c:
            ch = c.channel(name())
            w = asyncio.create_task(ch.awrite("hello"))
            assert await ch.aread(timeout=10) == "hello"
            await w
            with pytest.raises(TimeoutError):
                await ch.aread(timeout=0.1)
            # A cancelled read takes nothing: a later write goes to the next read.
            t = asyncio.create_task(ch.aread())
            await asyncio.sleep(0)
            t.cancel()
            with pytest.raises(asyncio.CancelledError):
                await t
            w = asyncio.create_task(ch.awrite("next"))
            assert await ch.aread(timeout=10) == "next"
            await w

    asyncio.run(main())


def test_iteration_until_writers_retire(nats: NatsServer) -> None:
    with net.connect(nats.url) as c:
        ch = c.channel(name(), 4)
        w = ch.writer()
        r = ch.reader()
        for i in range(3):
            w.write(i)
        w.retire()
        assert list(r) == [0, 1, 2]
        with pytest.raises(csp.ChannelRetired):
            w.write(9)


# --- backends -------------------------------------------------------------------------------
def test_greenlet_and_async_processes_use_network_channels(nats: NatsServer) -> None:
    n, m = name(), name()

    @csp.process
    def relay(inp: csp.Reader, out: csp.Writer) -> None:
        # Blocks on the network through csp.io: the scheduler's other greenlets keep running.
        out.write(inp.read(timeout=30))

    @csp.process
    def sink(inp: csp.Reader) -> object:
        return inp.read()

    @csp.process
    async def echo(inp: csp.Reader, out: csp.Writer) -> None:
        await out.awrite(await inp.aread(timeout=30))

    with net.connect(nats.url) as c:
        a, b = c.channel(n), c.channel(m)
        local = csp.Channel()
        feeder = threading.Thread(target=lambda: a.write("hop", timeout=30))
        feeder.start()
        results = csp.Par(
            relay(a.reader(), local.writer()), sink(local.reader()), backend="greenlet"
        ).run()
        feeder.join()
        assert results == [None, "hop"]
        # A fresh channel: the relay's reader end, the only one of ``a``, retired with it.
        a2 = c.channel(name())
        feeder = threading.Thread(target=lambda: a2.write("async", timeout=30))
        feeder.start()
        h = csp.Spawn(echo(a2.reader(), b.writer()))
        assert b.read(timeout=30) == "async"
        h.join(timeout=30)
        feeder.join()


# --- Ctrl-C ---------------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["ch.read()", "ch.write(1)"])
def test_ctrl_c_interrupts_a_blocked_network_operation(nats: NatsServer, op: str) -> None:
    code = f"""
import ferrocsp.net as net
c = net.connect({nats.url!r})
ch = c.channel({name()!r})
try:
    print("ready", flush=True)  # inside the try: SIGINT may land before the call blocks
    {op}
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""
    rc, out, err = _support.interrupt_child(code)
    assert rc == 0, err
    assert out.split() == ["interrupted"]


@csp.process
def net_reader(ch: csp.Channel) -> object:
    return ch.read()


@csp.process(backend="greenlet")
def net_reader_greenlet(ch: csp.Channel) -> object:
    return ch.read()


@csp.process
async def net_reader_async(ch: csp.Channel) -> object:
    return await ch.aread()


@pytest.mark.parametrize(
    "reader",
    [net_reader, net_reader_greenlet, net_reader_async],
    ids=["thread", "greenlet", "asyncio"],
)
def test_dump_shows_a_process_blocked_on_a_networked_channel(nats: NatsServer, reader: Any) -> None:
    """A process waiting on a networked channel is listed by ``csp.dump()`` (deadlock detection
    does not see that wait; the dump says so)."""
    with net.connect(nats.url) as a, net.connect(nats.url) as b:
        n = name()
        h = csp.Spawn(reader(a.channel(n)))
        wanted = f"blocked on '{n}' read (networked: not seen by deadlock detection)"

        def shown() -> bool:
            out = io.StringIO()
            csp.dump(out)
            return wanted in out.getvalue()

        _support.wait_until(shown, 10.0, wanted)
        b.channel(n).write("done", timeout=10)
        assert h.join(timeout=10) == "done"
        out = io.StringIO()
        csp.dump(out)
        assert n not in out.getvalue()  # the record went with the wait


# --- one channel type -----------------------------------------------------------------------
def test_a_networked_channel_is_a_channel(nats: NatsServer) -> None:
    """``Channel(name=..., net=conn)`` and ``conn.channel(name)`` are one object of the one
    native type; its ends are the native ends; what it cannot do says why at the call."""
    n = name()
    with net.connect(nats.url) as c:
        ch = csp.Channel(2, name=n, net=c)
        assert type(ch) is csp.Channel
        assert c.channel(n, 2) is ch
        assert ch.connection is c
        assert (ch.name, ch.capacity) == (n, 2)
        assert "networked" in repr(ch)
        r, w = ch.reader(), ch.writer()
        assert (type(r), type(w)) == (csp.Reader, csp.Writer)
        assert r.channel is ch
        w.write("x")
        assert r.read(timeout=10) == "x"
        assert csp.Channel(name="local").connection is None
        with pytest.raises(TypeError, match="needs a name"):
            csp.Channel(net=c)
        with pytest.raises(TypeError, match="Connection"):
            csp.Channel(name=n, net=object())
        with pytest.raises(ValueError, match="capacity 2"):
            csp.Channel(3, name=n, net=c)
        assert ch.stats() == csp.ChannelStats(2, 0, 0, 0, 1, 1, False, False)  # test_net_stats
        with pytest.raises(TypeError, match="does not pickle"):
            pickle.dumps(ch)
        with pytest.raises(TypeError, match="does not pickle"):
            pickle.dumps(r)
        w.retire()
        assert w.retired
        with pytest.raises(csp.ChannelRetired):
            w.write(1)
        assert list(r) == []  # every writer end retired: end-of-stream


def test_a_local_end_cannot_travel_over_a_networked_channel(nats: NatsServer) -> None:
    with net.connect(nats.url) as c:
        ch = c.channel(name())
        with pytest.raises(TypeError, match="only ends of networked channels travel"):
            ch.write([csp.Channel().writer()], timeout=1)
