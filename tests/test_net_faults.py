"""Networked channels under faults: a reader killed (SIGKILL) after receiving a value but
before acknowledging it (the value is delivered again, exactly once overall), and the server
restarted mid-stream (JetStream keeps buffered values; clients reconnect) or gone for good (a
clear error, no hang)."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid

import pytest

import ferrocsp.net as net
from _nats import NatsServer, nats_fresh_fixture, spawn  # noqa: F401 - the fixture 'nats_fresh'

pytestmark = pytest.mark.timeout(90)

# Reads one value without ever acknowledging it (the testing hook `Hooks.hold_acks` stops acks
# exactly where a crash would), reports it, then waits to be killed.
HOLDER = """
import sys, time
from ferrocsp.net._connection import Hooks, _connect
url, chan, cap = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = _connect(url, hooks=Hooks(hold_acks=True), ack_timeout=1.0)
print(c.channel(chan, cap).read(timeout=30), flush=True)
time.sleep(60)
"""

READER = """
import sys
import ferrocsp.net as net
url, chan, cap, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
with net.connect(url, ack_timeout=1.0) as c:
    ch = c.channel(chan, cap)
    for _ in range(n):
        print(ch.read(timeout=30), flush=True)
"""


@pytest.mark.parametrize("capacity", [0, 2])
def test_reader_killed_before_ack_the_value_is_redelivered_once(
    nats_fresh: NatsServer, capacity: int
) -> None:
    n = "f" + uuid.uuid4().hex[:12]
    with net.connect(nats_fresh.url, ack_timeout=1.0) as c:
        ch = c.channel(n, capacity)
        holder = spawn(HOLDER, nats_fresh.url, n, str(capacity))
        done = threading.Event()
        errors: list[BaseException] = []

        def write() -> None:
            try:
                ch.write("precious")
                ch.write("after")
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)
            done.set()

        t = threading.Thread(target=write)
        t.start()
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "precious"
        os.kill(holder.pid, signal.SIGKILL)
        holder.communicate(timeout=10)  # reaps it and closes its pipes
        reader = spawn(READER, nats_fresh.url, n, str(capacity), "2")
        out, err = reader.communicate(timeout=60)
        assert reader.returncode == 0, err
        # Exactly once each; a redelivered value may come after later ones (buffered).
        assert sorted(out.split()) == ["after", "precious"]
        assert done.wait(30)
        t.join()
        assert not errors
        with pytest.raises(TimeoutError):
            ch.read(timeout=1.5)  # nothing left over (no duplicate after ack_wait)


def test_server_restart_keeps_buffered_values(nats_fresh: NatsServer) -> None:
    n = "f" + uuid.uuid4().hex[:12]
    with net.connect(nats_fresh.url, reconnect_timeout=30) as c:
        ch = c.channel(n, 10)
        for i in range(5):
            ch.write(i, timeout=10)
        nats_fresh.restart()
        # The client reconnects by itself; the values were stored on disk by JetStream.
        assert [ch.read(timeout=30) for _ in range(5)] == [0, 1, 2, 3, 4]
        ch.write("more", timeout=30)
        assert ch.read(timeout=30) == "more"


@pytest.mark.parametrize("capacity", [0, 3])
def test_server_gone_fails_with_a_clear_error(nats_fresh: NatsServer, capacity: int) -> None:
    n = "f" + uuid.uuid4().hex[:12]
    with net.connect(nats_fresh.url, reconnect_timeout=1.0, ack_timeout=1.0) as c:
        ch = c.channel(n, capacity)
        nats_fresh.stop()
        t0 = time.monotonic()
        with pytest.raises(ConnectionError, match="could not reconnect"):
            ch.write(1)
        with pytest.raises(ConnectionError, match="could not reconnect"):
            ch.read()
        assert time.monotonic() - t0 < 20
