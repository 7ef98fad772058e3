"""A participant learns a poison or a retirement even when its first read of the channel's
state after the notice fails.

A change of a networked channel's state (poison, the last end of a kind retired) is written to
the KV bucket and announced once on the channel's ``ctl`` subject; each participant then reads
the keys again (crates/ferrocsp-net/src/chan.rs). The notice is the only wake-up: a read of the
keys that failed (a reply lost, or slower than ``ack_timeout`` on a loaded server) used to
leave the old state for good, and a writer offering in a loop (the soak's ``Alt`` of an
``Output`` and a ``Timeout``) or a blocked read never ended. Here the proxy drops exactly that
reply; the participant must read the state again until it succeeds.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator

import pytest

import ferrocsp as csp
import ferrocsp.net as net
from _nats import NatsServer, nats_fixture  # noqa: F401 - nats_fixture is the fixture 'nats'
from _netproxy import FaultProxy, Frame

pytestmark = pytest.mark.timeout(60)

ACK = 0.5  # ack_timeout (and request timeout) of the participant behind the proxy
#: How long the participant may take to learn the change: the lost read's timeout plus the
#: retry, with room for a loaded machine; the waits below are twice as long.
BOUND = 10.0


def name() -> str:
    return "s" + uuid.uuid4().hex[:12]


@pytest.fixture(name="proxy")
def proxy_fixture(nats: NatsServer) -> Iterator[FaultProxy]:
    with FaultProxy(nats.port) as p:
        yield p


def state_reply(chan: str, key: str) -> Callable[[Frame], bool]:
    """Matches the server's answer to a direct get of the channel's ``key`` (``poison``,
    ``w``, ``r``) in the KV bucket."""
    subject = f"$JS.API.DIRECT.GET.KV_FERROCSP.$KV.FERROCSP.{chan}.{key}"
    return lambda f: f.way == "down" and f.about == subject


def outcome(fn: Callable[[], object]) -> tuple[threading.Thread, list[BaseException]]:
    """Runs ``fn`` in a thread; its exception (if any) lands in the list."""
    got: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 - the test looks at it
            got.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, got


def test_a_poison_whose_state_read_is_lost_still_reaches_a_blocked_writer(
    nats: NatsServer, proxy: FaultProxy
) -> None:
    n = name()
    with (
        net.connect(proxy.url, ack_timeout=ACK) as c,
        net.connect(nats.url, ack_timeout=ACK) as d,
    ):
        w = c.channel(n, 0).writer()
        poisoner = d.channel(n, 0)
        lost = proxy.rule(state_reply(n, "poison"), "drop")
        t, got = outcome(lambda: w.write("never read", timeout=2 * BOUND))
        poisoner.poison()
        t.join(3 * BOUND)
        assert not t.is_alive()
        assert lost.hits == 1
        [e] = got
        assert isinstance(e, csp.ChannelPoisoned), e
        # A later offer sees it too (the soak's writer offers in a loop).
        with pytest.raises(csp.ChannelPoisoned):
            csp.Alt(csp.Output(w, "again"), csp.Timeout(0.02)).select()


def test_a_retirement_whose_state_read_is_lost_still_reaches_a_blocked_reader(
    nats: NatsServer, proxy: FaultProxy
) -> None:
    n = name()
    with (
        net.connect(proxy.url, ack_timeout=ACK) as c,
        net.connect(nats.url, ack_timeout=ACK) as d,
    ):
        r = c.channel(n, 0).reader()
        w = d.channel(n, 0).writer()
        lost = proxy.rule(state_reply(n, "w"), "drop")
        t, got = outcome(lambda: r.read(timeout=2 * BOUND))
        w.retire()
        t.join(3 * BOUND)
        assert not t.is_alive()
        assert lost.hits == 1
        [e] = got
        assert isinstance(e, csp.ChannelRetired), e


def test_a_retirement_is_announced_even_when_the_retiring_side_cannot_read_the_state(
    nats: NatsServer, proxy: FaultProxy
) -> None:
    # The side that retires the last writer reads the state before it announces the change;
    # that read failing used to withhold the announcement (the count was already changed on
    # the server), so the other side's reader never learned of the end of the stream.
    n = name()
    with (
        net.connect(proxy.url, ack_timeout=ACK) as c,
        net.connect(nats.url, ack_timeout=ACK) as d,
    ):
        w = c.channel(n, 0).writer()
        r = d.channel(n, 0).reader()
        lost = proxy.rule(state_reply(n, "poison"), "drop")
        t, got = outcome(lambda: r.read(timeout=2 * BOUND))
        w.retire()
        t.join(3 * BOUND)
        assert not t.is_alive()
        assert lost.hits == 1
        [e] = got
        assert isinstance(e, csp.ChannelRetired), e


def test_a_poison_announced_while_the_connection_is_down_is_learned_after_it_reconnects(
    nats: NatsServer, proxy: FaultProxy
) -> None:
    # Core NATS delivers at most once: a notice published while a participant's connection
    # is down never reaches it. The proxy cuts the connection instead of delivering the
    # notice; the client reconnects by itself and must read the state again.
    n = name()
    with (
        net.connect(proxy.url, ack_timeout=ACK) as c,
        net.connect(nats.url, ack_timeout=ACK) as d,
    ):
        w = c.channel(n, 0).writer()
        poisoner = d.channel(n, 0)
        subject = f"ferrocsp.{n}.ctl"
        cut = proxy.rule(lambda f: f.way == "down" and f.subject == subject, "cut")
        t, got = outcome(lambda: w.write("never read", timeout=2 * BOUND))
        poisoner.poison()
        t.join(3 * BOUND)
        assert not t.is_alive()
        assert cut.hits == 1
        [e] = got
        assert isinstance(e, csp.ChannelPoisoned), e
