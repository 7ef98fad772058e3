"""Output guards on *buffered* networked channels (a slot reserved with a placeholder, then
filled or given back: crates/ferrocsp-net/src/reserve.rs). An Output guard fires only when the
buffer has room for its value, its value is stored iff it fired, a reservation is never read
as a value, and one left behind by a process that died after its Alt chose (before the value
left) frees its slot after ``ack_timeout``. Against a real nats-server; readers in threads
(own connections) and in other OS processes. Poison, retired readers and an end in an unchosen
Output run for both capacities in test_net_alt_output.py."""

from __future__ import annotations

import ast
import json
import logging
import os
import signal
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import ferrocsp as csp
import ferrocsp.net as net
from _nats import (  # noqa: F401 - nats_fixture is the fixture "nats"
    NatsServer,
    nats_fixture,
    raw_request,
    spawn,
)
from _support import Background

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def no_message_rejected(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """A reservation is never handed to the codec (it would be logged as rejected)."""
    with caplog.at_level(logging.WARNING, logger="ferrocsp.net"):
        yield
    assert [r.getMessage() for r in caplog.records if r.name.startswith("ferrocsp.net")] == []


def name() -> str:
    return "ob" + uuid.uuid4().hex[:12]


def drain(ch: Any) -> list[Any]:
    """Everything buffered in ``ch`` now (values written earlier are on the server already)."""
    got = []
    while True:
        try:
            got.append(ch.read(timeout=1.0))
        except TimeoutError:
            return got


READ_ONE = """
import sys
import ferrocsp.net as net
url, chan, cap = sys.argv[1], sys.argv[2], int(sys.argv[3])
with net.connect(url) as c:
    print(repr(c.channel(chan, cap).read(timeout=30)), flush=True)
"""


def test_output_fires_when_the_buffer_has_room_and_its_value_is_read_once(
    nats: NatsServer,
) -> None:
    n = name()
    with net.connect(nats.url) as c:
        ch = c.channel(n, 2)
        out = csp.Output(ch, {"k": [1, 2]})
        # No reader anywhere: room in the buffer is enough.
        g, v = csp.Alt(out, csp.Timeout(30)).select()
        assert (g, v) == (out, None)
        p = spawn(READ_ONE, nats.url, n, "2")
        got, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
        assert got.strip() == "{'k': [1, 2]}"
        assert drain(ch) == []


def test_a_full_buffer_keeps_the_output_from_firing_until_a_read_frees_a_slot(
    nats: NatsServer,
) -> None:
    n = name()
    with net.connect(nats.url) as c, net.connect(nats.url) as r:
        ch, rch = c.channel(n, 1), r.channel(n, 1)
        ch.write("old")
        g, _ = csp.Alt(csp.Output(ch, "never"), csp.Timeout(0.3)).select()
        assert isinstance(g, csp.Timeout)
        out = csp.Output(ch, "new")
        sel = Background(lambda: csp.Alt(out, csp.Timeout(30)).select())
        assert rch.read(timeout=30) == "old"
        assert sel.join() == (out, None)
        assert drain(rch) == ["new"]


def test_a_local_input_chosen_instead_sends_nothing_and_gives_the_slot_back(
    nats: NatsServer,
) -> None:
    n = name()
    with net.connect(nats.url) as c, net.connect(nats.url) as r:
        ch, rch = c.channel(n, 1), r.channel(n, 1)
        local = csp.Channel(1)
        for i in range(20):
            local.write(i)
            g, v = csp.Alt(local, csp.Output(ch, "never")).pri_select()
            assert (g, v) == (local, i)
        # Every reservation was given back: the one slot takes a plain write at once.
        ch.write("plain", timeout=5)
        assert drain(rch) == ["plain"]


READ_TO_NONE = """
import sys
import ferrocsp.net as net
url, chan, cap = sys.argv[1], sys.argv[2], int(sys.argv[3])
with net.connect(url) as c:
    ch = c.channel(chan, cap)
    print("ready", flush=True)
    while (v := ch.read(timeout=30)) is not None:
        print(repr(v), flush=True)
"""


def _contend(nats: NatsServer, capacity: int, rounds: int, writers: int) -> None:
    """``writers`` threads (own connections) each select ``rounds`` times between an Output of
    a unique value on one buffered channel and a local input fed now and then, while two
    readers in other OS processes read the channel. Every value whose Output fired is read
    exactly once, and no other."""
    n = name()
    feeds = rounds // 3
    with net.connect(nats.url) as c:
        ch = c.channel(n, capacity)
        readers = [spawn(READ_TO_NONE, nats.url, n, str(capacity)) for _ in range(2)]
        for p in readers:
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "ready"
        fired: list[list[Any]] = [[] for _ in range(writers)]

        def writer(w: int) -> None:
            local = csp.Channel()
            feeder = Background(lambda: [local.write(i, timeout=30) for i in range(feeds)])
            got_local = 0
            with net.connect(nats.url) as wc:
                wch = wc.channel(n, capacity)
                for i in range(rounds):
                    out = csp.Output(wch, [w, i])
                    g, _ = csp.Alt(out, local).select()
                    if g is out:
                        fired[w].append([w, i])
                    else:
                        got_local += 1
            while got_local < feeds:
                local.read(timeout=30)
                got_local += 1
            feeder.join()

        for wt in [Background(writer, w) for w in range(writers)]:
            wt.join()
        for _ in readers:
            ch.write(None, timeout=30)  # after every fired value: each reader stops at one
        got = []
        for p in readers:
            out, err = p.communicate(timeout=60)
            assert p.returncode == 0, err
            got += [ast.literal_eval(line) for line in out.split("\n") if line]
        sent = sorted(v for f in fired for v in f)
        assert len(sent) >= (rounds - feeds) * writers
        assert sorted(got) == sent
        assert drain(ch) == []


def test_output_stored_iff_chosen_under_contention(nats: NatsServer) -> None:
    _contend(nats, capacity=2, rounds=40, writers=3)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_output_stored_iff_chosen_under_contention_long(nats: NatsServer) -> None:
    _contend(nats, capacity=3, rounds=400, writers=4)


def test_both_sides_selecting(nats: NatsServer) -> None:
    n = name()
    with net.connect(nats.url) as c, net.connect(nats.url) as r:
        ch, rin = c.channel(n, 1), r.channel(n, 1).reader()
        for i in range(10):
            reader = Background(lambda: csp.Alt(rin, csp.Timeout(30)).select())
            out = csp.Output(ch.writer(), ("both", i))
            g, _ = csp.Alt(csp.Timeout(30), out).select()
            assert g is out
            assert reader.join() == (rin, ("both", i))


# Chooses an Output guard on a buffered channel with room, but sends nothing (the testing
# hook `Hooks.drop_commits` stops the commit exactly where a crash would leave it: the slot is
# reserved, the value never left), says so, then waits to be killed.
CHOOSES_AND_DIES = """
import sys, time
import ferrocsp as csp
from ferrocsp.net._connection import Hooks, _connect
url, chan = sys.argv[1], sys.argv[2]
c = _connect(url, hooks=Hooks(drop_commits=True), ack_timeout=1.0)
out = csp.Output(c.channel(chan, 1), "lost")
assert csp.Alt(out, csp.Timeout(30)).select()[0] is out
print("chose", flush=True)
time.sleep(60)
"""


def test_a_slot_reserved_by_a_process_killed_after_choosing_is_freed(nats: NatsServer) -> None:
    n = name()
    # Readers here expire a reservation after 3 s (their ack_timeout).
    with net.connect(nats.url, ack_timeout=3.0) as c:
        ch = c.channel(n, 1)
        p = spawn(CHOOSES_AND_DIES, nats.url, n)
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "chose"
        os.kill(p.pid, signal.SIGKILL)
        p.communicate(timeout=10)
        # The reservation is not a value, and it fills the one slot until a reader finds it
        # older than ack_timeout.
        with pytest.raises(TimeoutError):
            ch.read(timeout=0.3)
        with pytest.raises(TimeoutError):
            ch.write("waits", timeout=0.2)
        writer = Background(ch.write, "after", timeout=30)
        assert ch.read(timeout=30) == "after"  # never the placeholder, never "lost"
        writer.join()
        assert drain(ch) == []


def test_a_stream_with_the_old_one_subject_layout_is_refused_by_name(nats: NatsServer) -> None:
    n = name()
    config = {
        "name": f"FERROCSP_{n}",
        "subjects": [f"ferrocsp.{n}.b"],
        "retention": "workqueue",
        "max_msgs": 2,
        "discard": "new",
        "storage": "file",
    }
    reply = raw_request(
        nats.url, f"$JS.API.STREAM.CREATE.FERROCSP_{n}", json.dumps(config).encode()
    )
    assert b'"error"' not in reply, reply
    with net.connect(nats.url) as c, pytest.raises(RuntimeError, match=f"FERROCSP_{n}.*delete"):
        c.channel(n, 2)
