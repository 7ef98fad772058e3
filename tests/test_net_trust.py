"""Networked channels against a hostile publisher: a forged message has no effect on the
server, and signed pickles cannot be replayed or copied to another channel."""

from __future__ import annotations

import json
import logging
import struct
import threading
import uuid
from typing import Any

import pytest

import ferrocsp as csp
import ferrocsp.net as net
from _nats import NatsServer, nats_fixture, raw_request  # noqa: F401 - nats_fixture is 'nats'

pytestmark = pytest.mark.timeout(60)


def name() -> str:
    return "t" + uuid.uuid4().hex[:12]


def _end(kind: bytes, capacity: int, chan: str) -> bytes:
    raw = chan.encode()
    return b"E" + kind + struct.pack(">qI", capacity, len(raw)) + raw


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
        ]
        msgs = _read_after(ch, forged, forger.channel(n, 0), caplog)
        assert len(msgs) == 2, msgs
        assert "capacity 0, not 1" in msgs[1]
        assert other not in opened  # no end object was ever made for it
        assert target._net_core.status() == (False, False, False)
        w.retire()


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
