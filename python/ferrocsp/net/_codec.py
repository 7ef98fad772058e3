"""How values travel on networked channels: a safe codec by default, signed pickle on request.

Frame: one format byte, then the body.

- ``0x01`` *safe*: a tagged binary encoding of ``None``, ``bool``, ``int`` (any size),
  ``float``, ``str``, ``bytes``, ``list``, ``tuple``, ``dict`` (keys of these types) and
  networked channel ends, nested at most ``MAX_DEPTH`` deep. Decoding builds only those types
  and never runs code, so any peer (or anyone able to publish on the subject) can at worst
  send a value of those types.
- ``0x02`` *signed pickle*: 32 bytes of HMAC-SHA256 (key shared by the participants, over a
  domain tag, the channel name and the pickle), then the pickle. Used only for values the safe
  codec cannot encode, and only when the connection has a ``pickle_key``. A receiver without
  the key, or with another key, rejects the message before unpickling anything.

Invariants: ``decode`` either returns a value or raises ``CodecError`` (never another
exception type for malformed input, never executes code from the message); ``encode`` raises
``TypeError`` for a value it cannot send. ``encode_scalar``/``decode_scalar`` are the
per-operation fast paths for a top-level scalar: the same frames as ``encode``/``decode``
(tested against them), declining (``None``/``NOT_SCALAR``) whatever they do not handle.
"""

from __future__ import annotations

import hashlib
import hmac
import pickle
import struct
from collections.abc import Callable
from typing import Any

__all__ = ["MAX_DEPTH", "CodecError", "decode", "decode_scalar", "encode", "encode_scalar"]

SAFE = 1
PICKLE = 2
MAX_DEPTH = 64
_DOMAIN = b"ferrocsp-net/1\0"

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


#: Encodes a networked end: returns ``(kind, capacity, name)`` with kind ``b"r"``/``b"w"``.
EndEncoder = Callable[[Any], tuple[bytes, int, str] | None]
#: Rebuilds a networked end from ``(kind, capacity, name)``.
EndDecoder = Callable[[bytes, int, str], Any]


def _mac(key: bytes, channel: str, body: bytes) -> bytes:
    return hmac.new(key, _DOMAIN + channel.encode() + b"\0" + body, hashlib.sha256).digest()


def encode(value: Any, *, channel: str, key: bytes | None, end: EndEncoder) -> bytes:
    """The frame for ``value`` (safe codec if possible, else signed pickle if ``key``)."""
    out = bytearray([SAFE])
    try:
        _enc(value, out, end, 0)
    except _Unsupported as e:
        if key is None:
            raise TypeError(
                f"cannot send {e.args[0]} over a networked channel: the safe codec carries "
                "None, bool, int, float, str, bytes, list, tuple, dict and networked channel "
                "ends; pass pickle_key= to connect() (same key everywhere) to allow pickle"
            ) from None
        try:
            body = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as pe:
            raise TypeError(
                f"cannot pickle {type(value).__name__} for a networked channel: {pe}"
            ) from pe
        return bytes([PICKLE]) + _mac(key, channel, body) + body
    return bytes(out)


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


def _enc(v: Any, out: bytearray, end: EndEncoder, depth: int) -> None:
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
        for x in v:
            _enc(x, out, end, depth + 1)
    elif t is dict:
        out += b"d"
        out += _I.pack(len(v))
        for k, x in v.items():
            _enc(k, out, end, depth + 1)
            _enc(x, out, end, depth + 1)
    else:
        e = end(v)
        if e is None:
            raise _Unsupported(f"a value of type {t.__name__}")
        kind, capacity, name = e
        raw = name.encode()
        out += b"E"
        out += kind
        out += _Q.pack(capacity)
        out += _I.pack(len(raw))
        out += raw


def decode(data: bytes, *, channel: str, key: bytes | None, end: EndDecoder) -> Any:
    """The value of a frame; ``CodecError`` for anything malformed, unsigned or forged."""
    if not data:
        raise CodecError("empty message")
    fmt = data[0]
    if fmt == SAFE:
        try:
            v, pos = _dec(memoryview(data), 1, end, 0)
        except CodecError:
            raise
        except (
            struct.error,
            UnicodeDecodeError,
            IndexError,
            ValueError,
            TypeError,
            RecursionError,
        ) as e:
            raise CodecError(f"malformed message: {e}") from None
        if pos != len(data):
            raise CodecError(f"malformed message: {len(data) - pos} trailing bytes")
        return v
    if fmt == PICKLE:
        if key is None:
            raise CodecError(
                "received a pickled value but this connection has no pickle_key: rejected "
                "(pass the shared pickle_key= to connect() to accept pickles from peers)"
            )
        if len(data) < 33:
            raise CodecError("malformed pickle message (too short)")
        mac, body = data[1:33], data[33:]
        if not hmac.compare_digest(mac, _mac(key, channel, body)):
            raise CodecError(
                "pickled value with a bad signature (forged, or another pickle_key): rejected"
            )
        try:
            return pickle.loads(body)
        except Exception as e:  # noqa: BLE001 - anything a (signed) pickle raises is a bad message
            raise CodecError(f"signed pickle failed to load: {e}") from None
    raise CodecError(f"unknown message format {fmt:#04x}")


def _need(buf: memoryview, pos: int, n: int) -> None:
    if pos + n > len(buf):
        raise CodecError("malformed message: truncated")


def _dec(buf: memoryview, pos: int, end: EndDecoder, depth: int) -> tuple[Any, int]:
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
        raw = bytes(buf[pos : pos + n])
        pos += n
        if tag == 0x49:
            return int.from_bytes(raw, "big", signed=True), pos
        if tag == 0x73:
            return raw.decode("utf-8", "surrogatepass"), pos
        return raw, pos
    if tag in (0x6C, 0x74, 0x64):  # l t d
        _need(buf, pos, 4)
        n = _I.unpack_from(buf, pos)[0]
        pos += 4
        # Each item takes at least one byte: a count beyond the rest is malformed (and would
        # otherwise let a tiny message ask for a huge allocation).
        _need(buf, pos, n * (2 if tag == 0x64 else 1))
        if tag == 0x64:
            d: dict[Any, Any] = {}
            for _ in range(n):
                k, pos = _dec(buf, pos, end, depth + 1)
                try:
                    hash(k)
                except TypeError:
                    raise CodecError("malformed message: unhashable dict key") from None
                d[k], pos = _dec(buf, pos, end, depth + 1)
            return d, pos
        items = []
        for _ in range(n):
            x, pos = _dec(buf, pos, end, depth + 1)
            items.append(x)
        return (items if tag == 0x6C else tuple(items)), pos
    if tag == 0x45:  # E
        _need(buf, pos, 1 + 8 + 4)
        kind = bytes(buf[pos : pos + 1])
        capacity = _Q.unpack_from(buf, pos + 1)[0]
        n = _I.unpack_from(buf, pos + 9)[0]
        pos += 13
        _need(buf, pos, n)
        name = bytes(buf[pos : pos + n]).decode("ascii")
        pos += n
        if kind not in (b"r", b"w") or capacity < 0:
            raise CodecError("malformed message: bad channel end")
        return end(kind, capacity, name), pos
    raise CodecError(f"malformed message: unknown tag {tag:#04x}")
