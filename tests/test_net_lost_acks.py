"""Exactly once when acknowledgements go missing (issue #17), each case made to happen on
purpose with the fault-injecting proxy (tests/_netproxy.py) between one participant and the
server:

- a buffered read whose confirmed ack the server applied but whose reply was lost (the value
  was dropped: nobody ever read it);
- the buffered Alt pump's ack lost on its way to the server, so the server delivers the value
  again after ``ack_wait`` (a second reader read it again);
- a rendezvous reply lost, so the writer re-sends after ``ack_timeout`` and the queue group
  routes the re-send to a reader in another OS process (which delivered it again: the
  de-duplication set was per process).

The claims (crates/ferrocsp-net/src/claim.rs) settle all three: the server decides which
reader takes a value, by its id.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

import ferrocsp as csp
import ferrocsp.net as net
from _nats import NatsServer, nats_fixture, spawn  # noqa: F401 - nats_fixture is the fixture 'nats'
from _netproxy import FaultProxy, Frame, Rule
from ferrocsp.net._connection import Hooks, _connect

pytestmark = pytest.mark.timeout(60)

ACK = 1.0  # ack_timeout of every connection here (also JetStream's ack_wait)


def name() -> str:
    return "l" + uuid.uuid4().hex[:12]


def _hit_once(rule: Rule) -> bool:
    """Waits up to 10 s for ``rule`` to act; whether it acted exactly once."""
    for _ in range(1000):
        if rule.hits:
            break
        time.sleep(0.01)
    return rule.hits == 1


@pytest.fixture(name="proxy")
def proxy_fixture(nats: NatsServer) -> Iterator[FaultProxy]:
    with FaultProxy(nats.port) as p:
        yield p


def test_a_buffered_read_whose_ack_reply_is_lost_keeps_the_value(
    nats: NatsServer, proxy: FaultProxy
) -> None:
    # The server applies the ack (the value leaves the stream); only its reply is lost.
    lost = proxy.rule(lambda f: f.way == "down" and f.about.startswith("$JS.ACK."), "drop")
    n = name()
    with (
        net.connect(proxy.url, ack_timeout=ACK) as c,
        net.connect(nats.url, ack_timeout=ACK) as d,
    ):
        d.channel(n, 4).write("precious")
        assert c.channel(n, 4).read(timeout=10) == "precious"
        assert lost.hits == 1
        with pytest.raises(TimeoutError):
            d.channel(n, 4).read(timeout=3 * ACK)  # and not delivered again


def _drop_first_ack(f: Frame) -> bool:
    return f.way == "up" and f.subject.startswith("$JS.ACK.") and f.payload == b"+ACK"


def test_a_lost_ack_of_the_buffered_alt_pump_delivers_no_duplicate(
    nats: NatsServer, proxy: FaultProxy
) -> None:
    # The pump's ack never reaches the server: after ack_wait the server delivers the value
    # again, here to a plain read of another connection.
    lost = proxy.rule(_drop_first_ack, "drop")
    n = name()
    with (
        net.connect(proxy.url, ack_timeout=ACK) as c,
        net.connect(nats.url, ack_timeout=ACK) as d,
    ):
        ch = c.channel(n, 4)
        got: list[object] = []
        t = threading.Thread(target=lambda: got.append(csp.Alt(ch).select()[1]))
        t.start()
        d.channel(n, 4).write("once")
        t.join(10)
        assert got == ["once"]
        assert lost.hits == 1
        with pytest.raises(TimeoutError):
            d.channel(n, 4).read(timeout=4 * ACK)


# A reader in another OS process: it prints what it reads, one value a line, until nothing came
# for `quiet` seconds.
OTHER_READER = """
import sys
import ferrocsp.net as net
url, chan, quiet = sys.argv[1], sys.argv[2], float(sys.argv[3])
with net.connect(url, ack_timeout=1.0) as c:
    ch = c.channel(chan, 0)
    print("ready", flush=True)
    while True:
        try:
            print(ch.read(timeout=quiet), flush=True)
        except TimeoutError:
            break
"""


def test_a_rendezvous_resend_reaching_another_process_is_not_delivered_again(
    nats: NatsServer, proxy: FaultProxy
) -> None:
    # This process's reader answers the writer "+" through the proxy: that answer is lost, so
    # the writer re-sends after ack_timeout, and by then only the other process reads (this
    # one has what it wanted and left the queue group).
    n = name()
    lost = proxy.rule(
        lambda f: f.way == "up" and f.subject.startswith("_INBOX.") and f.payload == b"+", "drop"
    )
    with (
        net.connect(proxy.url, ack_timeout=ACK) as c,
        net.connect(nats.url, ack_timeout=ACK) as w,
    ):
        got: list[object] = []
        t = threading.Thread(target=lambda: got.append(c.channel(n, 0).read(timeout=10)))
        t.start()
        writer = w.channel(n, 0)
        done = threading.Event()
        errors: list[BaseException] = []

        def write() -> None:
            try:
                writer.write("v1", timeout=30)
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)
            done.set()

        wt = threading.Thread(target=write)
        wt.start()
        t.join(10)
        assert got == ["v1"]
        other = spawn(OTHER_READER, nats.url, n, str(3 * ACK))
        assert other.stdout is not None
        assert other.stdout.readline().strip() == "ready"
        assert done.wait(30)
        wt.join()
        assert not errors
        assert lost.hits == 1
        out, err = other.communicate(timeout=30)
        assert other.returncode == 0, err
        assert out.split() == [], "the re-sent value was delivered twice"


def _pull_ended(f: Frame) -> bool:
    # The server's status ending a pull (no more values, expired): no ack subject.
    return (
        f.way == "down"
        and f.op == "HMSG"
        and not f.reply
        and f.about.startswith("$JS.API.CONSUMER.MSG.NEXT.")
    )


@pytest.mark.parametrize("many", [False, True], ids=["read", "read_many"])
def test_a_pull_the_server_never_answers_is_sent_again(
    nats: NatsServer, proxy: FaultProxy, many: bool
) -> None:
    # nats-server 2.9 was seen to end a pull without any answer when a redelivery fell due as
    # the pull expired (and a pull is lost with its connection): here the status that ends the
    # reader's first pull is lost. The reader pulls again soon after (`PULL_MARGIN`), not only
    # once its read times out, so a value written meanwhile arrives well within the timeout.
    lost = proxy.rule(_pull_ended, "drop")
    n = name()
    with (
        net.connect(proxy.url, ack_timeout=ACK) as c,
        net.connect(nats.url, ack_timeout=ACK) as d,
    ):
        dch = d.channel(n, 4)
        ch = c.channel(n, 4)
        got: list[object] = []
        errors: list[BaseException] = []

        def read() -> None:
            try:
                got.extend(ch.read_many(8, timeout=4.5) if many else [ch.read(timeout=4.5)])
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        t = threading.Thread(target=read)
        t.start()
        assert _hit_once(lost), "the reader's first pull did not end"
        dch.write("late")
        t.join(30)
        assert not errors, errors
        assert got == ["late"]


# --- batches (read_many): the same claims, one per value, all of a batch's in flight at once ---


def _delivery(f: Frame) -> bool:
    return f.way == "down" and f.reply.startswith("$JS.ACK.") and f.op in ("MSG", "HMSG")


def test_a_duplicated_delivery_is_returned_once_by_read_many(
    nats: NatsServer, proxy: FaultProxy
) -> None:
    # The frame that delivers the value reaches the batch reader twice: both copies carry the
    # same ack subject, and the server confirms both acks.
    dup = proxy.rule(_delivery, "dup")
    n = name()
    with (
        net.connect(proxy.url, ack_timeout=ACK) as c,
        net.connect(nats.url, ack_timeout=ACK) as d,
    ):
        d.channel(n, 4).write_many(["only"])
        got = c.channel(n, 4).read_many(8, timeout=10)
        assert dup.hits == 1
        assert got == ["only"], "a duplicated delivery was returned twice"
        with pytest.raises(TimeoutError):
            c.channel(n, 4).read_many(8, timeout=2 * ACK)


def test_read_many_whose_ack_reply_is_lost_keeps_the_value(
    nats: NatsServer, proxy: FaultProxy
) -> None:
    # The server applies the batch reader's ack (the value leaves the stream); only its reply
    # is lost: the value must still be returned, by this read and by no other.
    lost = proxy.rule(lambda f: f.way == "down" and f.about.startswith("$JS.ACK."), "drop")
    n = name()
    with (
        net.connect(proxy.url, ack_timeout=ACK) as c,
        net.connect(nats.url, ack_timeout=ACK) as d,
    ):
        d.channel(n, 4).write_many(["precious", "second"])
        got: list[object] = []
        while len(got) < 2:
            got += c.channel(n, 4).read_many(8, timeout=10)
        assert lost.hits == 1
        assert got == ["precious", "second"]
        with pytest.raises(TimeoutError):
            d.channel(n, 4).read_many(8, timeout=3 * ACK)


def test_a_value_redelivered_after_a_lost_ack_is_not_returned_twice_by_read_many(
    nats: NatsServer, proxy: FaultProxy
) -> None:
    # The batch reader's ack never reaches the server, and its reply is lost with it; after
    # ack_wait the server delivers the value again, to a batch read of another connection.
    lost = proxy.rule(_drop_first_ack, "drop")
    n = name()
    with (
        net.connect(proxy.url, ack_timeout=ACK) as c,
        net.connect(nats.url, ack_timeout=ACK) as d,
    ):
        d.channel(n, 4).write_many(["once"])
        first = c.channel(n, 4).read_many(8, timeout=10)
        assert lost.hits == 1
        assert first == ["once"]
        # The server delivers it again after ack_wait: the claim drops it.
        with pytest.raises(TimeoutError):
            d.channel(n, 4).read_many(8, timeout=4 * ACK)


# --- batches: the claim skipped for a first delivery confirmed in time (fresh.rs) ---
#
# A batch read returns a value without claiming it when the delivery is the message's first
# and its confirmed ack came back within half of the consumer's ack_wait, timed from before
# the pull was sent: the server cannot have delivered it again. Everything else claims.


def _claims(n: str) -> Callable[[Frame], bool]:
    prefix = f"ferrocsp.{n}.c."
    return lambda f: f.way == "up" and f.subject.startswith(prefix)


def _ack_sent(f: Frame) -> bool:
    return f.way == "up" and f.subject.startswith("$JS.ACK.") and f.payload == b"+ACK"


def test_read_many_claims_nothing_when_every_ack_is_confirmed_in_time(
    nats: NatsServer, proxy: FaultProxy
) -> None:
    # No fault, and an ack_wait long enough that even a loaded machine confirms in time.
    n = name()
    claims = proxy.rule(_claims(n), "pass", times=10_000)
    values = [f"v{i}" for i in range(50)]
    with (
        net.connect(nats.url, ack_timeout=20.0) as d,
        net.connect(proxy.url, ack_timeout=20.0) as c,
    ):
        d.channel(n, 64).write_many(values)
        got: list[object] = []
        while len(got) < len(values):
            got += c.channel(n, 64).read_many(64, timeout=10)
        assert got == values
        assert claims.hits == 0, "a first delivery confirmed in time was claimed"
        with pytest.raises(TimeoutError):
            d.channel(n, 64).read_many(8, timeout=0.5)


@pytest.mark.parametrize("bound", [True, False], ids=["timing-bound", "bound-removed"])
def test_a_late_confirmed_ack_makes_read_many_claim(
    nats: NatsServer, proxy: FaultProxy, bound: bool
) -> None:
    # The consumer's ack_wait is ACK (its channel made by `d`); the batch reader `c` has a
    # longer ack_timeout of its own, so its confirmed ack is still answered after the server
    # delivered the value again (to `d`, as its second delivery). With the timing bound, `c`
    # gives up waiting at ACK / 2 and claims: exactly one of them returns the value. With the
    # bound removed (testing hook `fresh_any_time`), `c` takes the late confirmation as proof
    # and returns it unclaimed while `d` claims and returns it too: the duplicate the bound
    # exists to prevent (this case shows the test tells the two apart).
    late = proxy.rule(_ack_sent, "delay", delay=2 * ACK)
    n = name()
    with (
        net.connect(nats.url, ack_timeout=ACK) as d,
        _connect(proxy.url, ack_timeout=10 * ACK, hooks=Hooks(fresh_any_time=not bound)) as c,
    ):
        dch = d.channel(n, 4)
        dch.write_many(["once"])
        got_c: list[object] = []
        t = threading.Thread(target=lambda: got_c.extend(c.channel(n, 4).read_many(8, timeout=20)))
        t.start()
        assert _hit_once(late), "the batch reader's ack was not seen"
        got_d: list[object] = []
        with contextlib.suppress(TimeoutError):
            got_d += dch.read_many(8, timeout=4 * ACK)
        t.join(30)
        assert not t.is_alive()
        if bound:
            assert got_c + got_d == ["once"], (got_c, got_d)
        else:
            assert (got_c, got_d) == (["once"], ["once"]), "the late ack went unnoticed"


def test_a_redelivered_value_is_claimed_by_read_many_even_when_confirmed_at_once(
    nats: NatsServer, proxy: FaultProxy
) -> None:
    # `c`'s acks never reach the server (its claim does: it returns the value); after ack_wait
    # the server delivers the value again to `d`, whose confirmed ack comes back at once but
    # on a second delivery: `d` claims, loses, and returns nothing.
    lost = proxy.rule(_ack_sent, "drop", times=10)
    n = name()
    with (
        net.connect(nats.url, ack_timeout=ACK) as d,
        net.connect(proxy.url, ack_timeout=ACK) as c,
    ):
        d.channel(n, 4).write_many(["once"])
        assert c.channel(n, 4).read_many(8, timeout=10) == ["once"]
        assert lost.hits >= 1
        with pytest.raises(TimeoutError):
            d.channel(n, 4).read_many(8, timeout=4 * ACK)


def _plain_ack_sent(f: Frame) -> bool:
    return _ack_sent(f) and not f.reply


@pytest.mark.parametrize("floor", [True, False], ids=["ack-floor", "floor-skipped"])
def test_an_earlier_ack_lost_in_a_batch_makes_read_many_claim(
    nats: NatsServer, proxy: FaultProxy, floor: bool
) -> None:
    # `c` takes three first deliveries in one pull and acks them: the first two plainly, the
    # last confirmed. The first ack is lost on the way (as with a reconnect, or a route
    # between servers, in between); the last one's answer comes at once, and proves nothing
    # about the first: the consumer's ack floor stays below it, so `c` claims all three (and
    # wins). The server delivers the first again after ack_wait, to `d`, whose claim loses.
    # With the floor not asked for (testing hook `fresh_no_floor`, and the time bound lifted,
    # `fresh_any_time`), `c` returns all three unclaimed and `d` claims the redelivered first
    # value and returns it too: the duplicate the floor exists to prevent (this case shows the
    # test tells the two apart).
    wait = 2 * ACK
    lost = proxy.rule(_plain_ack_sent, "drop")
    n = name()
    with (
        net.connect(nats.url, ack_timeout=wait) as d,
        _connect(
            proxy.url,
            ack_timeout=wait,
            # Without the floor, the time bound is lifted too (`fresh_any_time`): on a loaded
            # machine the confirmed ack may come back after it, and then `c` claims all three
            # for that reason instead (CI saw it), which hides what this case shows.
            hooks=Hooks(fresh_no_floor=not floor, fresh_any_time=not floor),
        ) as c,
    ):
        dch = d.channel(n, 4)
        dch.write_many(["a", "b", "c"])
        got_c = c.channel(n, 4).read_many(8, timeout=10)
        assert lost.hits == 1, "the first plain ack was not seen"
        got_d: list[object] = []
        with contextlib.suppress(TimeoutError):
            got_d += dch.read_many(8, timeout=3 * wait)
        assert got_c == ["a", "b", "c"]
        if floor:
            assert got_d == [], "a value whose ack was lost was returned twice"
        else:
            assert got_d == ["a"], "the lost ack went unnoticed"


def _nth_pub_ack(n: str, k: int) -> Callable[[Frame], bool]:
    """Matches the server's answer to the ``k``-th (from 1) value publish of channel ``n``."""
    prefix = f"ferrocsp.{n}.b."
    seen = [0]

    def match(f: Frame) -> bool:
        if f.way != "down" or not f.about.startswith(prefix):
            return False
        seen[0] += 1
        return seen[0] == k

    return match


@pytest.mark.parametrize("k", [3, 10], ids=["mid-round", "last-of-round"])
def test_a_lost_pub_ack_in_a_batch_write_stores_each_value_once_in_order(
    nats: NatsServer, proxy: FaultProxy, k: int
) -> None:
    # The server stores value k of a 10-value round (room for all of them) but its answer is
    # lost. Mid-round, the values after it are stored behind it (each names the one before),
    # which proves it stored; last of the round, it is sent again with its id and the server
    # drops the copy. Either way: written once, in order, and the batch reports success.
    n = name()
    lost = proxy.rule(_nth_pub_ack(n, k), "drop")
    values = [f"v{i}" for i in range(10)]
    with (
        net.connect(proxy.url, ack_timeout=ACK) as c,
        net.connect(nats.url, ack_timeout=ACK) as d,
    ):
        c.channel(n, 16).write_many(values, timeout=30)
        assert lost.hits == 1, "the publish answer was not dropped"
        got: list[object] = []
        while len(got) < len(values):
            got += d.channel(n, 16).read_many(16, timeout=10)
        assert got == values
        with pytest.raises(TimeoutError):
            d.channel(n, 16).read_many(8, timeout=0.5)
