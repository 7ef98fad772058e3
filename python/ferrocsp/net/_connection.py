"""``connect()`` and ``Connection``: a NATS connection and the channels opened through it.

Invariants:
- One ``Channel`` object per (connection, name) while it is referenced (a networked
  ``ferrocsp.Channel``: the native type of every channel, with the networked flavor); the
  native side shares one set of subscriptions per channel name per connection.
- The codec is the connection's: a ``pickle_key`` set here signs what this connection sends
  and is required to accept pickles it receives.
- Nothing from the wire acts before it is accepted: ``_decode`` parses the whole message
  (pure, ``_codec.parse``), then checks every end it names against the server without creating
  anything (the channel must exist with the stated capacity), and only then opens those
  channels and makes the ends.
- No secret (password, token, nkey seed, credentials in the URL, pickle key) appears in a
  ``repr``, a message or a log line: the URL is shown as the native side redacts it.
- Test hooks are not part of ``connect()``: the tests use ``_connect`` with ``hooks=``.
"""

from __future__ import annotations

import os
import secrets
import weakref
from collections.abc import Sequence
from typing import Any, NamedTuple

from .. import _native
from .._errors import ChannelRetired
from .._native import Channel, Reader, Writer
from . import _codec

__all__ = ["Connection", "connect"]

#: An end carried by a message being sent, with its ticket.
_Sent = tuple["Reader[Any] | Writer[Any]", str]


def _path(v: str | os.PathLike[str] | None, what: str) -> str | None:
    if v is None:
        return None
    p = os.fspath(v)
    if not os.path.exists(p):
        raise ValueError(f"{what} file not found: {p}")
    return p


def _num(v: float, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not v > 0:
        raise ValueError(f"{what} must be a positive number of seconds, got {v!r}")
    return float(v)


def connect(
    url: str = "nats://127.0.0.1:4222",
    *,
    user: str | None = None,
    password: str | None = None,
    token: str | None = None,
    nkey_seed: str | None = None,
    credentials: str | os.PathLike[str] | None = None,
    tls_ca: str | os.PathLike[str] | None = None,
    tls_cert: str | os.PathLike[str] | None = None,
    tls_key: str | os.PathLike[str] | None = None,
    tls_required: bool = False,
    name: str | None = None,
    connect_timeout: float = 5.0,
    ack_timeout: float = 5.0,
    reconnect_timeout: float = 30.0,
    lease_ttl: float = 10.0,
    pickle_key: bytes | None = None,
    namespace: str | None = None,
) -> Connection:
    """Connects to a NATS server with JetStream (``nats-server -js``).

    ``url`` may list several servers of a cluster, comma separated. Authentication passes
    through to the server: ``user``/``password``, ``token``, ``nkey_seed`` (an ``SU...``
    seed), ``credentials`` (a ``.creds`` file); TLS with ``tls_ca`` (server CA),
    ``tls_cert``/``tls_key`` (client certificate) and ``tls_required``.

    ``connect_timeout``: an unreachable server raises ``ConnectionError`` after at most this
    long (no hang); so does a server that refuses the credentials (the message says so); a
    malformed URL raises ``ValueError``. ``ack_timeout``: how long a writer waits for a
    reader's acknowledgement before re-sending (a reader that died after receiving).
    ``reconnect_timeout``: how long operations wait for a lost server to come back before
    raising ``ConnectionError``.
    ``lease_ttl``: the lease on this process's channel ends (0.5 s to 1 hour, default 10 s):
    refreshed in the background every third of it; once a process is dead (killed, its
    machine lost) for this long, its ends go away, so that its readers see end-of-stream (or
    its writers ``ChannelRetired``) within about 1.5 times the lease (docs/net.md, "Dead
    participants"). Every participant should use the same.
    ``pickle_key``: a secret shared by all participants; values the safe codec cannot carry
    are then pickled and signed with HMAC-SHA256, and signed pickles from peers are accepted.
    Without it, pickles are refused both ways.
    ``namespace``: keeps this application's channels apart from other applications' on the
    same server (its own subjects ``ferrocsp-<namespace>.>``, streams and KV bucket); 1-32
    characters from ``A-Z a-z 0-9 -``. Participants must use the same namespace to share a
    channel. The default is the shared ``ferrocsp`` namespace.
    """
    return _connect(
        url,
        user=user,
        password=password,
        token=token,
        nkey_seed=nkey_seed,
        credentials=credentials,
        tls_ca=tls_ca,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_required=tls_required,
        name=name,
        connect_timeout=connect_timeout,
        ack_timeout=ack_timeout,
        reconnect_timeout=reconnect_timeout,
        lease_ttl=lease_ttl,
        pickle_key=pickle_key,
        namespace=namespace,
    )


class Hooks(NamedTuple):
    """Fault injection for the tests (never set outside them).

    ``hold_acks``: readers of the connection take values but never acknowledge them (a
    process that dies between the two). ``drop_commits``: an Output guard that fired sends
    nothing (a process that dies after its Alt chose the guard, before the value left).
    ``fresh_any_time``: batch reads skip the claim of a first delivery whose confirmed ack is
    answered at all, however late (the timing bound of ``fresh.rs`` removed, to show what it
    is for). ``fresh_no_floor``: a batch read takes the answer to its last confirmed ack as
    proof that all of its first deliveries' acks were applied, without asking for the ack
    floor (to show what the floor is for, when an earlier ack is lost)."""

    hold_acks: bool = False
    drop_commits: bool = False
    fresh_any_time: bool = False
    fresh_no_floor: bool = False


def _connect(
    url: str = "nats://127.0.0.1:4222",
    *,
    user: str | None = None,
    password: str | None = None,
    token: str | None = None,
    nkey_seed: str | None = None,
    credentials: str | os.PathLike[str] | None = None,
    tls_ca: str | os.PathLike[str] | None = None,
    tls_cert: str | os.PathLike[str] | None = None,
    tls_key: str | os.PathLike[str] | None = None,
    tls_required: bool = False,
    name: str | None = None,
    connect_timeout: float = 5.0,
    ack_timeout: float = 5.0,
    reconnect_timeout: float = 30.0,
    lease_ttl: float = 10.0,
    pickle_key: bytes | None = None,
    namespace: str | None = None,
    hooks: Hooks = Hooks(),  # noqa: B008 - an immutable NamedTuple
) -> Connection:
    """``connect()`` (same arguments and defaults), with test ``hooks``."""
    if not isinstance(url, str) or not url:
        raise TypeError("url must be a non-empty string such as 'nats://127.0.0.1:4222'")
    if (user is None) != (password is None):
        raise ValueError("user and password go together")
    if pickle_key is not None:
        if not isinstance(pickle_key, bytes):
            raise TypeError("pickle_key must be bytes")
        if len(pickle_key) < 16:
            raise ValueError("pickle_key must be at least 16 bytes (use secrets.token_bytes(32))")
    if namespace is not None and not isinstance(namespace, str):
        raise TypeError(f"namespace must be a str, not {type(namespace).__name__}")
    if namespace == "":
        raise ValueError("namespace must not be empty (leave it out for the default)")
    if (tls_cert is None) != (tls_key is None):
        raise ValueError("tls_cert and tls_key go together")
    if not hasattr(_native, "_net_connect"):
        raise RuntimeError(
            "this ferrocsp was built without networked channels (cargo feature 'net' of "
            "crates/ferrocsp-py, on by default)"
        )
    # What a backend='os' child needs to open the same connection (net/_cross.py): kept in
    # memory, handed to the child by the OS backend's bootstrap, never pickled with a value.
    options = {
        "url": url,
        "user": user,
        "password": password,
        "token": token,
        "nkey_seed": nkey_seed,
        "credentials": credentials,
        "tls_ca": tls_ca,
        "tls_cert": tls_cert,
        "tls_key": tls_key,
        "tls_required": tls_required,
        "name": name,
        "connect_timeout": connect_timeout,
        "ack_timeout": ack_timeout,
        "reconnect_timeout": reconnect_timeout,
        "lease_ttl": lease_ttl,
        "pickle_key": pickle_key,
        "namespace": namespace,
        "hooks": hooks,
    }
    native = _native._net_connect(
        url,
        user=user,
        password=password,
        token=token,
        nkey_seed=nkey_seed,
        credentials=_path(credentials, "credentials"),
        tls_ca=_path(tls_ca, "tls_ca"),
        tls_cert=_path(tls_cert, "tls_cert"),
        tls_key=_path(tls_key, "tls_key"),
        tls_required=bool(tls_required),
        name=name,
        namespace=namespace or "",
        connect_timeout=_num(connect_timeout, "connect_timeout"),
        ack_timeout=_num(ack_timeout, "ack_timeout"),
        reconnect_timeout=_num(reconnect_timeout, "reconnect_timeout"),
        lease_ttl=_num(lease_ttl, "lease_ttl"),
        hold_acks=bool(hooks.hold_acks),
        drop_commits=bool(hooks.drop_commits),
        fresh_any_time=bool(hooks.fresh_any_time),
        fresh_no_floor=bool(hooks.fresh_no_floor),
    )
    conn = Connection(native, pickle_key, namespace or "")
    conn._options = options
    return conn


class Connection:
    """A connection to a NATS server; ``channel(name, capacity)`` opens networked channels.

    Use as a context manager, or call ``close()``: operations still waiting then fail with
    ``ConnectionError``.
    """

    __slots__ = (
        "__weakref__",
        "_channels",
        "_cross_key",
        "_key",
        "_namespace",
        "_native",
        "_options",
    )

    def __init__(self, native: Any, pickle_key: bytes | None, namespace: str = "") -> None:
        self._native = native
        self._key = pickle_key
        self._namespace = namespace
        #: ``_connect``'s arguments, for backend='os' children (net/_cross.py).
        self._options: dict[str, Any] = {}
        #: This connection's key when its channels cross OS processes (net/_cross.py).
        self._cross_key: str | None = None
        self._channels: weakref.WeakValueDictionary[str, Channel[Any]] = (
            weakref.WeakValueDictionary()
        )

    @property
    def url(self) -> str:
        """The server URL(s), without credentials (``nats://***@host:4222``)."""
        url: str = self._native.url
        return url

    def channel(self, name: str, capacity: int = 0) -> Channel[Any]:
        """The networked channel ``name``, created on the server if new (the same object as
        ``ferrocsp.Channel(capacity, name=name, net=self)``).

        ``name``: 1-64 characters from ``A-Z a-z 0-9 _ -``; every participant naming it shares
        it. ``capacity``: 0 for rendezvous, else the server-side buffer size; every participant
        must use the same (``ValueError`` otherwise).
        """
        if not isinstance(name, str):
            raise TypeError(f"channel name must be a str, not {type(name).__name__}")
        if isinstance(capacity, bool) or not isinstance(capacity, int):
            raise TypeError(f"capacity must be an int, not {type(capacity).__name__}")
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        ch = self._channels.get(name)
        if ch is not None:
            if ch.capacity != capacity:
                raise ValueError(
                    f"networked channel '{name}' exists with capacity {ch.capacity}; "
                    f"cannot open it with capacity {capacity}"
                )
            return ch
        ch = Channel._networked(self._native.channel(name, capacity), self)
        self._channels[name] = ch
        return ch

    def close(self) -> None:
        """Closes the connection (idempotent)."""
        self._native.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def namespace(self) -> str | None:
        """The namespace given to ``connect()`` (None: the default one)."""
        return self._namespace or None

    def __repr__(self) -> str:
        ns = f", namespace={self._namespace!r}" if self._namespace else ""
        return f"Connection({self.url!r}{ns})"

    # --- codec ---------------------------------------------------------------------------
    # Called by the native channel (``crates/ferrocsp-py/src/net_side.rs``) and ``_aio``.
    def _encode(self, chan: str, value: Any) -> tuple[bytes, Sequence[_Sent]]:
        """``value`` as one message for channel ``chan``, and the ends it carries (counted
        on the server now, on behalf of the receiver, so a count never drops to zero while
        an end travels, each with a ticket the receiver claims; ``_unsend_ends`` gives them
        back if the message is not sent)."""
        frame = _codec.encode_scalar(value)
        if frame is not None:  # a top-level scalar: no ends to count
            return frame, ()
        sent: list[_Sent] = []

        def end(v: Any) -> tuple[bytes, int, str, str] | None:
            if not isinstance(v, Reader | Writer):
                return None
            ch = v.channel
            conn = ch.connection
            if conn is None:
                raise TypeError(
                    f"an end of channel '{ch.name}' cannot be sent over a networked channel: "
                    "only ends of networked channels travel (the channel is local to this "
                    "process)"
                )
            if conn is not self and (conn.url != self.url or conn.namespace != self.namespace):
                # The receiver resolves the name on its own server, in its own namespace.
                raise TypeError(
                    "a channel end can only be sent over a channel of the same server and namespace"
                )
            reader = isinstance(v, Reader)
            if v.retired:
                kind = "reader" if reader else "writer"
                raise ChannelRetired(f"{kind} end of channel '{ch.name}' is retired")
            ticket = secrets.token_hex(16)
            ch._net_core.count_end(reader, "send")
            try:
                ch._net_core.ticket(reader, ticket, "issue")
            except BaseException:
                ch._net_core.count_end(reader, "unsend", False)
                raise
            sent.append((v, ticket))
            return (b"r" if reader else b"w"), ch.capacity, ch.name, ticket

        try:
            data = _codec.encode(value, channel=chan, key=self._key, end=end)
        except BaseException:
            self._unsend_ends(sent)
            raise
        return data, sent

    def _unsend_ends(self, ends: Sequence[_Sent]) -> None:
        # In the background (no wait): this runs on failure paths, also in an event loop.
        for e, ticket in ends:
            core, reader = e.channel._net_core, isinstance(e, Reader)
            core.ticket(reader, ticket, "void", False)
            core.count_end(reader, "unsend", False)

    def _decode(self, chan: str, data: bytes) -> Any:
        """The value of a message received on channel ``chan`` (``CodecError`` if rejected).

        Three steps, so that a rejected message leaves no trace (module invariants): parse
        (pure), check the ends it names (reads only), make them."""
        v = _codec.decode_scalar(data)
        if v is not _codec.NOT_SCALAR:
            return v
        value, refs = _codec.parse(data, channel=chan, key=self._key)
        if not refs:
            return value
        checked: dict[str, int] = {}
        for ref in refs:
            if checked.get(ref.name) == ref.capacity:
                continue
            have = self._capacity_of(ref.name)
            if have is None:
                raise _codec.CodecError(
                    f"bad channel end: channel {ref.name!r} does not exist on the server"
                )
            if have != ref.capacity:
                raise _codec.CodecError(
                    f"bad channel end: channel {ref.name!r} has capacity {have}, not {ref.capacity}"
                )
            checked[ref.name] = have
        # The value is accepted: take each end's ticket (once, on the server). An end whose
        # ticket is not live (forged, or a copy of a message already received) is not made;
        # the ends already taken for a rejected message are made and retired, as their
        # sender counted them for us.
        made: dict[_codec.EndRef, Reader[Any] | Writer[Any]] = {}
        missing = None
        for ref in refs:
            ch = self.channel(ref.name, ref.capacity)
            reader = ref.kind == "reader"
            if ch._net_core.ticket(reader, ref.ticket, "claim"):
                # Ours from now on: held under this connection's lease, not in transit.
                ch._net_core.count_end(reader, "receive")
                made[ref] = ch._net_end(ref.kind)
            elif missing is None:
                missing = ref
        if missing is not None:
            for e in made.values():
                e.retire()
            raise _codec.CodecError(
                f"bad channel end: no live ticket for a {missing.kind} end of channel "
                f"{missing.name!r} (forged, or a copy of a message already received)"
            )
        return _codec.materialise(value, made.__getitem__)

    def _capacity_of(self, name: str) -> int | None:
        """The capacity of channel ``name`` (this connection's, else the server's), or None
        if it does not exist; creates nothing."""
        ch = self._channels.get(name)
        if ch is not None:
            return ch.capacity
        try:
            cap: int | None = self._native.capacity_of(name)
        except (ValueError, RuntimeError) as e:  # an invalid name; a malformed capacity key
            raise _codec.CodecError(f"bad channel end: {e}") from None
        return cap
