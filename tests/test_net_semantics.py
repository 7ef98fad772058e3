"""Networked channels: poison and retire reach every participant, ends travel between OS
processes, the codec rejects garbage and forged pickles (and the channel keeps working)."""

from __future__ import annotations

import logging
import threading
import uuid

import pytest

import ferrocsp as csp
import ferrocsp.net as net
from _nats import NatsServer, nats_fixture, spawn  # noqa: F401 - nats_fixture is the fixture 'nats'
from ferrocsp.net import _codec

pytestmark = pytest.mark.timeout(60)


def name() -> str:
    return "s" + uuid.uuid4().hex[:12]


BLOCKED = """
import sys
import ferrocsp as csp
import ferrocsp.net as net
url, chan, cap, op = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
with net.connect(url) as c:
    ch = c.channel(chan, cap)
    end = ch.reader() if op == "read" else ch.writer()
    print("waiting", flush=True)
    try:
        if op == "read":
            end.read(timeout=30)
        else:
            for i in range(cap + 1):
                end.write(i, timeout=30)
    except csp.ChannelPoisoned:
        print("poisoned", flush=True)
    except csp.ChannelRetired:
        print("retired", flush=True)
"""


@pytest.mark.parametrize(("capacity", "op"), [(0, "read"), (0, "write"), (2, "read"), (2, "write")])
def test_poison_reaches_blocked_participants_in_other_processes(
    nats: NatsServer, capacity: int, op: str
) -> None:
    n = name()
    with net.connect(nats.url) as c:
        ch = c.channel(n, capacity)
        procs = [spawn(BLOCKED, nats.url, n, str(capacity), op) for _ in range(2)]
        for p in procs:
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "waiting"
        ch.poison()
        for p in procs:
            out, err = p.communicate(timeout=30)
            assert out.strip() == "poisoned", err
        with pytest.raises(csp.ChannelPoisoned):
            ch.write(1)
        with pytest.raises(csp.ChannelPoisoned):
            ch.read()
        # A late joiner sees it too.
        with net.connect(nats.url) as late, pytest.raises(csp.ChannelPoisoned):
            late.channel(n, capacity).read(timeout=5)


@pytest.mark.parametrize("capacity", [0, 2])
def test_retiring_all_readers_fails_writers_elsewhere(nats: NatsServer, capacity: int) -> None:
    n = name()
    with net.connect(nats.url) as c:
        ch = c.channel(n, capacity)
        r = ch.reader()
        p = spawn(BLOCKED, nats.url, n, str(capacity), "write")
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "waiting"
        r.retire()
        out, err = p.communicate(timeout=30)
        assert out.strip() == "retired", err
        with pytest.raises(csp.ChannelRetired, match="retired"):
            r.read()


@pytest.mark.parametrize("capacity", [0, 3])
def test_retiring_all_writers_ends_the_stream_for_readers_elsewhere(
    nats: NatsServer, capacity: int
) -> None:
    n = name()
    with net.connect(nats.url) as c:
        ch = c.channel(n, capacity)
        w = ch.writer()
        p = spawn(BLOCKED, nats.url, n, str(capacity), "read")
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "waiting"
        w.retire()
        out, err = p.communicate(timeout=30)
        assert out.strip() == "retired", err


RECEIVE_END = """
import sys
import ferrocsp.net as net
url, ends_name = sys.argv[1], sys.argv[2]
with net.connect(url) as c:
    msg = c.channel(ends_name).read(timeout=30)
    out = msg["out"]
    print(type(out).__name__, out.channel.name, flush=True)
    with out:
        for i in range(3):
            out.write(i * 10)
"""


def test_a_writer_end_sent_to_another_process(nats: NatsServer) -> None:
    ends, data = name(), name()
    with net.connect(nats.url) as c:
        d = c.channel(data, 1)
        r = d.reader()
        w = d.writer()
        p = spawn(RECEIVE_END, nats.url, ends)
        c.channel(ends).write({"out": w}, timeout=30)
        w.retire()  # the receiver's end keeps the stream open
        assert list(r) == [0, 10, 20]
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
        assert out.split() == ["Writer", data]


def test_local_channels_do_not_cross(nats: NatsServer) -> None:
    with net.connect(nats.url) as c:
        ch = c.channel(name())
        with pytest.raises(TypeError, match="cannot send"):
            ch.write(csp.Channel(), timeout=1)
        with pytest.raises(TypeError, match="pickle_key"):
            ch.write({1, 2}, timeout=1)


# --- codec ----------------------------------------------------------------------------------
def _no_end(_v: object) -> None:
    return None


VALUES = [
    None,
    True,
    False,
    0,
    -1,
    2**63 - 1,
    -(2**63),
    2**200,
    -(2**200),
    1.5,
    float("inf"),
    "",
    "héllo \udc80",
    b"",
    b"\x00\xff",
    [],
    [1, [2, [3]]],
    (),
    (1, "a", (None,)),
    {},
    {"a": 1, 2: [b"x"], (1, 2): {"n": None}},
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_codec_round_trip(value: object) -> None:
    data = _codec.encode(value, channel="c", key=None, end=_no_end)
    assert data[0] == _codec.SAFE
    back = _codec.decode(data, channel="c", key=None)
    assert back == value
    assert type(back) is type(value)


GARBAGE = [
    b"",
    b"\x07",
    b"\x01",
    b"\x01Z",
    b"\x01s\x00\x00\x00\x09ab",
    b"\x01l\xff\xff\xff\xff",
    b"\x01d\x00\x00\x00\x01lN\x00\x00\x00\x00N",
    b"\x01NN",
    b"\x01s\x00\x00\x00\x01\xff",
    b"\x01" + b"l\x00\x00\x00\x01" * 100 + b"N",
    b"\x01Ex" + b"\x00" * 12,
    b"\x01b\x00\x00\x00\x02x",
    b"\x01i\x00",
    b"\x01f" + b"\x00" * 9,
    b"\x02b\x00\x00\x00\x01x",
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_codec_scalar_fast_path_matches_the_general_codec(value: object) -> None:
    # The per-operation fast paths must give exactly the general codec's frames and values,
    # and take every top-level scalar the safe codec carries (else they save nothing).
    general = _codec.encode(value, channel="c", key=None, end=_no_end)
    fast = _codec.encode_scalar(value)
    scalar = type(value) in (bytes, str, float, bool, type(None)) or (
        type(value) is int and -(2**63) <= value < 2**63
    )
    assert (fast is not None) == scalar
    if fast is not None:
        assert fast == general
    back = _codec.decode_scalar(general)
    assert (back is not _codec.NOT_SCALAR) == scalar
    if scalar:
        assert back == value
        assert type(back) is type(value)


def test_codec_scalar_fast_path_declines_what_it_does_not_carry() -> None:
    class B(bytes):
        pass

    # Subclasses are the general codec's business (it refuses them, as before).
    for v in (B(b"x"), bytearray(b"x"), 2**64, csp.Channel()):
        assert _codec.encode_scalar(v) is None


@pytest.mark.parametrize("data", GARBAGE)
def test_codec_scalar_fast_path_leaves_garbage_to_the_general_codec(data: bytes) -> None:
    """The general codec then rejects it (``test_codec_rejects_garbage``)."""
    assert _codec.decode_scalar(data) is _codec.NOT_SCALAR


@pytest.mark.parametrize("data", GARBAGE)
def test_codec_rejects_garbage(data: bytes) -> None:
    with pytest.raises(_codec.CodecError):
        _codec.decode(data, channel="c", key=None)


def test_signed_pickle() -> None:
    key, other = b"k" * 32, b"o" * 32
    value = {1, 2, 3}
    data = _codec.encode(value, channel="c", key=key, end=_no_end)
    assert data[0] == _codec.PICKLE
    assert _codec.decode(data, channel="c", key=key) == value
    with pytest.raises(_codec.CodecError, match="no pickle_key"):
        _codec.decode(data, channel="c", key=None)
    with pytest.raises(_codec.CodecError, match="bad signature"):
        _codec.decode(data, channel="c", key=other)
    with pytest.raises(_codec.CodecError, match="a copy"):  # replayed on another channel
        _codec.decode(data, channel="d", key=key)
    with pytest.raises(_codec.CodecError, match="a replay"):  # the same message again
        _codec.decode(data, channel="c", key=key)
    tampered = data[:-2] + bytes([data[-2] ^ 1]) + data[-1:]
    with pytest.raises(_codec.CodecError, match="bad signature"):
        _codec.decode(tampered, channel="c", key=key)


@pytest.mark.parametrize("capacity", [0, 2])
def test_garbage_and_forged_messages_are_rejected_and_the_channel_keeps_working(
    nats: NatsServer, capacity: int, caplog: pytest.LogCaptureFixture
) -> None:
    n = name()
    key = b"s" * 32
    with (
        net.connect(nats.url, pickle_key=key) as good,
        net.connect(nats.url, pickle_key=b"f" * 32) as forger,
        net.connect(nats.url) as reader_conn,
    ):
        ch = reader_conn.channel(n, capacity)
        bad = [
            lambda: good.channel(n, capacity)._net_core.write(b"\x01garbage", None),
            lambda: good.channel(n, capacity).write({1, 2}),  # signed, but the reader has no key
            lambda: forger.channel(n, capacity).write(frozenset()),
            lambda: good.channel(n, capacity).write("fine"),
        ]

        def send() -> None:
            for b in bad:
                b()

        t = threading.Thread(target=send)
        t.start()
        with caplog.at_level(logging.WARNING, logger="ferrocsp.net"):
            assert ch.read(timeout=30) == "fine"
        t.join()
        msgs = [r.getMessage() for r in caplog.records if r.name == "ferrocsp.net"]
        assert len(msgs) == 3, msgs
        assert "malformed" in msgs[0]
        assert "no pickle_key" in msgs[1]
        assert "no pickle_key" in msgs[2]
        # With the right key, a signed pickle is accepted; a forged one is not.
        keyed = net.connect(nats.url, pickle_key=key)
        try:
            kc = keyed.channel(n, capacity)
            t = threading.Thread(
                target=lambda: [
                    forger.channel(n, capacity).write({9}),
                    good.channel(n, capacity).write({7}),
                ]
            )
            t.start()
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="ferrocsp.net"):
                assert kc.read(timeout=30) == {7}
            t.join()
            assert any("bad signature" in r.getMessage() for r in caplog.records)
        finally:
            keyed.close()


# --- Alt across networked and local guards ---------------------------------------------------
WRITE_LATER = """
import sys
import ferrocsp.net as net
url, chan, cap, value = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
with net.connect(url) as c:
    c.channel(chan, cap).write(value, timeout=30)
    print("written", flush=True)
"""


@pytest.mark.parametrize("capacity", [0, 2])
def test_alt_mixes_local_and_network_guards(nats: NatsServer, capacity: int) -> None:
    n = name()
    with net.connect(nats.url) as c:
        remote = c.channel(n, capacity)
        local = csp.Channel()
        # Ends held for the whole test: a dropped end retires.
        local_in, remote_in = local.reader(), remote.reader()
        # Only the network guard becomes ready: written by another OS process.
        p = spawn(WRITE_LATER, nats.url, n, str(capacity), "from-afar")
        g, v = csp.Alt(local_in, remote_in, csp.Timeout(30)).select()
        assert v == "from-afar"
        assert g is remote_in
        out, err = p.communicate(timeout=30)
        assert out.strip() == "written", err
        # Only the local guard becomes ready: the network value is not taken meanwhile.
        t = threading.Thread(target=local.write, args=("near",))
        t.start()
        g, v = csp.Alt(remote, local_in).pri_select()
        t.join()
        assert (g, v) == (local_in, "near")
        if capacity == 0:
            with pytest.raises(TimeoutError):
                remote.write("nobody reads", timeout=0.3)
        # A Guard wrapper and a Timeout: nothing ready, the timeout fires.
        g, v = csp.Alt(csp.Guard(remote_in), csp.Timeout(0.2)).select()
        assert isinstance(g, csp.Timeout)


def test_alt_on_a_poisoned_network_guard(nats: NatsServer) -> None:
    n = name()
    with net.connect(nats.url) as c, net.connect(nats.url) as other:
        remote = c.channel(n)
        local = csp.Channel()
        done: list[BaseException] = []

        def select() -> None:
            try:
                csp.Alt(local, remote).select()
            except csp.ChannelPoisoned as e:
                done.append(e)

        t = threading.Thread(target=select)
        t.start()
        other.channel(n).poison()
        t.join(timeout=30)
        assert len(done) == 1


def test_alt_exactly_once_with_many_writers(nats: NatsServer) -> None:
    n = name()
    with net.connect(nats.url) as c, net.connect(nats.url) as w:
        remote, local = c.channel(n), csp.Channel()
        wch = w.channel(n)
        threads = [
            threading.Thread(target=lambda k=k: [wch.write((k, i)) for i in range(20)])
            for k in range(3)
        ]
        for t in threads:
            t.start()
        got = []
        alt = csp.Alt(remote, local)
        for _ in range(60):
            g, v = alt.fair_select()
            assert g is remote
            got.append(tuple(v))
        for t in threads:
            t.join()
        assert sorted(got) == sorted((k, i) for k in range(3) for i in range(20))
