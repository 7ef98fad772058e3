"""Dead participants of networked channels: ends are leased (docs/net.md, "Dead
participants"), so a process killed with SIGKILL gives up its ends within the lease bound,
for the participants waiting now and for later runs; a live process that is merely slow
keeps them. Real SIGKILLs of real processes, with a short lease (``lease_ttl``) so the suite
stays fast."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid

import pytest

import ferrocsp as csp
import ferrocsp.net as net
from _nats import NatsServer, nats_fresh_fixture, spawn  # noqa: F401 - the fixture 'nats_fresh'

pytestmark = pytest.mark.timeout(90)

TTL = 1.0
# The documented bound is 1.5 x the lease plus a few round trips; a read that waits this long
# without learning of the death is stuck (a timeout, not end-of-stream).
WAIT = 15.0

# Makes a writer end, writes argv[4] values, says so, and waits to be killed.
WRITER = """
import sys, time
import ferrocsp.net as net
url, chan, cap, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
c = net.connect(url, lease_ttl=float(sys.argv[5]))
w = c.channel(chan, cap).writer()
for i in range(n):
    w.write(f"v{i}")
print("wrote", flush=True)
time.sleep(120)
"""

# Makes a reader end, says so, and waits to be killed.
READER_END = """
import sys, time
import ferrocsp.net as net
url, chan, cap = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = net.connect(url, lease_ttl=float(sys.argv[4]))
r = c.channel(chan, cap).reader()
print("ready", flush=True)
time.sleep(120)
"""

# A writer that stalls (sleeping, then spinning in Python) for several leases between its
# values: it is slow, not dead, and must keep its end.
SLOW_WRITER = """
import sys, time
import ferrocsp.net as net
url, chan, cap, stall = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
with net.connect(url, lease_ttl=float(sys.argv[5])) as c:
    with c.channel(chan, cap).writer() as w:
        w.write("before")
        time.sleep(stall)
        end = time.monotonic() + stall
        while time.monotonic() < end:
            sum(range(10000))
        w.write("after")
"""


# A reader whose process takes values and never answers (the testing hook `Hooks.hold_acks`
# stops the answer exactly where a crash would): held for a selecting writer's Output guard,
# it receives the committed value, reports it, and waits to be killed.
HELD_READER = """
import sys, time
from ferrocsp.net._connection import Hooks, _connect
url, chan = sys.argv[1], sys.argv[2]
c = _connect(url, hooks=Hooks(hold_acks=True), ack_timeout=1.0, lease_ttl=float(sys.argv[3]))
print(c.channel(chan, 0).read(timeout=30), flush=True)
time.sleep(120)
"""

READ_ONE = """
import sys
import ferrocsp.net as net
with net.connect(sys.argv[1], ack_timeout=1.0) as c:
    print(c.channel(sys.argv[2], 0).read(timeout=30), flush=True)
"""


def _kill(p: subprocess.Popen[str]) -> None:
    os.kill(p.pid, signal.SIGKILL)
    p.communicate(timeout=10)  # reaps it and closes its pipes


def _wait_line(p: subprocess.Popen[str], want: str) -> None:
    assert p.stdout is not None
    line = p.stdout.readline().strip()
    if line != want:
        _, err = p.communicate(timeout=10)
        raise AssertionError(f"child said {line!r}, not {want!r}: {err}")


@pytest.mark.parametrize("capacity", [0, 2])
def test_killed_writer_readers_see_end_of_stream(nats_fresh: NatsServer, capacity: int) -> None:
    n = "l" + uuid.uuid4().hex[:12]
    with net.connect(nats_fresh.url, lease_ttl=TTL) as c:
        r = c.channel(n, capacity).reader()
        got: list[object] = []
        errors: list[BaseException] = []

        def read_all() -> None:
            try:
                while True:
                    got.append(r.read(timeout=WAIT))
            except BaseException as e:  # noqa: BLE001 - checked below
                errors.append(e)

        # Reading before the writer exists, and still blocked in a read when it dies.
        t = threading.Thread(target=read_all)
        t.start()
        w = spawn(WRITER, nats_fresh.url, n, str(capacity), "2", str(TTL))
        _wait_line(w, "wrote")
        _kill(w)
        t.join(WAIT + 10)
        assert not t.is_alive()
        assert got == ["v0", "v1"]
        assert len(errors) == 1, errors
        assert isinstance(errors[0], csp.ChannelRetired), errors
        assert c.channel(n, capacity).stats().writer_ends == 0


@pytest.mark.parametrize("capacity", [0, 2])
def test_one_of_several_writers_killed_the_stream_goes_on(
    nats_fresh: NatsServer, capacity: int
) -> None:
    n = "l" + uuid.uuid4().hex[:12]
    with net.connect(nats_fresh.url, lease_ttl=TTL) as c:
        ch = c.channel(n, capacity)
        r = ch.reader()
        live = ch.writer()
        w = spawn(WRITER, nats_fresh.url, n, str(capacity), "1", str(TTL))
        assert r.read(timeout=WAIT) == "v0"
        _wait_line(w, "wrote")
        _kill(w)
        # While the reader waits, the dead writer's end goes away; the live one keeps the
        # stream open, past the bound.
        deadline = time.monotonic() + WAIT
        while True:
            with pytest.raises(TimeoutError):
                r.read(timeout=TTL)
            if ch.stats().writer_ends == 1:
                break
            assert time.monotonic() < deadline, ch.stats()
        with pytest.raises(TimeoutError):
            r.read(timeout=2 * TTL)
        threading.Thread(target=lambda: live.write("late")).start()
        assert r.read(timeout=WAIT) == "late"
        live.retire()
        with pytest.raises(csp.ChannelRetired):
            r.read(timeout=WAIT)


@pytest.mark.parametrize("capacity", [0, 2])
def test_killed_reader_writers_see_retired(nats_fresh: NatsServer, capacity: int) -> None:
    n = "l" + uuid.uuid4().hex[:12]
    with net.connect(nats_fresh.url, lease_ttl=TTL) as c:
        w = c.channel(n, capacity).writer()
        rd = spawn(READER_END, nats_fresh.url, n, str(capacity), str(TTL))
        _wait_line(rd, "ready")
        _kill(rd)

        # Rendezvous: the write waits for a reader; buffered: it fills the buffer, then waits
        # (a write may also find the reader's end gone already).
        def fill() -> None:
            for i in range(capacity + 1):
                w.write(i, timeout=WAIT)

        with pytest.raises(csp.ChannelRetired):
            fill()


def test_a_later_run_is_not_held_open_by_a_killed_one(nats_fresh: NatsServer) -> None:
    n = "l" + uuid.uuid4().hex[:12]
    # Run 1: a writer fills the buffer and is killed; nobody else is there.
    w = spawn(WRITER, nats_fresh.url, n, "3", "2", str(TTL))
    _wait_line(w, "wrote")
    _kill(w)
    # Run 2: a fresh process reads what was left, then reaches end-of-stream.
    with net.connect(nats_fresh.url, lease_ttl=TTL) as c:
        r = c.channel(n, 3).reader()
        assert [r.read(timeout=WAIT), r.read(timeout=WAIT)] == ["v0", "v1"]
        with pytest.raises(csp.ChannelRetired):
            r.read(timeout=WAIT)


@pytest.mark.parametrize("capacity", [0, 2])
def test_a_slow_live_writer_keeps_its_end(nats_fresh: NatsServer, capacity: int) -> None:
    n = "l" + uuid.uuid4().hex[:12]
    with net.connect(nats_fresh.url, lease_ttl=TTL) as c:
        r = c.channel(n, capacity).reader()
        w = spawn(SLOW_WRITER, nats_fresh.url, n, str(capacity), str(2 * TTL), str(TTL))
        # Its stall (4 leases long) ends in "after", not in end-of-stream.
        assert r.read(timeout=WAIT) == "before"
        assert r.read(timeout=WAIT + 4 * TTL) == "after"
        with pytest.raises(csp.ChannelRetired):
            r.read(timeout=WAIT)
        _, err = w.communicate(timeout=30)
        assert w.returncode == 0, err


def test_lease_ttl_is_validated(nats_fresh: NatsServer) -> None:
    for bad in (0, -1.0, 0.1, float("nan"), float("inf"), 7200.0, "5", True):
        with pytest.raises(ValueError, match="lease_ttl"):
            net.connect(nats_fresh.url, lease_ttl=bad)  # type: ignore[arg-type]


def test_reader_killed_holding_an_output_guards_value_it_goes_to_another(
    nats_fresh: NatsServer,
) -> None:
    n = "l" + uuid.uuid4().hex[:12]
    with net.connect(nats_fresh.url, ack_timeout=1.0, lease_ttl=TTL) as c:
        ch = c.channel(n, 0)
        held = spawn(HELD_READER, nats_fresh.url, n, str(TTL))
        out = csp.Output(ch, "precious")
        chosen: list[object] = []
        t = threading.Thread(target=lambda: chosen.append(csp.Alt(out).select()[0]))
        t.start()
        _wait_line(held, "precious")  # the held reader got the committed value, and dies
        _kill(held)
        # The Alt chose its Output guard; its value is not lost with the dead reader.
        other = spawn(READ_ONE, nats_fresh.url, n)
        got, err = other.communicate(timeout=60)
        assert other.returncode == 0, err
        assert got.strip() == "precious"
        t.join(30)
        assert chosen == [out]
