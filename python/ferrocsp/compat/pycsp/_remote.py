"""PyCSP's addressable channels between interpreters: a channel server per interpreter,
``Channel(name, connect=(host, port))``, ``Channel.address``, ``@multiprocess(pycsp_host=,
pycsp_port=)`` and ``shutdown()``, carried by ferrocsp's shared-memory channels.

PyCSP hosted every channel in the interpreter that created it and served it over its own
socket protocol. Here the socket only *finds* a channel: a client connects to the host's
server, names the channel, and gets back what it needs to attach the channel's shared-memory
segment (the same reference that pickling a channel for an OS process carries: the segment's
uuid and the processes holding its memfd). From then on every read, write, selection, poison
and retire is ferrocsp's shared-memory channel, with no socket and no server in the path. So
the peers must run on the same machine (the same kernel, user and pid namespace); a host on
another machine is refused with ``ChannelConnectException`` naming ``ferrocsp.net``.

The exchange (one TCP connection per ``Channel(name, connect=...)``):
    client -> server: ``MAGIC`` + u16 name length + the name (UTF-8)
    server -> client: u32 length + a JSON object ``{boot, uuid, holders, name, capacity}``
                      (sent once a channel of that name exists here: PyCSP queued requests
                      for a channel not created yet, so a client may come first)
    client -> server: one byte, after it attached the segment (the host may exit then)

Invariants:
- Nothing starts at import. The server starts on first need: ``Channel.address`` of a local
  channel, a ``@multiprocess`` process with ``pycsp_host``/``pycsp_port`` (in its child,
  before its function runs: a port in use is ``ChannelBindException`` there), or a channel
  created while ``PYCSP_PORT`` (environment or ``Configuration``) names a port.
- Every channel made in this interpreter is findable by its name while the program holds it
  (a weak registry: a channel the program dropped is not kept alive for remote peers); the
  newest channel of a name wins.
- Everything read from a socket is untrusted: sizes are bounded before reading, the reply is
  JSON (no pickle) checked field by field, and a malformed exchange ends that connection
  (server side) or raises ``ChannelConnectException`` (client side); never a hang (every
  socket wait has a timeout) or a crash of the server.
- While the server runs, its thread is a ferrocsp participant that is never blocked, so
  deadlock detection never declares a network whose peers may still connect: a process
  waiting for a remote reader is waiting for a peer that can come.
- ``stop()`` (``shutdown()``, the end of a ``@multiprocess`` process, interpreter exit) closes
  the listening socket, refuses the requests still waiting for a name, and waits (bounded)
  for hand-outs under way to be acknowledged, so a client never attaches a segment whose
  only holder has exited.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import struct
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

import ferrocsp as csp

from ... import _shm
from ._config import (
    PYCSP_HOST,
    PYCSP_PORT,
    SOCKETS_CONNECT_RETRY_DELAY,
    SOCKETS_CONNECT_TIMEOUT,
    Configuration,
)
from ._errors import ChannelBindException, ChannelConnectException

if TYPE_CHECKING:
    from ._channel import Channel

__all__ = ["address", "connect", "register", "serve", "stop", "want_server"]

MAGIC = b"FCSPC1"
#: Longest channel name a request may carry (PyCSP allowed 32 characters).
MAX_NAME = 256
#: Largest reply a client accepts (a reply is about 200 bytes plus 20 per holder).
MAX_REPLY = 64 * 1024
#: Most holders a reply may list (a segment's holders are its live processes).
MAX_HOLDERS = 1024
#: Seconds a peer has to send its part of the exchange before the connection is dropped.
IO_TIMEOUT = 10.0
#: Seconds ``stop()`` waits for hand-outs under way to be acknowledged.
DRAIN_TIMEOUT = 10.0

_lock = threading.Condition()
_names: weakref.WeakValueDictionary[str, Channel] = weakref.WeakValueDictionary()
_server: _Server | None = None


def _boot_id() -> str:
    """This machine's boot id: two processes with the same one share a kernel (and /proc)."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read(64).strip()
    except OSError:
        return ""


def register(chan: Channel) -> None:
    """Makes ``chan`` findable by its name from other interpreters (see the invariants)."""
    with _lock:
        _names[chan.name] = chan
        if _server is not None:
            _lock.notify_all()
    if _server is None and want_server():
        serve("", None)


def want_server() -> bool:
    """Whether the program asked for a fixed server port (``PYCSP_PORT``)."""
    return bool(Configuration().get(PYCSP_PORT) or os.environ.get("PYCSP_PORT"))


def _configured() -> tuple[str, int]:
    conf = Configuration()
    host = conf.get(PYCSP_HOST) or os.environ.get("PYCSP_HOST") or "127.0.0.1"
    port = conf.get(PYCSP_PORT) or os.environ.get("PYCSP_PORT") or 0
    try:
        return str(host), int(port)
    except ValueError:
        raise ChannelBindException(
            (host, port), f"pycsp.Channel: PYCSP_PORT must be a port number, got {port!r}"
        ) from None


def serve(host: str, port: int | None) -> tuple[str, int]:
    """Starts this interpreter's channel server on ``(host, port)`` (defaults from
    ``PYCSP_HOST``/``PYCSP_PORT``, then 127.0.0.1 and any free port) unless one runs;
    returns its address. A port that cannot be bound raises ``ChannelBindException``."""
    global _server
    with _lock:
        if _server is not None:
            return _server.address
        conf_host, conf_port = _configured()
        addr = (host or conf_host, conf_port if port is None else port)
        _server = _Server(addr)
        return _server.address


def address() -> tuple[str, int]:
    """The address of this interpreter's channel server (started if needed)."""
    return serve("", None)


def stop() -> None:
    """Stops the server (if any): see the invariants."""
    global _server
    with _lock:
        server, _server = _server, None
        _lock.notify_all()
    if server is not None:
        server.close()


class _Server:
    """The listening socket and its accept thread; one handshake thread per connection."""

    def __init__(self, addr: tuple[str, int]) -> None:
        try:
            infos = socket.getaddrinfo(addr[0], addr[1], type=socket.SOCK_STREAM)
            family, _, _, _, sockaddr = infos[0]
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(sockaddr)
                sock.listen(64)
            except BaseException:
                sock.close()
                raise
        except (OSError, OverflowError, TypeError) as exc:
            raise ChannelBindException(
                addr,
                f"pycsp channel server (pycsp_host/pycsp_port, PYCSP_HOST/PYCSP_PORT): cannot "
                f"bind {addr[0]}:{addr[1]}: {exc}",
            ) from None
        self.sock = sock
        self.address: tuple[str, int] = (addr[0], sock.getsockname()[1])
        self.closed = False
        self.pending = 0  # hand-outs sent and not yet acknowledged
        self.thread = threading.Thread(
            target=self._accept, name=f"pycsp channel server {self.address}", daemon=True
        )
        self.thread.start()

    def _accept(self) -> None:
        # One channel operation makes this thread a deadlock-detection participant; it stays
        # one, never blocked in a channel operation, for as long as it accepts.
        with contextlib.suppress(csp.WouldBlock):
            csp.Channel(1).read_nowait()
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            threading.Thread(
                target=self._handshake, args=(conn,), name="pycsp channel hand-out", daemon=True
            ).start()

    def _handshake(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(IO_TIMEOUT)
            try:
                name = _read_request(conn)
                chan = self._await_name(name)
                if chan is None:
                    return  # shutting down: the client sees the connection close
                side = _shm.share(chan._ch)
                reply = {
                    "boot": _boot_id(),
                    "uuid": side.uuid.hex(),
                    "holders": [list(h) for h in side.holders],
                    "name": chan.name,
                    "capacity": chan.buffer,
                }
                data = json.dumps(reply).encode()
                with _lock:
                    self.pending += 1
                try:
                    conn.sendall(struct.pack(">I", len(data)) + data)
                    conn.recv(1)  # the client attached (or gave up): the host may exit now
                finally:
                    with _lock:
                        self.pending -= 1
                        _lock.notify_all()
            except (OSError, ValueError):
                return  # a peer that breaks the exchange loses its connection, nothing more

    def _await_name(self, name: str) -> Channel | None:
        with _lock:
            while not self.closed:
                chan = _names.get(name)
                if chan is not None:
                    return chan
                _lock.wait()
        return None

    def close(self) -> None:
        with _lock:
            self.closed = True
            _lock.notify_all()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        if self.thread is not threading.current_thread():
            self.thread.join(IO_TIMEOUT)
        deadline = time.monotonic() + DRAIN_TIMEOUT
        with _lock:
            while self.pending and time.monotonic() < deadline:
                _lock.wait(deadline - time.monotonic())


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise ValueError("connection closed mid-message")
        buf += chunk
    return bytes(buf)


def _read_request(conn: socket.socket) -> str:
    head = _recv_exact(conn, len(MAGIC) + 2)
    if head[: len(MAGIC)] != MAGIC:
        raise ValueError("not a pycsp channel request")
    (n,) = struct.unpack(">H", head[len(MAGIC) :])
    if not 0 < n <= MAX_NAME:
        raise ValueError(f"channel name length {n} out of range")
    return _recv_exact(conn, n).decode("utf-8")


def _check_reply(raw: bytes, name: str) -> tuple[bytes, list[tuple[int, int]], int]:
    """The reply's (uuid, holders, capacity), or ``ValueError`` saying what is wrong."""
    msg = json.loads(raw.decode("utf-8"))
    if not isinstance(msg, dict):
        raise ValueError("reply is not an object")
    if msg.get("boot") != _boot_id() or not msg.get("boot"):
        raise ValueError("the host runs on another machine")
    uuid_hex, holders, capacity = msg.get("uuid"), msg.get("holders"), msg.get("capacity")
    if not isinstance(uuid_hex, str) or len(uuid_hex) != 32:
        raise ValueError("bad segment uuid")
    uuid = bytes.fromhex(uuid_hex)
    if not isinstance(holders, list) or not 0 < len(holders) <= MAX_HOLDERS:
        raise ValueError("bad holder list")
    pairs: list[tuple[int, int]] = []
    for h in holders:
        ok = isinstance(h, list) and len(h) == 2
        if not ok or not all(type(x) is int and 0 <= x < 2**31 for x in h):
            raise ValueError(f"bad holder {h!r}")
        pairs.append((h[0], h[1]))
    if type(capacity) is not int or not 0 <= capacity < 2**31:
        raise ValueError(f"bad capacity {capacity!r}")
    if msg.get("name") != name:
        raise ValueError(f"asked for channel {name!r}, got {msg.get('name')!r}")
    return uuid, pairs, capacity


def _dial(addr: tuple[str, int]) -> socket.socket:
    """A connection to ``addr``, retried as PyCSP did (``SOCKETS_CONNECT_TIMEOUT`` seconds,
    ``SOCKETS_CONNECT_RETRY_DELAY`` apart); ``ChannelConnectException`` when it never opens."""
    conf = Configuration()
    deadline = time.monotonic() + float(conf.get(SOCKETS_CONNECT_TIMEOUT))
    delay = max(0.01, float(conf.get(SOCKETS_CONNECT_RETRY_DELAY)))
    while True:
        try:
            return socket.create_connection(addr, timeout=IO_TIMEOUT)
        except OSError as exc:
            retry = exc.errno in (errno.ECONNREFUSED, errno.ECONNRESET, errno.EAGAIN)
            if not retry or time.monotonic() + delay > deadline:
                raise ChannelConnectException(
                    addr, f"pycsp.Channel(connect=...): no channel server at {addr}: {exc}"
                ) from None
            time.sleep(delay)


def connect(name: str, addr: Any) -> csp.Channel:
    """The channel ``name`` hosted by the interpreter whose server listens on ``addr``,
    attached here; waits while the host has not created it yet."""
    if (
        not isinstance(addr, tuple | list)
        or len(addr) != 2
        or not isinstance(addr[0], str)
        or isinstance(addr[1], bool)
        or not isinstance(addr[1], int)
    ):
        raise ChannelConnectException(
            addr, f"pycsp.Channel: connect= takes a (host, port) pair, got {addr!r}"
        )
    target = (addr[0], addr[1])
    ch: csp.Channel = csp.io(_connect, name, target)  # a greenlet process keeps its peers going
    return ch


def _connect(name: str, addr: tuple[str, int]) -> csp.Channel:
    wire = name.encode("utf-8")
    if not 0 < len(wire) <= MAX_NAME:
        raise ChannelConnectException(
            addr, f"pycsp.Channel: a connected channel's name takes 1-{MAX_NAME} bytes"
        )
    with _dial(addr) as conn:
        try:
            conn.sendall(MAGIC + struct.pack(">H", len(wire)) + wire)
            conn.settimeout(None)  # the host may create the channel later (PyCSP waited too)
            head = _recv_exact(conn, 4)
            conn.settimeout(IO_TIMEOUT)
            (n,) = struct.unpack(">I", head)
            if n > MAX_REPLY:
                raise ValueError(f"reply of {n} bytes")
            uuid, holders, capacity = _check_reply(_recv_exact(conn, n), name)
        except (OSError, ValueError) as exc:
            raise ChannelConnectException(
                addr,
                f"pycsp.Channel(connect=...): the server at {addr} did not hand out channel "
                f"{name!r}: {exc}" + _hint(exc),
            ) from None
        try:
            ch = _shm.restore_channel(uuid, holders, name, capacity)
        except Exception as exc:  # noqa: BLE001 - any attach failure means: cannot connect
            raise ChannelConnectException(
                addr,
                f"pycsp.Channel(connect=...): cannot attach channel {name!r} from {addr}: {exc}",
            ) from None
        with contextlib.suppress(OSError):
            conn.sendall(b"\x01")
        return ch


def _hint(exc: BaseException) -> str:
    if "another machine" in str(exc):
        return (
            " (ferrocsp.compat.pycsp connects interpreters of one machine through shared "
            "memory; between machines use ferrocsp.net)"
        )
    return ""
