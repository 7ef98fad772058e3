"""Networked channels and ends crossing into ``backend="os"`` processes (docs/design.md,
"Networked channels in OS processes").

A networked channel pickles, for another OS process only (``ferrocsp._shm.crossing``), as its
identity: the key of its connection, its name and capacity; an end also as its kind and a
ticket. The pickling records the connection's key in the collection ``OsHost`` opens around
its payloads (``collecting``); ``OsHost`` hands the options of those connections to the child
by its own bootstrap (an argument of the child's entry point), and the child ``install``s them
before it unpickles anything: it then connects once per key, on first use, and ``close_all``
closes those connections when the process is done.

Invariants:
- No connection option (URL, credentials, ``pickle_key``) is ever in a pickle: a pickle holds
  only a connection key, which means nothing without the options the bootstrap carries.
- An end that crosses is the same end, not a new one: its copies share one ticket on the
  server, and only the retire that claims it uncounts the end (``net_side.rs``), so the end
  counts once however many processes hold a copy; dropping a crossed copy retires nothing.
- Outside a crossing a networked channel or end does not pickle (``TypeError``): nothing
  would carry its connection.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import uuid
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .. import _shm
from .._native import Channel, Reader, Writer

if TYPE_CHECKING:
    from ._connection import Connection

__all__ = ["close_all", "collecting", "install", "reduce_net"]

_lock = threading.Lock()
#: This process's connections by key: made here (``key_of``) or installed from a parent.
_live: weakref.WeakValueDictionary[str, Connection] = weakref.WeakValueDictionary()
#: Options received from the parent (the bootstrap), by key, until the first use connects.
_installed: dict[str, dict[str, Any]] = {}
#: Connections this process opened from installed options (closed by ``close_all``).
_opened: list[Connection] = []
_collect = threading.local()


def key_of(conn: Connection) -> str:
    """The connection's key (made on first crossing)."""
    with _lock:
        key: str | None = getattr(conn, "_cross_key", None)
        if key is None:
            key = uuid.uuid4().hex
            conn._cross_key = key
        _live[key] = conn
        return key


@contextlib.contextmanager
def collecting() -> Iterator[dict[str, dict[str, Any]]]:
    """Collects the options of the connections of networked channels pickled in the block
    (on this thread), by key, for the OS process the pickle is for."""
    outer = getattr(_collect, "nets", None)
    nets: dict[str, dict[str, Any]] = {}
    _collect.nets = nets
    try:
        yield nets
    finally:
        _collect.nets = outer


def _ship(conn: Connection) -> str:
    """The key of ``conn``, its options recorded for the OS process being started, if any
    (a result going back to the parent needs none: the parent made the connection)."""
    key = key_of(conn)
    nets: dict[str, dict[str, Any]] | None = getattr(_collect, "nets", None)
    if nets is not None:
        nets[key] = conn._options
    return key


def reduce_net(obj: Any) -> tuple[Any, tuple[Any, ...]]:
    """``__reduce__`` of a networked ``Channel``, ``Reader`` or ``Writer``."""
    if not _shm.is_crossing():
        _ship_refused(obj)
    chan: Channel[Any] = obj if isinstance(obj, Channel) else obj.channel
    conn = chan.connection
    if conn is None:  # pragma: no cover - only networked objects come here
        raise TypeError(f"channel '{chan.name}' is not networked")
    key = _ship(conn)
    if isinstance(obj, Channel):
        return (restore, (key, chan.name, chan.capacity, None, None, False))
    reader = isinstance(obj, Reader)
    kind = "reader" if reader else "writer"
    if obj.retired:
        return (restore, (key, chan.name, chan.capacity, kind, None, True))
    ticket = chan._net_cross_ticket(obj._end_id, reader, secrets.token_hex(16))
    return (restore, (key, chan.name, chan.capacity, kind, ticket, False))


def _ship_refused(obj: Any) -> None:
    what = "a networked channel" if isinstance(obj, Channel) else "a networked channel end"
    raise TypeError(
        f"{what} does not pickle outside a backend='os' process's arguments or results (the "
        "OS backend carries its connection): send ends over a networked channel, or open it "
        "by name with Channel(name=..., net=connect(url)) in the other process"
    )


def install(nets: dict[str, dict[str, Any]]) -> None:
    """Registers the parent's connection options (the OS child's bootstrap)."""
    with _lock:
        for key, opts in nets.items():
            # A forked child inherits the parent's connection objects, whose network threads
            # did not survive the fork: this process opens its own.
            _live.pop(key, None)
            _installed[key] = opts


def _connection(key: str) -> Connection:
    from ._connection import _connect

    with _lock:
        conn = _live.get(key)
        if conn is not None:
            return conn
        opts = _installed.get(key)
        if opts is None:
            raise ValueError(
                "a networked channel was unpickled in a process that has no connection for "
                "it (it crosses only as an argument or result of backend='os' processes)"
            )
        conn = _connect(**opts)
        conn._cross_key = key
        _live[key] = conn
        _opened.append(conn)
        return conn


def restore(
    key: str, name: str, capacity: int, kind: str | None, ticket: str | None, retired: bool
) -> Channel[Any] | Reader[Any] | Writer[Any]:
    """Unpickles what ``reduce_net`` made: the channel of that connection and name, or a copy
    of the crossed end."""
    chan = _connection(key).channel(name, capacity)
    if kind is None:
        return chan
    end: Reader[Any] | Writer[Any] = chan._net_end(kind, ticket, retired)
    return end


def close_all() -> None:
    """Closes the connections this process opened from its parent's options (flushing what
    they still send in the background, such as the counts of dropped ends)."""
    with _lock:
        opened = list(_opened)
        _opened.clear()
    for conn in opened:
        conn.close()
