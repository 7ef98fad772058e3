"""PyCSP's addressable channels between interpreters on the compat layer:
``Channel(name, connect=(host, port))``, ``Channel.address``, ``@multiprocess(pycsp_host=,
pycsp_port=)`` / ``MultiProcess(..., pycsp_port=)``, ``ChannelConnectException``,
``ChannelBindException`` and ``shutdown()``, written in the style of PyCSP's
``test/unix/remotetest.py`` (which ``bench/compat/upstream.py`` runs unchanged)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from ferrocsp.compat.pycsp import _remote
from ferrocsp.compat.pycsp import parallel as pycsp

pytestmark = pytest.mark.timeout(60)


def host_writer(n: int = 1, name: str = "A") -> None:
    """Hosts channel ``name`` in its own interpreter and writes 0..n-1 to it."""
    cout = pycsp.Channel(name).writer()
    for i in range(n):
        cout(i)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def quick_connect() -> Iterator[None]:
    conf = pycsp.Configuration()
    old = conf.get(pycsp.SOCKETS_CONNECT_TIMEOUT), conf.get(pycsp.SOCKETS_CONNECT_RETRY_DELAY)
    conf.set(pycsp.SOCKETS_CONNECT_TIMEOUT, 0.3)
    conf.set(pycsp.SOCKETS_CONNECT_RETRY_DELAY, 0.05)
    try:
        yield
    finally:
        conf.set(pycsp.SOCKETS_CONNECT_TIMEOUT, old[0])
        conf.set(pycsp.SOCKETS_CONNECT_RETRY_DELAY, old[1])
        pycsp.shutdown()


@pytest.mark.usefixtures("quick_connect")
def test_connecting_where_no_server_listens_raises_channel_connect_exception() -> None:
    addr = ("127.0.0.1", free_port())
    t0 = time.monotonic()
    with pytest.raises(pycsp.ChannelConnectException) as info:
        pycsp.Channel("A", connect=addr)
    assert info.value.addr == addr
    assert "pycsp.Channel(connect=...)" in str(info.value)
    assert time.monotonic() - t0 < 5  # retried for SOCKETS_CONNECT_TIMEOUT, then gave up


@pytest.mark.usefixtures("quick_connect")
def test_a_channel_hosted_by_a_multiprocess_is_read_here_and_its_host_is_not_a_deadlock() -> None:
    addr = ("127.0.0.1", free_port())
    pycsp.Spawn(pycsp.MultiProcess(host_writer, 3, pycsp_host=addr[0], pycsp_port=addr[1]))
    # The host blocks writing long before anyone connects: with its channel server running it
    # is waiting for a peer that may come, not deadlocked (detection takes about 1 s).
    time.sleep(1.5)
    for _ in range(100):  # the child may still be starting its server
        try:
            chan = pycsp.Channel("A", connect=addr)
            break
        except pycsp.ChannelConnectException:
            time.sleep(0.1)
    else:
        pytest.fail("the host's channel server never came up")
    assert chan.address == addr
    cin = chan.reader()
    assert [cin(), cin(), cin()] == [0, 1, 2]
    cin.disconnect()
    pycsp.shutdown()  # joins the spawned host, which ended after its third write


@pytest.mark.usefixtures("quick_connect")
def test_a_taken_port_raises_channel_bind_exception_from_parallel() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = pycsp.multiprocess(pycsp_host="127.0.0.1", pycsp_port=port)(host_writer)(1)
        with pytest.raises(pycsp.ChannelBindException) as info:
            pycsp.Parallel(proc)
    assert "cannot bind" in str(info.value)


@pytest.mark.usefixtures("quick_connect")
def test_connect_waits_for_the_host_to_create_the_channel() -> None:
    addr = pycsp.Channel("first").address  # starts this interpreter's channel server
    got: list[Any] = []

    def client() -> None:
        cin = pycsp.Channel("later", connect=addr).reader()
        got.append(cin())

    t = threading.Thread(target=client)
    t.start()
    time.sleep(0.3)  # the request is waiting for a channel named "later"
    assert not got
    later = pycsp.Channel("later", buffer=1)
    later.writer()("hello")
    t.join(10)
    assert got == ["hello"]


def _raw(addr: tuple[str, int], data: bytes) -> bytes:
    with socket.create_connection(addr, timeout=5) as s:
        s.sendall(data)
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_WR)
        try:
            return s.recv(100)
        except ConnectionResetError:
            return b""  # closed with our bytes unread: closed all the same
        except TimeoutError:
            return b"(no answer)"


@pytest.mark.usefixtures("quick_connect")
def test_malformed_requests_end_their_connection_and_the_server_goes_on() -> None:
    chan = pycsp.Channel("served", buffer=1)
    addr = chan.address
    assert _raw(addr, b"GET / HTTP/1.0\r\n\r\n") == b""  # not our magic
    assert _raw(addr, _remote.MAGIC + struct.pack(">H", 0)) == b""  # empty name
    assert _raw(addr, _remote.MAGIC + struct.pack(">H", 60000)) == b""  # too long
    assert _raw(addr, _remote.MAGIC + struct.pack(">H", 10) + b"abc") == b""  # cut short
    assert _raw(addr, _remote.MAGIC + struct.pack(">H", 2) + b"\xff\xfe") == b""  # not UTF-8
    chan.writer()(42)
    assert pycsp.Channel("served", connect=addr).reader()() == 42


def _fake_server(reply: bytes) -> tuple[tuple[str, int], threading.Thread]:
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)

    def serve() -> None:
        with lsock:
            conn, _ = lsock.accept()
            with conn:
                conn.settimeout(5)
                with contextlib.suppress(OSError):
                    conn.recv(1000)
                    conn.sendall(reply)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return lsock.getsockname(), t


def _reply(**fields: Any) -> bytes:
    msg = {
        "boot": _remote._boot_id(),
        "uuid": "00" * 16,
        "holders": [[os.getpid(), 3]],
        "name": "A",
        "capacity": 0,
    }
    msg.update(fields)
    data = json.dumps(msg).encode()
    return struct.pack(">I", len(data)) + data


@pytest.mark.usefixtures("quick_connect")
@pytest.mark.parametrize(
    ("reply", "says"),
    [
        (b"\x00\x00", "closed mid-message"),
        (struct.pack(">I", 1 << 30), "reply of"),
        (struct.pack(">I", 5) + b"\xff{[}!", "did not hand out"),
        (_reply(boot="another-machine"), "ferrocsp.net"),
        (_reply(uuid="zz" * 16), "did not hand out"),
        (_reply(uuid="00"), "bad segment uuid"),
        (_reply(holders=[]), "bad holder list"),
        (_reply(holders=[[1, 2, 3]]), "bad holder"),
        (_reply(holders=[[-1, 2]]), "bad holder"),
        (_reply(holders=[["1", 2]]), "bad holder"),
        (_reply(capacity=-1), "bad capacity"),
        (_reply(capacity=True), "bad capacity"),
        (_reply(name="B"), "asked for channel"),
        (_reply(holders=[[os.getpid(), 999_999]]), "cannot attach"),
    ],
)
def test_a_bad_reply_raises_channel_connect_exception(reply: bytes, says: str) -> None:
    addr, t = _fake_server(reply)
    with pytest.raises(pycsp.ChannelConnectException, match=r"pycsp\.Channel") as info:
        pycsp.Channel("A", connect=addr)
    assert says in str(info.value)
    t.join(5)


def test_misuse_of_connect_names_the_compat_api() -> None:
    with pytest.raises(ValueError, match=r"pycsp\.Channel: connect= needs the name"):
        pycsp.Channel(connect=("127.0.0.1", 1))
    with pytest.raises(ValueError, match=r"pycsp\.Channel: do not give buffer="):
        pycsp.Channel("A", buffer=2, connect=("127.0.0.1", 1))
    with pytest.raises(pycsp.ChannelConnectException, match=r"pycsp\.Channel: connect= takes"):
        pycsp.Channel("A", connect="127.0.0.1:1")
    with pytest.raises(pycsp.InfoException, match=r"pycsp\.MultiProcess\.update"):
        pycsp.MultiProcess(host_writer).update(debug=True)


def test_pycsp_host_and_port_are_not_passed_to_the_function() -> None:
    p = pycsp.MultiProcess(host_writer, 2, pycsp_host="127.0.0.1", pycsp_port=1)
    assert p.kwargs == {}
    assert (p.pycsp_host, p.pycsp_port) == ("127.0.0.1", 1)
    copies = 3 * p
    assert all(c.pycsp_port == 1 for c in copies)  # type: ignore[attr-defined]


@pytest.mark.usefixtures("quick_connect")
def test_shutdown_stops_the_server_and_refuses_waiting_requests() -> None:
    addr = pycsp.Channel("x").address
    errors: list[BaseException] = []

    def client() -> None:
        try:
            pycsp.Channel("never-made", connect=addr)
        except pycsp.ChannelConnectException as exc:
            errors.append(exc)

    t = threading.Thread(target=client)
    t.start()
    time.sleep(0.3)
    pycsp.shutdown()
    t.join(10)
    assert not t.is_alive()
    assert len(errors) == 1
    assert "did not hand out" in str(errors[0])
    with pytest.raises(pycsp.ChannelConnectException):
        pycsp.Channel("x", connect=addr)  # nothing listens any more


@pytest.mark.usefixtures("quick_connect")
def test_spawn_returns_once_the_childs_server_is_bound() -> None:
    # PyCSP forked, so a spawned host had its port before the next line ran; fresh
    # interpreters take longer to start, and Spawn waits for the bind instead.
    addr = ("127.0.0.1", free_port())
    pycsp.Spawn(pycsp.MultiProcess(host_writer, 1, pycsp_host=addr[0], pycsp_port=addr[1]))
    second = pycsp.MultiProcess(host_writer, 1, pycsp_host=addr[0], pycsp_port=addr[1])
    with pytest.raises(pycsp.ChannelBindException):
        pycsp.Parallel(second)
    assert pycsp.Channel("A", connect=addr).reader()() == 0
    pycsp.shutdown()


@pytest.mark.usefixtures("quick_connect")
def test_a_configured_pycsp_port_serves_channels_from_their_creation() -> None:
    conf = pycsp.Configuration()
    port = free_port()
    conf.set(pycsp.PYCSP_PORT, port)
    try:
        chan = pycsp.Channel("configured", buffer=1)  # starts the server on PYCSP_PORT
        assert chan.address[1] == port
        chan.writer()("here")
        assert pycsp.Channel("configured", connect=("127.0.0.1", port)).reader()() == "here"
    finally:
        conf.set(pycsp.PYCSP_PORT, 0)
