"""Output guards on networked channels: an Output guard that fires delivered its value to
exactly one reader; one that does not fire delivered it to nobody. Against a real nats-server,
with readers in threads (own connections), in another OS process, and selecting themselves."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from typing import Any

import pytest

import ferrocsp as csp
import ferrocsp.net as net
from _kit import Kit
from _nats import NatsServer, nats_fixture, spawn  # noqa: F401 - nats_fixture is the fixture 'nats'
from _support import Background, wait_until

pytestmark = pytest.mark.timeout(60)


def name() -> str:
    return "o" + uuid.uuid4().hex[:12]


READ_ONE = """
import sys
import ferrocsp.net as net
url, chan = sys.argv[1], sys.argv[2]
with net.connect(url) as c:
    ch = c.channel(chan)
    print("ready", flush=True)
    print(repr(ch.read(timeout=30)), flush=True)
"""


def test_output_guard_to_a_plain_reader_in_another_process(nats: NatsServer) -> None:
    n = name()
    with net.connect(nats.url) as c:
        ch = c.channel(n)
        p = spawn(READ_ONE, nats.url, n)
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "ready"
        out = csp.Output(ch, {"k": [1, 2]})
        g, v = csp.Alt(out, csp.Timeout(30)).select()
        assert (g, v) == (out, None)
        got, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
        assert got.strip() == "{'k': [1, 2]}"


def test_local_input_fires_and_the_network_value_goes_nowhere(nats: NatsServer) -> None:
    n = name()
    with net.connect(nats.url) as c, net.connect(nats.url) as r:
        ch, local = c.channel(n), csp.Channel()
        local_in = local.reader()
        t = threading.Thread(target=local.write, args=("near",))
        t.start()
        # No networked reader: only the local input can fire.
        g, v = csp.Alt(csp.Output(ch, "far"), local_in).select()
        t.join()
        assert (g, v) == (local_in, "near")
        with pytest.raises(TimeoutError):
            r.channel(n).read(timeout=0.5)


def test_output_fires_when_a_reader_waits_and_the_local_input_does_not(nats: NatsServer) -> None:
    n = name()
    with net.connect(nats.url) as c, net.connect(nats.url) as r:
        ch, local = c.channel(n), csp.Channel()
        reader = Background(r.channel(n).read, timeout=30)
        out = csp.Output(ch, 42)
        g, _ = csp.Alt(local, out).select()
        assert g is out
        assert reader.join() == 42


def test_timeout_fires_without_a_reader_and_nothing_is_sent(nats: NatsServer) -> None:
    n = name()
    with net.connect(nats.url) as c, net.connect(nats.url) as r:
        ch = c.channel(n)
        g, _ = csp.Alt(csp.Output(ch, "late"), csp.Timeout(0.3)).select()
        assert isinstance(g, csp.Timeout)
        with pytest.raises(TimeoutError):
            r.channel(n).read(timeout=0.5)
        # The channel still works both ways.
        reader = Background(r.channel(n).read, timeout=30)
        out = csp.Output(ch, "now")
        assert csp.Alt(out, csp.Timeout(30)).select()[0] is out
        assert reader.join() == "now"


def test_both_sides_selecting(nats: NatsServer) -> None:
    n = name()
    with net.connect(nats.url) as c, net.connect(nats.url) as r:
        ch, rch = c.channel(n), r.channel(n)
        rin = rch.reader()
        reader = Background(lambda: csp.Alt(rin, csp.Timeout(30)).select())
        out = csp.Output(ch.writer(), ("both", 1))
        g, _ = csp.Alt(csp.Timeout(30), out).select()
        assert g is out
        assert reader.join() == (rin, ("both", 1))


def _contend(nats: NatsServer, selecting_reader: bool, rounds: int) -> None:
    """A writer's Alt offers i on the network channel against a local input fed now and then;
    a reader on another connection takes what comes (plainly, or itself selecting against a
    local input of its own). Every value whose Output fired is read exactly once; no other."""
    n = name()
    with net.connect(nats.url) as c, net.connect(nats.url) as r:
        ch, rch = c.channel(n), r.channel(n)
        w_local, r_local = csp.Channel(), csp.Channel()
        got: list[Any] = []
        stop = csp.Channel()

        def reader() -> None:
            alt = csp.Alt(rch, r_local, stop)
            while True:
                if selecting_reader:
                    g, v = alt.select()
                    if g is stop:
                        return
                    if g is rch:
                        got.append(v)
                else:
                    try:
                        got.append(rch.read(timeout=0.2))
                    except TimeoutError:
                        try:
                            stop.read_nowait()
                            return
                        except csp.WouldBlock:
                            pass

        def feeder() -> None:
            for i in range(rounds // 3):
                w_local.write(("local", i))
                if selecting_reader:
                    r_local.write(i)

        rt = threading.Thread(target=reader)
        ft = threading.Thread(target=feeder)
        rt.start()
        ft.start()
        fired: list[int] = []
        locals_: list[Any] = []
        for i in range(rounds):
            out = csp.Output(ch, i)
            g, v = csp.Alt(out, w_local).select()
            if g is out:
                fired.append(i)
            else:
                locals_.append(v)
        # What the feeder has not managed to hand over yet.
        while len(locals_) < rounds // 3:
            locals_.append(w_local.read(timeout=30))
        ft.join(timeout=30)
        stop.write(None, timeout=30)
        rt.join(timeout=30)
        assert sorted(got) == fired
        # Only rounds // 3 local values exist: the Output guard fired every other time.
        assert len(fired) >= rounds - rounds // 3
        assert sorted(locals_) == [("local", i) for i in range(rounds // 3)]


@pytest.mark.parametrize("selecting_reader", [False, True], ids=["plain-reader", "alt-reader"])
def test_output_delivered_iff_chosen_under_contention(
    nats: NatsServer, selecting_reader: bool
) -> None:
    _contend(nats, selecting_reader, 60)


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("selecting_reader", [False, True], ids=["plain-reader", "alt-reader"])
def test_output_delivered_iff_chosen_under_contention_long(
    nats: NatsServer, selecting_reader: bool
) -> None:
    _contend(nats, selecting_reader, 1000)


def fill(ch: Any) -> None:
    """Keeps an Output guard on ``ch`` from firing: a rendezvous channel without a reader
    already cannot; a buffered one is filled."""
    if ch.capacity:
        for _ in range(ch.capacity):
            ch.write("fills it")


CAPACITIES = pytest.mark.parametrize("capacity", [0, 1], ids=["rendezvous", "buffered"])


@CAPACITIES
def test_poison_wakes_a_blocked_output_alt(nats: NatsServer, capacity: int) -> None:
    n = name()
    with net.connect(nats.url) as c, net.connect(nats.url) as other:
        ch = c.channel(n, capacity)
        fill(ch)
        sel = Background(lambda: csp.Alt(csp.Output(ch, 1), csp.Channel()).select())
        other.channel(n, capacity).poison()
        with pytest.raises(csp.ChannelPoisoned):
            sel.join()
        # Chosen at once when already poisoned, and never delivered.
        with pytest.raises(csp.ChannelPoisoned):
            csp.Alt(csp.Output(ch, 2), csp.Timeout(30)).select()


@CAPACITIES
def test_retired_readers_remove_the_output_guard(nats: NatsServer, capacity: int) -> None:
    n = name()
    with net.connect(nats.url) as c, net.connect(nats.url) as other:
        ch = c.channel(n, capacity)
        other.channel(n, capacity).reader().retire()
        if capacity:
            # The retire reaches this connection by broadcast; a buffered write (or Output)
            # made before it arrives still stores its value, as between local threads a write
            # just before the retire would. (A rendezvous Output needs a reader anyway.)
            wait_until(lambda: ch._net_core.status()[2], what="the readers' retire seen here")
        g, _ = csp.Alt(csp.Output(ch, 1), csp.Timeout(0.2)).select()
        assert isinstance(g, csp.Timeout)
        with pytest.raises(csp.ChannelRetired):
            csp.Alt(csp.Output(ch, 1)).select()


def test_retire_wakes_a_blocked_output_alt(nats: NatsServer) -> None:
    n = name()
    with net.connect(nats.url) as c, net.connect(nats.url) as other:
        ch = c.channel(n)
        r = other.channel(n).reader()
        sel = Background(lambda: csp.Alt(csp.Output(ch, 1)).select())
        r.retire()
        with pytest.raises(csp.ChannelRetired):
            sel.join()


@CAPACITIES
def test_an_end_in_an_unchosen_output_is_not_counted(nats: NatsServer, capacity: int) -> None:
    n, data = name(), name()
    with net.connect(nats.url) as c:
        ch, d = c.channel(n, capacity), c.channel(data, 1)
        fill(ch)
        r, w = d.reader(), d.writer()
        g, _ = csp.Alt(csp.Output(ch, {"end": w}), csp.Timeout(0.2)).select()
        assert isinstance(g, csp.Timeout)
        w.write("last")
        w.retire()  # the only writer end again: the stream ends after "last"
        assert list(r) == ["last"]


def test_a_timeout_counts_from_the_first_start_when_the_alt_selects_again(
    nats: NatsServer,
) -> None:
    """A rejected message makes a waiting Alt select again; its Timeout keeps its deadline."""
    n = name()
    with net.connect(nats.url) as c, net.connect(nats.url) as w:
        rin = c.channel(n).reader()
        t = csp.Timeout(2.0)
        sel = Background(lambda: (time.monotonic(), csp.Alt(rin, t).select(), time.monotonic()))
        # Late in the Alt's window (a placement, not a synchronisation: the garbage write
        # completes only once the waiting Alt took it, whenever that is).
        time.sleep(1.2)
        w.channel(n)._net_core.write(b"\x01garbage", 30)
        t0, chosen, t1 = sel.join()
        assert chosen == (t, None)
        # From the first start, not from the second (which would end at >= 3.2 s).
        assert t1 - t0 < 3.0


# Reads one value without ever acknowledging it (the testing hook `Hooks.hold_acks` stops the
# reply exactly where a crash would), reports it, then waits to be killed.
HOLDER = """
import sys, time
from ferrocsp.net._connection import Hooks, _connect
url, chan = sys.argv[1], sys.argv[2]
c = _connect(url, hooks=Hooks(hold_acks=True), ack_timeout=1.0)
print(c.channel(chan).read(timeout=30), flush=True)
time.sleep(60)
"""


def test_reader_killed_after_receiving_a_chosen_output_gets_it_redelivered(
    nats: NatsServer,
) -> None:
    n = name()
    with net.connect(nats.url, ack_timeout=1.0) as c:
        ch = c.channel(n)
        holder = spawn(HOLDER, nats.url, n)
        out = csp.Output(ch, "precious")
        sel = Background(lambda: csp.Alt(out, csp.Timeout(30)).select())
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "precious"
        os.kill(holder.pid, signal.SIGKILL)
        holder.communicate(timeout=10)  # reaps it and closes its pipes
        reader = spawn(READ_ONE, nats.url, n)
        got, err = reader.communicate(timeout=60)
        assert reader.returncode == 0, err
        assert got.split() == ["ready", "'precious'"]
        # The guard fired, and returned only once a living reader had the value.
        assert sel.join() == (out, None)
        with pytest.raises(TimeoutError):
            ch.read(timeout=1.5)  # nothing left over


def test_output_on_a_reader_end_is_a_type_error(nats: NatsServer) -> None:
    with net.connect(nats.url) as c, pytest.raises(TypeError, match="Reader"):
        csp.Output(c.channel(name()).reader(), 1)


# --- every backend (the Alt's process) ---------------------------------------------------------
async def offers(k: Kit, out: csp.Output, never: csp.Channel) -> Any:
    g, _ = await k.select(csp.Alt(never, out))
    return g is out


async def selects_input(k: Kit, rin: Any) -> Any:
    return await k.select(csp.Alt(rin, csp.Timeout(30)))


@pytest.mark.parametrize("capacity", [0, 1])
def test_output_guard_on_every_backend(k: Kit, nats: NatsServer, capacity: int) -> None:
    """Rendezvous, and buffered (test_net_alt_output_buffered.py has the rest of those)."""
    n = name()
    with net.connect(nats.url) as c, net.connect(nats.url) as r:
        ch = c.channel(n, capacity)
        rin, w = r.channel(n, capacity).reader(), ch.writer()  # held: a dropped end retires
        reader = Background(rin.read, timeout=30)
        assert k.run(offers, csp.Output(w, [k.backend]), csp.Channel())
        assert reader.join() == [k.backend]
        # The reader selecting on this backend, the writer selecting in a thread.
        sel = k.spawn(selects_input, rin)
        out = csp.Output(ch, "x")
        assert csp.Alt(out, csp.Timeout(30)).select()[0] is out
        assert sel.join() == (rin, "x")
