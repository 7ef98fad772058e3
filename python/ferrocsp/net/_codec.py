"""How values travel on networked channels: a safe codec by default, signed pickle on request.

Frame: one format byte, then the body; a frame is at most ``MAX_MESSAGE`` bytes.

- ``0x01`` *safe*: a tagged binary encoding of ``None``, ``bool``, ``int`` (any size),
  ``float``, ``str``, ``bytes``, ``list``, ``tuple``, ``dict`` (keys of these types) and
  networked channel ends, nested at most ``MAX_DEPTH`` deep, with at most ``MAX_ITEMS``
  container elements and ``MAX_ENDS`` ends. Decoding builds only those types and never runs
  code, so any peer (or anyone able to publish on the subject) can at worst send a value of
  those types. An end is its kind, its channel's capacity and name, and a *ticket* (random,
  issued on the server by the sender, claimed once by the receiver: an end is made only for a
  live ticket).
- ``0x02`` *signed pickle*: 32 bytes of HMAC-SHA256, a 16-byte nonce (8 bytes of the
  sender's clock in ns, 8 random), the channel name it was sent on (one length byte, then the
  name), then the pickle. The MAC (key shared by the participants) covers a domain tag, the
  channel, the nonce and the pickle. Used only for values the safe codec cannot encode, and
  only when the connection has a ``pickle_key``. A receiver rejects, before unpickling, a
  message without the key or with another key, one that names another channel than the one
  it arrived on (a copy), and one whose nonce this process has seen (a replay; see
  ``_Replays`` for the bounded memory this takes).

Invariants:
- Decoding is pure: ``parse``/``decode`` build only plain values, and an end in the message
  becomes an inert ``EndRef`` (no server call, no counted end, no finalizer); the connection
  checks those and turns them into ends (``materialise``) only once the whole message has
  been accepted. The one state a decode changes is the replay memory, and only for a signed
  pickle whose signature verified.
- ``decode``/``parse`` either return or raise ``CodecError`` (never another exception type for
  malformed input, never executes code from the message), in time linear in the message
  (a dict with more than ``MAX_EQUAL_HASHES`` keys of one hash is rejected, so colliding keys
  cannot make insertion quadratic), allocating at most a small multiple of its size (every
  element takes at least one byte of the message, and containers are sized exactly).
- ``encode`` raises ``TypeError`` for a value it cannot send and ``ValueError`` for one whose
  frame would exceed the limits a receiver enforces.
- ``encode_scalar``/``decode_scalar`` are the per-operation fast paths for a top-level scalar:
  the same frames as ``encode``/``decode`` (tested against them), declining
  (``None``/``NOT_SCALAR``) whatever they do not handle.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import os
import pickle
import re
import struct
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = [
    "MAX_DEPTH",
    "MAX_ENDS",
    "MAX_EQUAL_HASHES",
    "MAX_ITEMS",
    "MAX_MESSAGE",
    "CodecError",
    "EndRef",
    "decode",
    "decode_scalar",
    "encode",
    "encode_scalar",
    "materialise",
    "parse",
]

SAFE = 1
PICKLE = 2
#: Deepest nesting of containers.
MAX_DEPTH = 64
#: Largest frame (NATS itself refuses payloads over 64 MiB; servers default to 1 MiB).
MAX_MESSAGE = 64 << 20
#: Most container elements (list/tuple items, dict entries) in one message, all levels.
MAX_ITEMS = 1 << 22
#: Most channel ends in one message (each costs the receiver a server check).
MAX_ENDS = 256
#: Most keys of one dict sharing one hash value: more can only be an attack on insertion
#: (equal full hashes make each insertion compare with every earlier one).
MAX_EQUAL_HASHES = 8
# A ticket becomes one token of a KV key (the server checks it again).
_TICKET = re.compile(r"[0-9A-Za-z-]{1,64}")
# str and bytes hashes are keyed by a per-process secret (unless PYTHONHASHSEED fixes it): a
# sender cannot choose such keys to collide, so their hashes need no counting.
_SECRET_HASHES = (str, bytes) if sys.flags.hash_randomization else ()
# Version 2: signed pickles carry a nonce and their channel (version 1 frames are rejected).
_DOMAIN = b"ferrocsp-net/2\0"

_Q = struct.Struct(">q")
_D = struct.Struct(">d")
_I = struct.Struct(">I")


#: ``decode_scalar``'s answer for a frame that is not one well-formed scalar.
NOT_SCALAR: Any = object()

_HEAD_B = bytes([SAFE]) + b"b"
_HEAD_S = bytes([SAFE]) + b"s"
_HEAD_I = bytes([SAFE]) + b"i"
_HEAD_F = bytes([SAFE]) + b"f"
_NONE = bytes([SAFE]) + b"N"
_TRUE = bytes([SAFE]) + b"T"
_FALSE = bytes([SAFE]) + b"F"
_SCALAR_MIN = -(1 << 63)
_SCALAR_MAX = 1 << 63


class CodecError(ValueError):
    """A message on a networked channel could not be decoded or authenticated (rejected)."""


#: Encodes a networked end: returns ``(kind, capacity, name, ticket)`` with kind
#: ``b"r"``/``b"w"``, or None for a value that is not an end.
EndEncoder = Callable[[Any], tuple[bytes, int, str, str] | None]


class EndRef:
    """An end as a message describes it: inert (no server state, no counting, no finalizer)
    until the connection checks it and ``materialise`` replaces it with a real end.

    Equality is identity: two ends of one channel sent as two dict keys stay two keys."""

    __slots__ = ("capacity", "kind", "name", "ticket")

    def __init__(self, kind: str, capacity: int, name: str, ticket: str = "") -> None:
        self.kind = kind  # "reader" or "writer"
        self.capacity = capacity
        self.name = name
        self.ticket = ticket

    def __repr__(self) -> str:
        return f"EndRef({self.kind!r}, {self.capacity}, {self.name!r}, {self.ticket!r})"


def _mac(key: bytes, channel: bytes, nonce: bytes, body: bytes) -> bytes:
    msg = _DOMAIN + bytes([len(channel)]) + channel + nonce + body
    return hmac.new(key, msg, hashlib.sha256).digest()


def _too_big(n: int) -> ValueError:
    return ValueError(
        f"value too large for a networked channel: its message would be {n} bytes, over the "
        f"{MAX_MESSAGE} byte limit every receiver enforces"
    )


def encode(value: Any, *, channel: str, key: bytes | None, end: EndEncoder) -> bytes:
    """The frame for ``value`` (safe codec if possible, else signed pickle if ``key``)."""
    out = bytearray([SAFE])
    try:
        _enc(value, out, end, 0, [0, 0])
    except _Unsupported as e:
        if key is None:
            raise TypeError(
                f"cannot send {e.args[0]} over a networked channel: the safe codec carries "
                "None, bool, int, float, str, bytes, list, tuple, dict and networked channel "
                "ends; pass pickle_key= to connect() (same key everywhere) to allow pickle"
            ) from None
        return _signed_pickle(value, channel, key)
    if len(out) > MAX_MESSAGE:
        raise _too_big(len(out))
    return bytes(out)


def _signed_pickle(value: Any, channel: str, key: bytes) -> bytes:
    try:
        body = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as pe:
        raise TypeError(
            f"cannot pickle {type(value).__name__} for a networked channel: {pe}"
        ) from pe
    chan = channel.encode()
    # The sender's clock first, so nonces sort by time (the replay memory relies on it).
    nonce = time.time_ns().to_bytes(8, "big") + os.urandom(8)
    frame = b"".join(
        (bytes([PICKLE]), _mac(key, chan, nonce, body), nonce, bytes([len(chan)]), chan, body)
    )
    if len(frame) > MAX_MESSAGE:
        raise _too_big(len(frame))
    return frame


def encode_scalar(value: Any) -> bytes | None:
    """The frame of a top-level ``bytes``, ``str``, ``int`` (64-bit), ``float``, ``None`` or
    ``bool`` (byte for byte what ``encode`` gives), or ``None`` for any other value.

    The per-operation fast path: no recursion, no end encoder, no intermediate buffer."""
    t = type(value)
    if t is bytes:
        b: bytes = value
        return _HEAD_B + _I.pack(len(b)) + b
    if t is str:
        raw: bytes = value.encode("utf-8", "surrogatepass")
        return _HEAD_S + _I.pack(len(raw)) + raw
    if t is int:
        if _SCALAR_MIN <= value < _SCALAR_MAX:
            return _HEAD_I + _Q.pack(value)
        return None
    if t is float:
        return _HEAD_F + _D.pack(value)
    if value is None:
        return _NONE
    if t is bool:
        return _TRUE if value else _FALSE
    return None


def decode_scalar(data: bytes) -> Any:
    """The value of a well-formed safe frame holding one ``bytes``, ``str``, ``int`` (64-bit),
    ``float``, ``None`` or ``bool``; ``NOT_SCALAR`` for anything else (``decode`` then judges
    it, with its errors). Never raises for malformed input."""
    n = len(data)
    if n < 2 or data[0] != SAFE:
        return NOT_SCALAR
    tag = data[1]
    if tag == 0x62 or tag == 0x73:  # b s
        if n < 6 or _I.unpack_from(data, 2)[0] != n - 6:
            return NOT_SCALAR
        if tag == 0x62:
            return data[6:]
        try:
            return data[6:].decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            return NOT_SCALAR
    if n == 10:
        if tag == 0x69:  # i
            return _Q.unpack_from(data, 2)[0]
        if tag == 0x66:  # f
            return _D.unpack_from(data, 2)[0]
    elif n == 2:
        if tag == 0x4E:  # N
            return None
        if tag == 0x54:  # T
            return True
        if tag == 0x46:  # F
            return False
    return NOT_SCALAR


class _Unsupported(Exception):
    pass


def _count(count: list[int], i: int, n: int, limit: int, what: str) -> None:
    count[i] += n
    if count[i] > limit:
        raise ValueError(
            f"value too large for a networked channel: more than {limit} {what} in one message"
        )


def _enc(v: Any, out: bytearray, end: EndEncoder, depth: int, count: list[int]) -> None:
    """Appends ``v``'s encoding; ``count``: ``[items, ends]`` so far (the receiver's limits)."""
    if depth > MAX_DEPTH:
        raise _Unsupported(f"a value nested more than {MAX_DEPTH} deep")
    t = type(v)
    if v is None:
        out += b"N"
    elif t is bool:
        out += b"T" if v else b"F"
    elif t is int:
        if -(1 << 63) <= v < (1 << 63):
            out += b"i"
            out += _Q.pack(v)
        else:
            raw = v.to_bytes((v.bit_length() + 8) // 8, "big", signed=True)
            out += b"I"
            out += _I.pack(len(raw))
            out += raw
    elif t is float:
        out += b"f"
        out += _D.pack(v)
    elif t is str:
        raw = v.encode("utf-8", "surrogatepass")
        out += b"s"
        out += _I.pack(len(raw))
        out += raw
    elif t is bytes or t is bytearray:
        out += b"b"
        out += _I.pack(len(v))
        out += v
    elif t is list or t is tuple:
        out += b"l" if t is list else b"t"
        out += _I.pack(len(v))
        _count(count, 0, len(v), MAX_ITEMS, "container elements")
        for x in v:
            _enc(x, out, end, depth + 1, count)
    elif t is dict:
        out += b"d"
        out += _I.pack(len(v))
        _count(count, 0, len(v), MAX_ITEMS, "container elements")
        for k, x in v.items():
            _enc(k, out, end, depth + 1, count)
            _enc(x, out, end, depth + 1, count)
    else:
        e = end(v)
        if e is None:
            raise _Unsupported(f"a value of type {t.__name__}")
        _count(count, 1, 1, MAX_ENDS, "channel ends")
        kind, capacity, name, ticket = e
        raw = name.encode()
        out += b"E"
        out += kind
        out += _Q.pack(capacity)
        out += _I.pack(len(raw))
        out += raw
        out += bytes([len(ticket)])
        out += ticket.encode()


def decode(data: bytes, *, channel: str, key: bytes | None) -> Any:
    """The value of a frame with ends left as ``EndRef``; ``CodecError`` for anything
    malformed, oversized, unsigned, forged, copied or replayed. Pure (see the module doc)."""
    return parse(data, channel=channel, key=key)[0]


def parse(data: bytes, *, channel: str, key: bytes | None) -> tuple[Any, list[EndRef]]:
    """``decode``, and the ``EndRef``s the value holds (in message order)."""
    n = len(data)
    if not n:
        raise CodecError("empty message")
    if n > MAX_MESSAGE:
        raise CodecError(f"message of {n} bytes is over the {MAX_MESSAGE} byte limit")
    fmt = data[0]
    if fmt == SAFE:
        st = _State()
        try:
            v, pos = _dec(memoryview(data), 1, st, 0)
        except CodecError:
            raise
        except (
            struct.error,
            UnicodeDecodeError,
            IndexError,
            ValueError,
            TypeError,
            RecursionError,
            OverflowError,
            MemoryError,
        ) as e:
            raise CodecError(f"malformed message: {e}") from None
        if pos != n:
            raise CodecError(f"malformed message: {n - pos} trailing bytes")
        return v, st.ends
    if fmt == PICKLE:
        return _unpickle(data, channel, key), []
    raise CodecError(f"unknown message format {fmt:#04x}")


def _unpickle(data: bytes, channel: str, key: bytes | None) -> Any:
    if key is None:
        raise CodecError(
            "received a pickled value but this connection has no pickle_key: rejected "
            "(pass the shared pickle_key= to connect() to accept pickles from peers)"
        )
    # format, MAC, nonce, channel length: then the channel name and the pickle.
    if len(data) < 1 + 32 + 16 + 1:
        raise CodecError("malformed pickle message (too short)")
    mac, nonce, clen = data[1:33], data[33:49], data[49]
    sent_on, body = data[50 : 50 + clen], data[50 + clen :]
    if len(sent_on) != clen or not hmac.compare_digest(mac, _mac(key, sent_on, nonce, body)):
        raise CodecError(
            "pickled value with a bad signature (forged, or another pickle_key): rejected"
        )
    if sent_on != channel.encode():
        raise CodecError(
            f"signed pickle sent on channel {sent_on.decode(errors='replace')!r} arrived on "
            f"{channel!r} (a copy): rejected"
        )
    if not _REPLAYS.first_time(nonce):
        raise CodecError("signed pickle already received by this process (a replay): rejected")
    try:
        return pickle.loads(body)
    except Exception as e:  # noqa: BLE001 - anything a (signed) pickle raises is a bad message
        raise CodecError(f"signed pickle failed to load: {e}") from None


class _Replays:
    """Nonces of signed pickles this process accepted, in bounded memory.

    It remembers the ``limit`` newest (by the sender's clock in the nonce); when it forgets the
    oldest, everything at or before that one's time is refused from then on (``floor``), so a
    replay is refused however old it is. The cost: a genuine pickle is refused too when
    ``limit`` pickles stamped later reached this process first (a value left in a buffered
    channel while this process took ``limit`` newer signed pickles); it is logged, like any
    rejected message."""

    def __init__(self, limit: int = 1 << 16) -> None:
        self.limit = limit
        self.seen: set[bytes] = set()
        self.heap: list[bytes] = []  # nonces sort by time first (big-endian ns)
        self.floor = b""
        self.lock = threading.Lock()

    def first_time(self, nonce: bytes) -> bool:
        with self.lock:
            if nonce <= self.floor or nonce in self.seen:
                return False
            self.seen.add(nonce)
            heapq.heappush(self.heap, nonce)
            while len(self.heap) > self.limit:
                old = heapq.heappop(self.heap)
                self.seen.discard(old)
                self.floor = max(self.floor, old)
            return True


_REPLAYS = _Replays()


def materialise(value: Any, make: Callable[[EndRef], Any]) -> Any:
    """``value`` with every ``EndRef`` replaced by ``make(ref)`` (lists in place, tuples and
    dicts rebuilt). Called only for a value that holds ends, after they were checked."""
    t = type(value)
    if t is EndRef:
        return make(value)
    if t is list:
        for i, x in enumerate(value):
            value[i] = materialise(x, make)
        return value
    if t is tuple:
        return tuple(materialise(x, make) for x in value)
    if t is dict:
        return {materialise(k, make): materialise(x, make) for k, x in value.items()}
    return value


class _State:
    """What one decode has counted so far, against the message limits."""

    __slots__ = ("ends", "items")

    def __init__(self) -> None:
        self.items = 0
        self.ends: list[EndRef] = []


def _need(buf: memoryview, pos: int, n: int) -> None:
    if pos + n > len(buf):
        raise CodecError("malformed message: truncated")


def _dec(buf: memoryview, pos: int, st: _State, depth: int) -> tuple[Any, int]:
    if depth > MAX_DEPTH:
        raise CodecError(f"malformed message: nested more than {MAX_DEPTH} deep")
    _need(buf, pos, 1)
    tag = buf[pos]
    pos += 1
    if tag == 0x4E:  # N
        return None, pos
    if tag == 0x54:  # T
        return True, pos
    if tag == 0x46:  # F
        return False, pos
    if tag == 0x69:  # i
        _need(buf, pos, 8)
        return _Q.unpack_from(buf, pos)[0], pos + 8
    if tag == 0x66:  # f
        _need(buf, pos, 8)
        return _D.unpack_from(buf, pos)[0], pos + 8
    if tag in (0x49, 0x73, 0x62):  # I s b
        _need(buf, pos, 4)
        n = _I.unpack_from(buf, pos)[0]
        pos += 4
        _need(buf, pos, n)
        raw = buf[pos : pos + n]
        pos += n
        if tag == 0x49:
            return int.from_bytes(raw, "big", signed=True), pos
        if tag == 0x73:
            return str(raw, "utf-8", "surrogatepass"), pos
        return raw.tobytes(), pos
    if tag in (0x6C, 0x74, 0x64):  # l t d
        _need(buf, pos, 4)
        n = _I.unpack_from(buf, pos)[0]
        pos += 4
        # Each item takes at least one byte: a count beyond the rest is malformed (and would
        # otherwise let a tiny message ask for a huge allocation).
        _need(buf, pos, n * (2 if tag == 0x64 else 1))
        st.items += n
        if st.items > MAX_ITEMS:
            raise CodecError(f"message over the limit of {MAX_ITEMS} container elements")
        if tag == 0x64:
            return _dec_dict(buf, pos, st, depth, n)
        items: list[Any] = [None] * n  # sized exactly: no over-allocation
        for i in range(n):
            items[i], pos = _dec(buf, pos, st, depth + 1)
        return (items if tag == 0x6C else tuple(items)), pos
    if tag == 0x45:  # E
        _need(buf, pos, 1 + 8 + 4)
        kind = buf[pos]
        capacity = _Q.unpack_from(buf, pos + 1)[0]
        n = _I.unpack_from(buf, pos + 9)[0]
        pos += 13
        _need(buf, pos, n)
        name = str(buf[pos : pos + n], "ascii")
        pos += n
        _need(buf, pos, 1)
        n = buf[pos]
        pos += 1
        _need(buf, pos, n)
        ticket = str(buf[pos : pos + n], "ascii")
        pos += n
        if kind not in (0x72, 0x77) or capacity < 0 or not _TICKET.fullmatch(ticket):  # r w
            raise CodecError("malformed message: bad channel end")
        if len(st.ends) >= MAX_ENDS:
            raise CodecError(f"message over the limit of {MAX_ENDS} channel ends")
        ref = EndRef("reader" if kind == 0x72 else "writer", capacity, name, ticket)
        st.ends.append(ref)
        return ref, pos
    raise CodecError(f"malformed message: unknown tag {tag:#04x}")


def _dec_dict(
    buf: memoryview, pos: int, st: _State, depth: int, n: int
) -> tuple[dict[Any, Any], int]:
    d: dict[Any, Any] = {}
    # How many keys so far had each hash. Keys of equal full hash make every insertion compare
    # with each earlier one (quadratic); keys of distinct hashes cannot, as CPython's probing
    # mixes in all hash bits within a few steps. Counting costs one dict operation per key,
    # on distinct int keys (so it is not open to the same attack).
    hashes: dict[int, int] = {}
    for _ in range(n):
        k, pos = _dec(buf, pos, st, depth + 1)
        if type(k) in _SECRET_HASHES:
            d[k], pos = _dec(buf, pos, st, depth + 1)
            continue
        try:
            h = hash(k)
        except TypeError:
            raise CodecError("malformed message: unhashable dict key") from None
        c = hashes.get(h, 0) + 1
        if c > MAX_EQUAL_HASHES:
            raise CodecError(
                f"malformed message: more than {MAX_EQUAL_HASHES} dict keys with one hash "
                "(keys chosen to collide)"
            )
        hashes[h] = c
        d[k], pos = _dec(buf, pos, st, depth + 1)
    return d, pos
