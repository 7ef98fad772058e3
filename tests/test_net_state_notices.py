"""A participant learns a poison or a retirement even when its first read of the channel's
state after the notice fails, or when the notice itself never reaches it.

A change of a networked channel's state (poison, the last end of a kind retired) is written to
the KV bucket and announced once on the channel's ``ctl`` subject; each participant then reads
the keys again (crates/ferrocsp-net/src/chan.rs). The notice is the only wake-up: a read of the
keys that failed (a reply lost, or slower than ``ack_timeout`` on a loaded server) used to
leave the old state for good, and a writer offering in a loop (the soak's ``Alt`` of an
``Output`` and a ``Timeout``) or a blocked read never ended; so did a notice sent while the
participant's connection was down (core NATS delivers at most once). Here the proxy drops
exactly that reply, or cuts the connection in place of the notice; the participant must read
the state again until it succeeds.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import ferrocsp as csp
import ferrocsp.net as net
from _nats import NatsServer, nats_fixture  # noqa: F401 - nats_fixture is the fixture 'nats'
from _netproxy import FaultProxy, Frame, Rule

pytestmark = pytest.mark.timeout(60)

ACK = 0.5  # ack_timeout (and request timeout) of both participants
#: How long the participant may take to learn the change: the lost read's timeout plus the
#: retry, with room for a loaded machine; the waits below are twice as long.
BOUND = 10.0


@pytest.fixture(name="proxy")
def proxy_fixture(nats: NatsServer) -> Iterator[FaultProxy]:
    with FaultProxy(nats.port) as p:
        yield p


@pytest.fixture(name="pair")
def pair_fixture(nats: NatsServer, proxy: FaultProxy) -> Iterator[tuple[Any, Any, str]]:
    """``c`` (behind the proxy), ``d`` (direct) and a fresh channel name."""
    with (
        net.connect(proxy.url, ack_timeout=ACK) as c,
        net.connect(nats.url, ack_timeout=ACK) as d,
    ):
        yield c, d, "s" + uuid.uuid4().hex[:12]


def state_reply(chan: str, key: str) -> Callable[[Frame], bool]:
    """Matches the server's answer to a direct get of the channel's ``key`` (``poison``,
    ``w``, ``r``) in the KV bucket."""
    subject = f"$JS.API.DIRECT.GET.KV_FERROCSP.$KV.FERROCSP.{chan}.{key}"
    return lambda f: f.way == "down" and f.about == subject


def ends_with(
    blocked: Callable[[], object], change: Callable[[], object], fault: Rule
) -> BaseException:
    """Runs ``blocked`` in a thread, makes the ``change``, and returns what ``blocked`` raised
    (it must end within the bound, after the proxy applied ``fault`` exactly once)."""
    got: list[BaseException] = []

    def run() -> None:
        try:
            blocked()
        except BaseException as e:  # noqa: BLE001 - the test looks at it
            got.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    change()
    t.join(3 * BOUND)
    assert not t.is_alive()
    assert fault.hits == 1
    [e] = got
    return e


def test_a_poison_whose_state_read_is_lost_still_reaches_a_blocked_writer(
    proxy: FaultProxy, pair: tuple[Any, Any, str]
) -> None:
    c, d, n = pair
    w = c.channel(n, 0).writer()
    poisoner = d.channel(n, 0)
    lost = proxy.rule(state_reply(n, "poison"), "drop")
    e = ends_with(lambda: w.write("never read", timeout=2 * BOUND), poisoner.poison, lost)
    assert isinstance(e, csp.ChannelPoisoned), e
    # A later offer sees it too (the soak's writer offers in a loop).
    with pytest.raises(csp.ChannelPoisoned):
        csp.Alt(csp.Output(w, "again"), csp.Timeout(0.02)).select()


def test_a_retirement_whose_state_read_is_lost_still_reaches_a_blocked_reader(
    proxy: FaultProxy, pair: tuple[Any, Any, str]
) -> None:
    c, d, n = pair
    r = c.channel(n, 0).reader()
    w = d.channel(n, 0).writer()
    lost = proxy.rule(state_reply(n, "w"), "drop")
    e = ends_with(lambda: r.read(timeout=2 * BOUND), w.retire, lost)
    assert isinstance(e, csp.ChannelRetired), e


def test_a_retirement_is_announced_even_when_the_retiring_side_cannot_read_the_state(
    proxy: FaultProxy, pair: tuple[Any, Any, str]
) -> None:
    # The side that retires the last writer reads the state before it announces the change;
    # that read failing used to withhold the announcement (the count was already changed on
    # the server), so the other side's reader never learned of the end of the stream.
    c, d, n = pair
    w = c.channel(n, 0).writer()
    r = d.channel(n, 0).reader()
    lost = proxy.rule(state_reply(n, "poison"), "drop")
    e = ends_with(lambda: r.read(timeout=2 * BOUND), w.retire, lost)
    assert isinstance(e, csp.ChannelRetired), e


def test_a_poison_announced_while_the_connection_is_down_is_learned_after_it_reconnects(
    proxy: FaultProxy, pair: tuple[Any, Any, str]
) -> None:
    # The proxy cuts the connection instead of delivering the notice; the client reconnects
    # by itself and must read the state again.
    c, d, n = pair
    w = c.channel(n, 0).writer()
    poisoner = d.channel(n, 0)
    subject = f"ferrocsp.{n}.ctl"
    cut = proxy.rule(lambda f: f.way == "down" and f.subject == subject, "cut")
    e = ends_with(lambda: w.write("never read", timeout=2 * BOUND), poisoner.poison, cut)
    assert isinstance(e, csp.ChannelPoisoned), e
