"""Networked channels and ends as arguments of ``backend="os"`` processes (DESIGN: ends are
values, mobile across OS processes): the child reconnects with options the OS backend carries
beside the pickle (never in it), and an end that crosses is the same end, counted once on the
server however many processes retire a copy (docs/design.md, "Networked channels in OS
processes")."""

from __future__ import annotations

import pickle
import uuid

import pytest

import ferrocsp as csp
import ferrocsp.net as net
from _nats import NatsServer, nats_fixture  # noqa: F401 - nats_fixture is the fixture 'nats'
from ferrocsp._backends._os import _pickle_process

pytestmark = [pytest.mark.usefixtures("no_leaks"), pytest.mark.timeout(120)]


def name() -> str:
    return "o" + uuid.uuid4().hex[:12]


@csp.process(backend="os")
def produce(out: csp.Writer, n: int) -> None:
    """Writes 0..n-1, then retires its end."""
    with out:
        for i in range(n):
            out.write(i)


@csp.process(backend="os")
def retire_only(w: csp.Writer) -> None:
    w.retire()


@csp.process(backend="os")
def echo(ch: csp.Channel) -> str:
    v = ch.read(timeout=30)
    return f"{v} from the child"


@csp.process(backend="os")
def make_end(ch: csp.Channel) -> csp.Writer:
    return ch.writer()


def test_a_channel_crosses_and_the_child_reconnects(nats: NatsServer) -> None:
    with net.connect(nats.url) as c:
        ch = c.channel(name())
        h = csp.Spawn(echo(ch))
        ch.write("hi", timeout=30)
        assert h.join(timeout=60) == "hi from the child"


def test_an_end_that_crosses_counts_once(nats: NatsServer) -> None:
    with net.connect(nats.url) as c:
        ch = c.channel(name(), 5)  # room for every value: the parent reads after run()
        r, w = ch.reader(), ch.writer()
        assert ch.stats().writer_ends == 1
        csp.Par(produce(w, 5), backend="os").run()
        # The child's copy retired the one end: end-of-stream here, after the values.
        assert list(r) == [0, 1, 2, 3, 4]
        assert ch.stats().writer_ends == 0
        assert ch.stats().retired


def test_copies_of_one_end_retire_it_once(nats: NatsServer) -> None:
    with net.connect(nats.url) as c:
        ch = c.channel(name())
        keep, w = ch.writer(), ch.writer()
        assert ch.stats().writer_ends == 2
        csp.Par(retire_only(w), backend="os").run()
        assert ch.stats().writer_ends == 1
        # Another child with another copy of the same end, and this process's own copy:
        # the end was retired already, so nothing more is uncounted.
        csp.Par(retire_only(w), backend="os").run()
        w.retire()
        assert ch.stats().writer_ends == 1
        keep.retire()
        assert ch.stats().writer_ends == 0


def test_an_end_made_in_the_child_comes_back(nats: NatsServer) -> None:
    with net.connect(nats.url) as c:
        ch = c.channel(name(), 1)
        w = csp.Spawn(make_end(ch)).join(timeout=60)
        assert isinstance(w, csp.Writer)
        assert w.channel is ch
        w.write("back")
        assert ch.read(timeout=10) == "back"
        assert ch.stats().writer_ends == 1
        w.retire()
        assert ch.stats().writer_ends == 0


def test_no_connection_option_is_in_the_pickle(nats: NatsServer) -> None:
    secret = b"pickle-key-SECRET-0123456789abcdef"
    with net.connect(nats.url, pickle_key=secret, ack_timeout=4.0) as c:
        ch = c.channel(name())
        payload, nets = _pickle_process(produce(ch.writer(), 1))
        assert secret not in payload
        assert nats.url.encode() not in payload
        ((key, opts),) = nets.items()
        assert key.encode() in payload  # the pickle names the connection, nothing more
        assert (opts["pickle_key"], opts["ack_timeout"]) == (secret, 4.0)


def test_outside_an_os_process_it_still_does_not_pickle(nats: NatsServer) -> None:
    with net.connect(nats.url) as c:
        ch = c.channel(name())
        with pytest.raises(TypeError, match="does not pickle"):
            pickle.dumps(ch)
        with pytest.raises(TypeError, match="does not pickle"):
            pickle.dumps(ch.reader())
