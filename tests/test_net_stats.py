"""``stats()`` of a networked channel: one answer for the whole channel, whoever asks.

Ends, poison and the buffered count come from the server (exact); waiting readers and writers
from a survey of every connection that has the channel open (docs/net.md, "stats()"). These
tests ask on one connection about operations that wait on others, in this process and in
another OS process, so a count that were only the asker's own would fail them."""

from __future__ import annotations

import threading
import uuid

import pytest

import ferrocsp as csp
import ferrocsp.net as net
from _nats import NatsServer, nats_fixture, spawn  # noqa: F401 - nats_fixture is the fixture 'nats'
from _support import wait_until

pytestmark = pytest.mark.timeout(60)


def name() -> str:
    return "s" + uuid.uuid4().hex[:12]


def test_waiting_parties_of_other_connections_are_counted(nats: NatsServer) -> None:
    n = name()
    with net.connect(nats.url) as asker, net.connect(nats.url) as other:
        mine, theirs = asker.channel(n), other.channel(n)
        assert mine.stats() == csp.ChannelStats(0, 0, 0, 0, 0, 0, False, False)
        got: list[object] = []
        readers = [threading.Thread(target=lambda: got.append(theirs.read(timeout=30)))]
        readers.append(threading.Thread(target=lambda: got.append(theirs.read(timeout=30))))
        for t in readers:
            t.start()
        wait_until(lambda: mine.stats().readers_waiting == 2, what="2 readers on the other")
        assert mine.stats().writers_waiting == 0
        mine.write(1)
        mine.write(2)
        for t in readers:
            t.join(30)
        assert sorted(got) == [1, 2]  # type: ignore[type-var]
        wait_until(lambda: mine.stats().readers_waiting == 0, what="no reader left")

        writer = threading.Thread(target=theirs.write, args=("w",), kwargs={"timeout": 30})
        writer.start()
        wait_until(lambda: mine.stats().writers_waiting == 1, what="a writer on the other")
        assert mine.read(timeout=10) == "w"
        writer.join(30)
        wait_until(lambda: mine.stats().writers_waiting == 0, what="the writer done")


def test_ends_poison_and_buffered_are_the_servers(nats: NatsServer) -> None:
    n = name()
    with net.connect(nats.url) as asker, net.connect(nats.url) as other:
        mine, theirs = asker.channel(n, 3), other.channel(n, 3)
        r, w1, w2 = theirs.reader(), theirs.writer(), mine.writer()
        w1.write("a")
        w2.write("b")
        s = mine.stats()  # exact: counted on the server before the calls returned
        assert (s.capacity, s.buffered, s.reader_ends, s.writer_ends) == (3, 2, 1, 2)
        assert (s.poisoned, s.retired) == (False, False)
        assert r.read(timeout=10) in ("a", "b")
        assert mine.stats().buffered == 1  # the read returned after the server had its ack
        w1.retire()
        w2.retire()
        s = theirs.stats()
        assert (s.writer_ends, s.retired, s.buffered) == (0, True, 1)
        theirs.poison()
        s = mine.stats()
        assert (s.poisoned, s.buffered) == (True, 0)  # unreachable, as a local poison drops them


def test_alts_count_as_waiting_readers_and_writers(nats: NatsServer) -> None:
    n_in, n_out = name(), name()
    with net.connect(nats.url) as asker, net.connect(nats.url) as other:
        a, b = other.channel(n_in), other.channel(n_out, 1)
        b.write("full")  # the Output guard's buffer is full: it waits
        alt = csp.Alt(a, csp.Output(b, "late"))
        done = threading.Event()
        result: list[object] = []

        def select() -> None:
            result.append(alt.select())
            done.set()

        threading.Thread(target=select, daemon=True).start()
        ma, mb = asker.channel(n_in), asker.channel(n_out, 1)
        wait_until(lambda: ma.stats().readers_waiting == 1, what="the Alt reads a")
        wait_until(lambda: mb.stats().writers_waiting == 1, what="the Alt writes b")
        ma.write("x")
        assert done.wait(30)
        assert result[0] == (a, "x")
        wait_until(lambda: mb.stats().writers_waiting == 0, what="the Alt withdrew")


READER = """
import sys
import ferrocsp.net as net
with net.connect(sys.argv[1]) as c:
    ch = c.channel(sys.argv[2])
    print("ready", flush=True)
    print(ch.read(timeout=30), flush=True)
"""


def test_a_reader_in_another_os_process_is_counted(nats: NatsServer) -> None:
    n = name()
    child = spawn(READER, nats.url, n)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        with net.connect(nats.url) as c:
            ch = c.channel(n)
            wait_until(lambda: ch.stats().readers_waiting == 1, what="the child's read")
            ch.write("hi", timeout=10)
            out, err = child.communicate(timeout=30)
            assert out.strip() == "hi", err
            assert ch.stats().readers_waiting == 0  # the child is gone
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
