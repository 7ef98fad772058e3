"""The networked-channel codec against a hostile sender (no server needed): property and fuzz
tests (hypothesis), decoding is pure, linear in the message and bounded in size and
allocation, and signed pickles cannot be replayed or copied to another channel."""

from __future__ import annotations

import contextlib
import struct
import time
import tracemalloc
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ferrocsp.net import _codec
from ferrocsp.net._connection import Connection

pytestmark = pytest.mark.timeout(120)

# Hangs are caught by pytest-timeout, not by hypothesis's per-example deadline (a shared,
# loaded machine would make a deadline flaky).
FUZZ = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)


def _no_end(_v: object) -> None:
    return None


def _enc(v: Any) -> bytes:
    return _codec.encode(v, channel="c", key=None, end=_no_end)


def _end(kind: bytes, capacity: int, name: bytes, ticket: bytes = b"0f1e") -> bytes:
    return (
        b"E" + kind + struct.pack(">qI", capacity, len(name)) + name + bytes([len(ticket)]) + ticket
    )


def _list(*items: bytes) -> bytes:
    return b"l" + struct.pack(">I", len(items)) + b"".join(items)


# --- property tests ------------------------------------------------------------------------
_keys = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(),
    lambda inner: st.lists(inner, max_size=3).map(tuple),
    max_leaves=6,
)
_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(),
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.lists(inner, max_size=5).map(tuple)
        | st.dictionaries(_keys, inner, max_size=5)
    ),
    max_leaves=30,
)


def _same(a: Any, b: Any) -> bool:
    """Equal, with the same types all the way down (``1 == 1.0 == True`` is not enough)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(
            _same(k, k2) and _same(a[k], b[k2]) for k, k2 in zip(a, b, strict=True)
        )
    return bool(a == b)


@FUZZ
@given(_values)
def test_valid_values_round_trip(value: Any) -> None:
    data = _enc(value)
    assert _same(_codec.decode(data, channel="c", key=None), value)
    scalar = _codec.decode_scalar(data)
    if scalar is not _codec.NOT_SCALAR:
        assert _same(scalar, value)


@FUZZ
@given(st.binary(max_size=512))
def test_random_bytes_decode_or_raise_codec_error_only(data: bytes) -> None:
    for frame in (data, b"\x01" + data, b"\x02" + data):
        with contextlib.suppress(_codec.CodecError):
            _codec.decode(frame, channel="c", key=b"k" * 32)


@FUZZ
@given(_values, st.data())
def test_damaged_messages_decode_or_raise_codec_error_only(value: Any, data: st.DataObject) -> None:
    frame = bytearray(_enc(value))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(frame) - 1))
        frame[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(frame)))
    with contextlib.suppress(_codec.CodecError):
        _codec.decode(bytes(frame[:cut]), channel="c", key=None)


class _Recorder:
    """Stands for a connection's native side: records every call; no channel exists."""

    url = "nats://recorder"

    def __init__(self) -> None:
        self.calls: list[str] = []

    def capacity_of(self, name: str) -> int | None:
        self.calls.append(f"capacity_of {name}")
        return None

    def channel(self, name: str, capacity: int) -> Any:
        self.calls.append(f"channel {name}")
        raise AssertionError("decoding opened a channel")


_ends = st.builds(
    _end,
    st.sampled_from([b"r", b"w", b"x"]),
    st.integers(-1, 3),
    st.sampled_from([b"a", b"chan-1", b"bad name", b"\xff"]),
    st.sampled_from([b"ab-12", b"", b"a.b", b"x" * 65]),
)


@FUZZ
@given(st.lists(_ends | st.binary(max_size=6) | st.just(b"N")))
def test_decoding_a_message_has_no_side_effect(parts: list[bytes]) -> None:
    # Messages full of ends, some malformed: a rejected one calls nothing on the server, and an
    # accepted-looking one only asks (capacity_of) before it fails on channels that do not
    # exist; no channel is ever opened and no end made.
    native = _Recorder()
    conn = Connection(native, None)
    frame = b"\x01" + _list(*parts)
    try:
        _codec.parse(frame, channel="c", key=None)
        parsed = True
    except _codec.CodecError:
        parsed = False
    with contextlib.suppress(_codec.CodecError):
        conn._decode("c", frame)
    if not parsed:
        assert native.calls == []
    assert all(c.startswith("capacity_of ") for c in native.calls), native.calls


# --- ends are inert until accepted ---------------------------------------------------------
def test_ends_parse_into_inert_descriptions() -> None:
    frame = b"\x01" + _list(_end(b"w", 3, b"x"), _end(b"r", 0, b"y"))
    value, refs = _codec.parse(frame, channel="c", key=None)
    assert [type(v) for v in value] == [_codec.EndRef, _codec.EndRef]
    assert [(r.kind, r.capacity, r.name, r.ticket) for r in refs] == [
        ("writer", 3, "x", "0f1e"),
        ("reader", 0, "y", "0f1e"),
    ]
    # Two ends of one channel stay two values (identity, not equality), also as dict keys.
    a, b = _codec.EndRef("writer", 0, "x"), _codec.EndRef("writer", 0, "x")
    assert a != b
    assert len({a: 1, b: 2}) == 2


def test_materialise_replaces_ends_everywhere() -> None:
    frame = b"\x01" + _enc([(1, {"k": None})])[1:]
    assert _codec.parse(frame, channel="c", key=None) == ([(1, {"k": None})], [])
    ref = _codec.EndRef("reader", 0, "x")
    got = _codec.materialise([ref, (ref,), {ref: ref}], lambda r: ("end", r.name))
    assert got == [("end", "x"), (("end", "x"),), {("end", "x"): ("end", "x")}]


def test_an_end_for_a_channel_that_does_not_exist_is_rejected_without_opening_it() -> None:
    native = _Recorder()
    frame = b"\x01" + _list(_end(b"w", 0, b"nowhere"))
    with pytest.raises(_codec.CodecError, match="does not exist"):
        Connection(native, None)._decode("c", frame)
    assert native.calls == ["capacity_of nowhere"]


@pytest.mark.parametrize("ticket", [b"", b"a.b", b"a*", b"x" * 65])
def test_an_end_with_a_malformed_ticket_is_rejected_by_the_parser(ticket: bytes) -> None:
    with pytest.raises(_codec.CodecError, match="bad channel end"):
        _codec.parse(b"\x01" + _list(_end(b"w", 0, b"x", ticket)), channel="c", key=None)


def test_a_malformed_message_with_ends_is_rejected_before_any_server_call() -> None:
    native = _Recorder()
    # A valid end first, then garbage: parsing fails before anything is asked.
    frame = b"\x01" + _list(_end(b"w", 0, b"x"), b"Z")
    with pytest.raises(_codec.CodecError, match="unknown tag"):
        Connection(native, None)._decode("c", frame)
    assert native.calls == []


# --- limits ---------------------------------------------------------------------------------
def test_message_size_is_capped_both_ways(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_codec, "MAX_MESSAGE", 1000)
    assert _codec.decode(_enc([b"x" * 10]), channel="c", key=None) == [b"x" * 10]
    with pytest.raises(_codec.CodecError, match="over the 1000 byte limit"):
        _codec.decode(b"\x01b" + struct.pack(">I", 1000) + b"x" * 1000, channel="c", key=None)
    with pytest.raises(ValueError, match="1000 byte limit"):
        _enc([b"x" * 1000])
    with pytest.raises(ValueError, match="1000 byte limit"):
        _codec.encode({b"x" * 1000}, channel="c", key=b"k" * 32, end=_no_end)


def test_element_count_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _enc([[None] * 60, [None] * 60])
    assert _codec.decode(data, channel="c", key=None) == [[None] * 60] * 2
    monkeypatch.setattr(_codec, "MAX_ITEMS", 100)
    with pytest.raises(_codec.CodecError, match="limit of 100 container elements"):
        _codec.decode(data, channel="c", key=None)
    with pytest.raises(ValueError, match="more than 100 container elements"):
        _enc([[None] * 60, [None] * 60])


def test_ends_per_message_are_capped() -> None:
    frame = b"\x01" + _list(*[_end(b"w", 0, b"x")] * (_codec.MAX_ENDS + 1))
    with pytest.raises(_codec.CodecError, match=f"limit of {_codec.MAX_ENDS} channel ends"):
        _codec.parse(frame, channel="c", key=None)


def test_nesting_is_capped() -> None:
    deep: Any = None
    for _ in range(_codec.MAX_DEPTH + 2):
        deep = [deep]
    with pytest.raises(TypeError, match="nested"):
        _enc(deep)
    frame = b"\x01" + b"l\x00\x00\x00\x01" * (_codec.MAX_DEPTH + 2) + b"N"
    with pytest.raises(_codec.CodecError, match="nested"):
        _codec.decode(frame, channel="c", key=None)


# --- linear time ----------------------------------------------------------------------------
def _int(k: int) -> bytes:
    raw = k.to_bytes((k.bit_length() + 8) // 8, "big", signed=True)
    return b"I" + struct.pack(">I", len(raw)) + raw


def _int_keys(keys: list[int]) -> bytes:
    """A dict frame ``{k: None for k in keys}``, built by hand (building the dict itself would
    take the quadratic time the decoder must avoid)."""
    body = b"".join(_int(k) + b"N" for k in keys)
    return b"\x01d" + struct.pack(">I", len(keys)) + body


P = 2**61 - 1  # CPython hashes ints modulo this: i * P all hash to 0


def test_dict_keys_chosen_to_collide_are_rejected() -> None:
    ok = _codec.decode(
        _int_keys([i * P for i in range(_codec.MAX_EQUAL_HASHES)]), channel="c", key=None
    )
    assert len(ok) == _codec.MAX_EQUAL_HASHES
    # Without the check, inserting n such keys takes n^2/2 comparisons (minutes at this size).
    flood = _int_keys([i * P for i in range(1, 200_000)])
    with pytest.raises(_codec.CodecError, match="collide"):
        _codec.decode(flood, channel="c", key=None)


def test_decoding_dict_keys_is_linear() -> None:
    # Keys of distinct hashes sharing every low bit (the table index): still linear. Work is
    # compared between two sizes, 8x apart, by the ratio of this thread's CPU time (not wall
    # time, not other threads'), with generous slack (linear: about 8; quadratic: about 64);
    # no absolute time is asserted.
    def cost(n: int) -> float:
        frame = _int_keys([i << 40 for i in range(1, n + 1)])
        best = float("inf")
        for _ in range(3):
            t0 = time.thread_time()
            _codec.decode(frame, channel="c", key=None)
            best = min(best, time.thread_time() - t0)
        return best

    small, big = cost(20_000), cost(160_000)
    assert big < 24 * max(small, 1e-3), (small, big)


# --- bounded allocation ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "item",
    [
        b"l\x00\x00\x00\x00",
        b"d\x00\x00\x00\x00",
        b"t\x00\x00\x00\x01N",
        b"s\x00\x00\x00\x02\xc3\xa9",
        b"f" + b"\x00" * 8,
    ],
    ids=["empty-lists", "empty-dicts", "1-tuples", "2-byte-strs", "floats"],
)
def test_decoding_allocates_a_bounded_multiple_of_the_message(item: bytes) -> None:
    n = 50_000
    frame = b"\x01l" + struct.pack(">I", n) + item * n
    tracemalloc.start()
    try:
        value = _codec.decode(frame, channel="c", key=None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(value) == n
    assert peak < 32 * len(frame), (peak, len(frame), peak / len(frame))


def test_dict_decoding_allocates_a_bounded_multiple_of_the_message() -> None:
    # 64-bit int keys: the worst shape measured (about 19x, the hash counts included).
    keys = range(1 << 40, (1 << 40) + 50_000)
    body = b"".join(b"i" + struct.pack(">q", k) + b"N" for k in keys)
    frame = b"\x01d" + struct.pack(">I", len(keys)) + body
    tracemalloc.start()
    try:
        _codec.decode(frame, channel="c", key=None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 * len(frame), (peak, len(frame), peak / len(frame))


# --- signed pickles ---------------------------------------------------------------------------
KEY = b"k" * 32


def test_a_signed_pickle_carries_a_nonce_and_its_channel() -> None:
    a = _codec.encode({1}, channel="jobs", key=KEY, end=_no_end)
    b = _codec.encode({1}, channel="jobs", key=KEY, end=_no_end)
    assert a != b  # a fresh nonce each time
    assert b"jobs" in a
    assert _codec.decode(a, channel="jobs", key=KEY) == {1}
    with pytest.raises(_codec.CodecError, match="a replay"):
        _codec.decode(a, channel="jobs", key=KEY)
    with pytest.raises(_codec.CodecError, match="sent on channel 'jobs' arrived on 'other'"):
        _codec.decode(b, channel="other", key=KEY)
    # Rewriting the channel it names breaks the signature.
    forged = b.replace(b"\x04jobs", b"\x04othr")
    with pytest.raises(_codec.CodecError, match="bad signature"):
        _codec.decode(forged, channel="othr", key=KEY)
    assert _codec.decode(b, channel="jobs", key=KEY) == {1}


def test_replay_memory_is_bounded_and_refuses_what_it_forgot() -> None:
    r = _codec._Replays(limit=4)
    nonces = [i.to_bytes(8, "big") + b"r" * 8 for i in range(1, 11)]
    assert all(r.first_time(n) for n in nonces)
    assert len(r.seen) == 4
    assert len(r.heap) == 4
    assert not any(r.first_time(n) for n in nonces)  # remembered, or older than the floor
    assert r.first_time((11).to_bytes(8, "big") + b"r" * 8)


# --- arbitrary bytes: the fast path, and no side effect -------------------------------------
@FUZZ
@given(st.binary(max_size=64))
def test_the_scalar_fast_path_never_raises_and_agrees_with_decode(data: bytes) -> None:
    # Short frames of the scalar tags, so most inputs are near-valid scalars.
    for frame in (data, b"\x01" + data, b"\x01" + data[:1] + struct.pack(">I", len(data)) + data):
        v = _codec.decode_scalar(frame)
        if v is _codec.NOT_SCALAR:
            continue
        assert _same(_codec.decode(frame, channel="c", key=None), v), frame


#: Calls of ``_loaded``: a pickle in a message must never get to call it.
_LOADED: list[str] = []


def _loaded(tag: str) -> str:
    _LOADED.append(tag)
    return tag


class _Payload:
    """Unpickles by calling ``_loaded`` (a stand-in for code an attacker wants run)."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (_loaded, ("ran",))


def _pickle_frame(mac: bytes, nonce: bytes, channel: bytes, body: bytes) -> bytes:
    return b"\x02" + mac + nonce + bytes([len(channel)]) + channel + body


@FUZZ
@given(st.binary(min_size=32, max_size=32), st.binary(min_size=16, max_size=16), st.binary())
def test_an_unsigned_or_forged_pickle_is_never_loaded(
    mac: bytes, nonce: bytes, junk: bytes
) -> None:
    import pickle

    body = pickle.dumps(_Payload())
    replays = (set(_codec._REPLAYS.seen), _codec._REPLAYS.floor)
    good = _codec._mac(KEY, b"c", nonce, body)
    frames = [
        _pickle_frame(mac, nonce, b"c", body),  # a guessed MAC
        _pickle_frame(mac, nonce, b"c", body + junk),
        _pickle_frame(good, nonce, b"c", body + junk) if junk else b"\x02",  # body changed
    ]
    for frame in frames:
        for key in (KEY, None, b"another key, 32 bytes long......"):
            with pytest.raises(_codec.CodecError):
                _codec.decode(frame, channel="c", key=key)
    # Signed right, but for another channel than it arrived on (a copy): refused too.
    with pytest.raises(_codec.CodecError, match="a copy"):
        _codec.decode(_pickle_frame(good, nonce, b"c", body), channel="d", key=KEY)
    assert _LOADED == []
    # Nothing rejected touched the replay memory (the one state a decode may change).
    assert (set(_codec._REPLAYS.seen), _codec._REPLAYS.floor) == replays
