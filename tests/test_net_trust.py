"""Networked channels against a hostile publisher and a careless log reader: a forged message
has no effect on the server, signed pickles cannot be replayed or copied to another channel,
no secret shows in an error, repr or log line, and namespaces keep applications apart."""

from __future__ import annotations

import inspect
import json
import logging
import struct
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import ferrocsp as csp
import ferrocsp.net as net
from _nats import NatsServer, nats_fixture, raw_request  # noqa: F401 - nats_fixture is 'nats'
from _support import wait_until

pytestmark = pytest.mark.timeout(60)


def name() -> str:
    return "t" + uuid.uuid4().hex[:12]


def _end(kind: bytes, capacity: int, chan: str, ticket: bytes = b"f0rged") -> bytes:
    raw = chan.encode()
    return (
        b"E" + kind + struct.pack(">qI", capacity, len(raw)) + raw + bytes([len(ticket)]) + ticket
    )


def _list(*items: bytes) -> bytes:
    return b"\x01l" + struct.pack(">I", len(items)) + b"".join(items)


def _js(url: str, subject: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    """A JetStream API answer, asked as a foreign client (not through ferrocsp)."""
    body = json.dumps(payload).encode() if payload is not None else b""
    reply: dict[str, Any] = json.loads(raw_request(url, subject, body))
    return reply


def _on_server(url: str, chan: str) -> tuple[bool, bool]:
    """Whether channel ``chan``'s stream and its capacity key exist on the server."""
    stream = "error" not in _js(url, f"$JS.API.STREAM.INFO.FERROCSP_{chan}")
    key = _js(
        url, "$JS.API.STREAM.MSG.GET.KV_FERROCSP", {"last_by_subj": f"$KV.FERROCSP.{chan}.cap"}
    )
    return stream, "error" not in key


def _read_after(
    ch: csp.Channel[Any],
    send: list[bytes],
    sender: csp.Channel[Any],
    caplog: Any,
    expect: tuple[Any, ...] = (),
) -> list[str]:
    """Sends the raw frames ``send`` and then "fine" on ``sender``, reads ``expect`` and
    "fine" from ``ch``, and returns the warnings logged meanwhile."""

    def go() -> None:
        for frame in send:
            sender._net_core.write(frame, 30)
        sender.write("fine", timeout=30)

    t = threading.Thread(target=go)
    t.start()
    with caplog.at_level(logging.WARNING, logger="ferrocsp.net"):
        assert [ch.read(timeout=30) for _ in range(len(expect) + 1)] == [*expect, "fine"]
    t.join()
    return [r.getMessage() for r in caplog.records if r.name == "ferrocsp.net"]


# --- decoding is pure -----------------------------------------------------------------------
@pytest.mark.parametrize("capacity", [0, 2])
def test_a_forged_end_creates_no_channel_on_the_server(
    nats: NatsServer, capacity: int, caplog: pytest.LogCaptureFixture
) -> None:
    n, ghost = name(), name()
    with net.connect(nats.url) as forger, net.connect(nats.url) as victim:
        ch = victim.channel(n, capacity)
        # A well-formed message naming a channel nobody opened (buffered: it would make a
        # file-backed stream), and one that is malformed after the end.
        forged = [_list(_end(b"w", 3, ghost)), _list(_end(b"r", 3, ghost), b"Z")]
        msgs = _read_after(ch, forged, forger.channel(n, capacity), caplog)
        assert len(msgs) == 2, msgs
        assert "does not exist" in msgs[0]
        assert "unknown tag" in msgs[1]
        assert _on_server(nats.url, ghost) == (False, False)
        # Nothing of it was made locally either: the name is free for any capacity.
        assert victim.channel(ghost, 5).capacity == 5


def test_a_forged_end_in_a_rejected_message_changes_no_end_count(
    nats: NatsServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    n, other = name(), name()
    with net.connect(nats.url) as forger, net.connect(nats.url) as victim:
        target = victim.channel(other, 0)
        w = target.writer()  # the only writer: retiring it would end the stream for everyone
        opened: list[str] = []
        real = net.Connection.channel

        def spy(self: net.Connection, chan: str, capacity: int = 0) -> csp.Channel[Any]:
            opened.append(chan)
            return real(self, chan, capacity)

        monkeypatch.setattr(net.Connection, "channel", spy)
        ch = victim.channel(n, 0)
        opened.clear()
        forged = [
            _list(_end(b"w", 0, other), b"Z"),  # a real channel's end, then garbage
            _list(_end(b"w", 1, other)),  # a real channel with the wrong capacity
            _list(_end(b"w", 0, other)),  # all right, but no ticket was issued for it
        ]
        msgs = _read_after(ch, forged, forger.channel(n, 0), caplog)
        assert len(msgs) == 3, msgs
        assert "capacity 0, not 1" in msgs[1]
        assert "no live ticket" in msgs[2]
        # No end object was made for it (opened for the ticket only after the first two).
        assert opened.count(other) <= 1
        assert target._net_core.status() == (False, False, False)
        w.retire()


def test_a_copied_end_is_made_once(nats: NatsServer, caplog: pytest.LogCaptureFixture) -> None:
    # A message carrying an end, received twice (a copy, or a replay): its ticket is taken by
    # the first; the second makes no end (whose retirement would lower the real count).
    n, other = name(), name()
    with net.connect(nats.url) as a, net.connect(nats.url) as b:
        target = a.channel(other, 0)
        frame, _ = a._encode(n, [target.writer()])
        ch = b.channel(n, 2)
        msgs = _read_after(ch, [frame, frame], a.channel(n, 2), caplog, expect=(ANY_WRITER,))
        assert len(msgs) == 1, msgs
        assert "no live ticket" in msgs[0]


class _AnyWriter:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, list) and [type(x) for x in other] == [csp.Writer]


ANY_WRITER = _AnyWriter()


def test_a_real_end_still_travels(nats: NatsServer) -> None:
    n, other = name(), name()
    with net.connect(nats.url) as a, net.connect(nats.url) as b:
        target = a.channel(other, 1)
        t = threading.Thread(target=lambda: a.channel(n).write([target.writer()], timeout=30))
        t.start()
        (w,) = b.channel(n).read(timeout=30)
        t.join()
        assert isinstance(w, csp.Writer)
        w.write("via a travelled end", timeout=30)
        assert target.read(timeout=30) == "via a travelled end"


# --- signed pickles: no replay, no copy ------------------------------------------------------
def test_a_replayed_or_copied_signed_pickle_is_rejected_and_logged(
    nats: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    n, elsewhere = name(), name()
    key = b"s" * 32
    with net.connect(nats.url, pickle_key=key) as a, net.connect(nats.url, pickle_key=key) as b:
        frame, _ = a._encode(n, {1, 2})
        copy, _ = a._encode(elsewhere, {3})
        ch = b.channel(n, 4)
        # The first is accepted; the same message again, and one signed for another channel,
        # are not.
        msgs = _read_after(ch, [frame, frame, copy], a.channel(n, 4), caplog, expect=({1, 2},))
        assert len(msgs) == 2, msgs
        assert "a replay" in msgs[0]
        assert "a copy" in msgs[1]


# --- secrets ----------------------------------------------------------------------------------
SECRETS = ("pw-url-Qx7", "pw-arg-Zr4", "tok-arg-Wv2", "SUSEEDSECRET", "pickle-key-Ty8")


def _shown(e: BaseException) -> list[str]:
    out = [str(e), repr(e)]
    c: BaseException | None = e.__cause__ or e.__context__
    while c is not None:
        out += [str(c), repr(c)]
        c = c.__cause__ or c.__context__
    return out


def _assert_clean(texts: list[str]) -> None:
    for t in texts:
        for s in SECRETS:
            assert s not in t, (s, t)


@pytest.fixture(name="auth_nats")
def auth_nats_fixture(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path, extra=("--user", "alice", "--pass", "pw-url-Qx7"))
    yield server
    server.stop()


def test_no_secret_in_errors_reprs_or_logs(
    auth_nats: NatsServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    port = auth_nats.port
    shown: list[str] = []
    attempts: list[dict[str, Any]] = [
        # Unreachable, with credentials in the URL and as arguments.
        {"url": "nats://alice:pw-url-Qx7@127.0.0.1:1", "connect_timeout": 0.5},
        {
            "url": "nats://127.0.0.1:1",
            "user": "a",
            "password": "pw-arg-Zr4",
            "connect_timeout": 0.5,
        },
        {"url": "nats://tok-arg-Wv2@127.0.0.1:1", "connect_timeout": 0.5},
        {"url": "nats://127.0.0.1:1", "token": "tok-arg-Wv2", "connect_timeout": 0.5},
        {"url": "nats://127.0.0.1:1", "nkey_seed": "SUSEEDSECRET", "connect_timeout": 0.5},
        # The real server, refusing these credentials.
        {"url": f"nats://alice:pw-arg-Zr4@127.0.0.1:{port}", "connect_timeout": 2},
        {"url": f"nats://127.0.0.1:{port}", "user": "alice", "password": "pw-arg-Zr4"},
        {"url": f"nats://127.0.0.1:{port}", "token": "tok-arg-Wv2", "connect_timeout": 2},
        {"url": f"nats://127.0.0.1:{port}", "nkey_seed": "SUSEEDSECRET", "connect_timeout": 2},
        # A malformed credentials file holding a secret.
        {"url": f"nats://127.0.0.1:{port}", "credentials": "creds"},
    ]
    creds = tmp_path / "creds"
    creds.write_text(
        "-----BEGIN USER NKEY SEED-----\nSUSEEDSECRET\n------END USER NKEY SEED------\n"
    )
    with caplog.at_level(logging.DEBUG):
        for kw in attempts:
            if kw.get("credentials"):
                kw["credentials"] = creds
            with pytest.raises((ConnectionError, ValueError, RuntimeError)) as info:
                net.connect(**kw)
            shown += _shown(info.value)
        # Accepted: the connection and its errors show no password either.
        key = b"pickle-key-Ty8-0123456789"
        with net.connect(auth_nats.url, user="alice", password="pw-url-Qx7", pickle_key=key) as c:
            shown += [repr(c), c.url, repr(c.channel(name()))]
            assert "127.0.0.1" in c.url
            with pytest.raises(ValueError, match="invalid networked channel name") as bad:
                c.channel("not a name")
            shown += _shown(bad.value)
        with pytest.raises(ConnectionError) as closed:
            c.channel(name())
        shown += _shown(closed.value)
    shown += [r.getMessage() for r in caplog.records]
    out, err = capfd.readouterr()
    shown += [out, err]
    _assert_clean(shown)


def test_refused_credentials_say_so(auth_nats: NatsServer) -> None:
    with pytest.raises(ConnectionError, match="refused the connection") as info:
        net.connect(auth_nats.url, user="alice", password="wrong", connect_timeout=2)
    assert "nats-server -js" not in str(info.value)  # not the hint for a missing server
    with pytest.raises(ValueError, match="cannot connect"):
        net.connect("nats://[::1", connect_timeout=1)


def test_test_hooks_are_not_public() -> None:
    params = inspect.signature(net.connect).parameters
    assert not [p for p in params if p.startswith("_")], list(params)


# --- namespaces -------------------------------------------------------------------------------
def test_namespaces_keep_applications_apart(nats: NatsServer) -> None:
    n = name()
    with (
        net.connect(nats.url, namespace="app-a") as a,
        net.connect(nats.url, namespace="app-b") as b,
        net.connect(nats.url) as shared,
    ):
        # The same name with different capacities: separate state, no conflict.
        ca, cb, cs = a.channel(n, 2), b.channel(n, 3), shared.channel(n, 1)
        ca.write("for a", timeout=30)
        cb.write("for b", timeout=30)
        with pytest.raises(csp.WouldBlock):
            cs.read_nowait()
        assert cb.read(timeout=30) == "for b"
        assert ca.read(timeout=30) == "for a"
        with pytest.raises(csp.WouldBlock):
            cb.read_nowait()
        # Poison in one namespace stays there.
        ca.poison()
        cb.write("still open", timeout=30)
        assert cb.read(timeout=30) == "still open"
        # The default namespace keeps today's server names.
        assert _on_server(nats.url, n) == (True, True)
        # An end cannot cross into another namespace (its name means another channel there).
        with pytest.raises(TypeError, match="same server and namespace"):
            b.channel(n, 3).write([a.channel(n + "e", 0).writer()], timeout=30)
        assert repr(a) == f"Connection({nats.url!r}, namespace='app-a')"
    with pytest.raises(ValueError, match="namespace"):
        net.connect(nats.url, namespace="a_b")


# --- least permissions --------------------------------------------------------------------------
# docs/net.md lists these for namespace "app"; keep the two in step.
PUBLISH = [
    "ferrocsp-app.>",
    "$KV.FERROCSP-app.>",
    "$JS.API.STREAM.INFO.KV_FERROCSP-app",
    "$JS.API.STREAM.CREATE.KV_FERROCSP-app",
    "$JS.API.DIRECT.GET.KV_FERROCSP-app.>",
    "$JS.API.STREAM.PURGE.KV_FERROCSP-app",
    # Subject wildcards match whole tokens, and a stream name is one token: the buffered
    # channels' streams (FERROCSP-app_<name>) cannot be singled out by prefix.
    "$JS.API.STREAM.INFO.*",
    "$JS.API.STREAM.CREATE.*",
    "$JS.API.STREAM.MSG.DELETE.*",
    "$JS.API.CONSUMER.INFO.*.readers",
    "$JS.API.CONSUMER.DURABLE.CREATE.*.readers",
    "$JS.API.CONSUMER.CREATE.*.>",
    "$JS.API.CONSUMER.MSG.NEXT.*.readers",
    "$JS.ACK.*.readers.>",
]
SUBSCRIBE = ["ferrocsp-app.>", "_INBOX.>"]


@pytest.fixture(name="perm_nats")
def perm_nats_fixture(tmp_path: Path) -> Iterator[NatsServer]:
    perms = json.dumps({"publish": PUBLISH, "subscribe": SUBSCRIBE, "allow_responses": True})
    conf = tmp_path / "perm.conf"
    conf.write_text(
        "authorization { users = [\n"
        f'  {{user: "app", password: "app-pw", permissions: {perms}}}\n'
        "] }\n"
    )
    server = NatsServer(tmp_path, extra=("-c", str(conf)))
    yield server
    server.stop()


def test_a_participant_needs_only_the_documented_permissions(perm_nats: NatsServer) -> None:
    n = name()
    auth = {"user": "app", "password": "app-pw", "namespace": "app", "ack_timeout": 2.0}
    with net.connect(perm_nats.url, **auth) as a, net.connect(perm_nats.url, **auth) as b:
        for cap in (0, 2):
            ca, cb = a.channel(f"{n}{cap}", cap), b.channel(f"{n}{cap}", cap)
            w, r = ca.writer(), cb.reader()
            t = threading.Thread(target=lambda w=w: w.write("plain", timeout=30))
            t.start()
            # stats(): the survey of both connections (a rendezvous writer waits for the
            # reader), the stream's state (a buffered write completes alone).
            if cap == 0:
                wait_until(lambda cb=cb: cb.stats().writers_waiting == 1, what="the writer")
            else:
                t.join()
                assert cb.stats().buffered == 1
            assert r.read(timeout=30) == "plain"
            t.join()
            # An Output guard (a hold, or a reserved slot given back or filled).
            out = csp.Output(w, "chosen")
            t = threading.Thread(target=lambda out=out: csp.Alt(out, csp.Timeout(30)).select())
            t.start()
            assert r.read(timeout=30) == "chosen"
            t.join()
            # An end travels; retiring the writers ends the stream.
            t = threading.Thread(target=lambda w=w: w.write([w.channel.writer()], timeout=30))
            t.start()
            (w2,) = r.read(timeout=30)
            t.join()
            w.retire()
            w2.retire()
            with pytest.raises(csp.ChannelRetired):
                r.read(timeout=30)
        a.channel(f"{n}p", 1).poison()
        with pytest.raises(csp.ChannelPoisoned):
            b.channel(f"{n}p", 1).read(timeout=30)
    log = (perm_nats.store / "nats.log").read_text()
    assert "Violation" not in log, log[-3000:]
    # Outside its namespace the user cannot open a channel (its state is out of reach).
    with (
        net.connect(perm_nats.url, user="app", password="app-pw", ack_timeout=1.0) as c,
        pytest.raises((ConnectionError, RuntimeError)),
    ):
        c.channel(n)
    assert "Publish Violation" in (perm_nats.store / "nats.log").read_text()
