"""PyCSP 0.9 channels and channel ends, as thin wrappers of ferrocsp channels and ends.

``Channel(name, buffer=n)`` is a ferrocsp ``Channel(capacity=n)``; ``c.reader()`` / ``+c`` and
``c.writer()`` / ``-c`` are ferrocsp counted ends wrapped so that calling them reads
(``cin()``) or writes (``cout(value)``), as in PyCSP.

Invariants:
- One compat end is one ferrocsp end: ``reader()``/``writer()`` make a new counted end each
  time, and a channel retires exactly when ferrocsp's does (all writer ends, or all reader
  ends, retired).
- An end leaves its channel only by ``retire()`` (PyCSP's rule): the channel holds every end it
  made that has not retired, so an end a program merely forgets does not retire the channel
  (ferrocsp alone would retire it when garbage-collected). The holding is a cycle that the
  collector frees with the channel once the program holds neither.
- ``retire()`` on a retired end does nothing (PyCSP ignores repeated retires); reading or
  writing a retired end raises ``ChannelRetireException``.
- Ends and channels pickle (for ``@multiprocess``): a copy is a handle to the same end.
"""

from __future__ import annotations

import types
from typing import Any

import ferrocsp as csp

from ..._native import _CallEnd, _vectorcall
from . import _remote
from ._errors import misuse

__all__ = [
    "Channel",
    "ChannelEnd",
    "ChannelEndRead",
    "ChannelEndWrite",
    "poison",
    "retire",
]


class Channel:
    """A PyCSP channel: ``Channel(name=None, buffer=0)``; any-to-any, rendezvous by default.

    ``+c``/``c.reader()`` and ``-c``/``c.writer()`` make ends; ``c * n`` (or ``n * c``) is
    ``[c]`` plus ``n - 1`` new channels with the same buffer size.

    ``Channel(name, connect=(host, port))`` is the channel ``name`` of the interpreter whose
    channel server listens on ``(host, port)`` (on this machine), and ``c.address`` the
    ``(host, port)`` where a channel can be found (``_remote``).
    """

    __slots__ = ("__weakref__", "_ch", "_connect", "_ends", "buffer", "name")

    def __init__(self, name: Any = None, buffer: int = 0, connect: Any = None) -> None:
        if isinstance(buffer, bool) or not isinstance(buffer, int):
            raise misuse("Channel", f"buffer must be a non-negative int, got {buffer!r}")
        if buffer < 0:
            raise misuse("Channel", f"buffer must be a non-negative int, got {buffer}", ValueError)
        self._ends: set[ChannelEnd] = set()
        self._connect: tuple[str, int] | None = None
        if connect is not None:
            if name is None:
                raise misuse("Channel", "connect= needs the name of the hosted channel", ValueError)
            if buffer != 0:
                raise misuse(
                    "Channel",
                    "do not give buffer= when connecting to a hosted channel (its host chose it)",
                    ValueError,
                )
            self._ch = _remote.connect(str(name), connect)
            self._connect = (connect[0], connect[1])
            self.name: str = str(name)
            self.buffer = self._ch.capacity
            return
        self._ch = csp.Channel(buffer, name=None if name is None else str(name))
        self.name = self._ch.name if name is None else str(name)
        self.buffer = buffer
        _remote.register(self)

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` of the channel server where other interpreters find this channel
        (``Channel(name, connect=address)``); asking starts this interpreter's server."""
        if self._connect is not None:
            return self._connect
        return _remote.address()

    def reader(self) -> ChannelEndRead:
        """A new reader end (joins the channel's readers until it retires)."""
        return ChannelEndRead(self, self._ch.reader())

    def writer(self) -> ChannelEndWrite:
        """A new writer end (joins the channel's writers until it retires)."""
        return ChannelEndWrite(self, self._ch.writer())

    def __pos__(self) -> ChannelEndRead:
        return self.reader()

    def __neg__(self) -> ChannelEndWrite:
        return self.writer()

    def __mul__(self, multiplier: int) -> list[Channel]:
        if isinstance(multiplier, bool) or not isinstance(multiplier, int) or multiplier < 1:
            raise misuse("Channel", f"Channel() * n needs an int n >= 1, got {multiplier!r}")
        return [self] + [Channel(buffer=self.buffer) for _ in range(multiplier - 1)]

    __rmul__ = __mul__

    def poison(self) -> None:
        """Poisons the channel: every pending and later operation raises
        ``ChannelPoisonException``."""
        self._ch.poison()

    def disconnect(self) -> None:
        """Accepted for PyCSP compatibility; a ferrocsp channel holds no connection."""

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (_rebuild_channel, (self._ch, self.name, self.buffer))

    def __repr__(self) -> str:
        return f"<pycsp Channel {self.name!r} buffer={self.buffer}>"


def _rebuild_channel(ch: csp.Channel, name: str, buffer: int) -> Channel:
    new = Channel.__new__(Channel)
    new._ch, new.name, new.buffer, new._ends, new._connect = ch, name, buffer, set(), None
    _remote.register(new)  # findable from this interpreter too, as PyCSP's mobile channels
    return new


class ChannelEnd:
    """What ends share: ``retire()``, ``poison()``, ``isReader()``, ``isWriter()``,
    ``channel``. The concrete ends are also ``_native._CallEnd`` objects over the ferrocsp end,
    so that calling an end (``cin()``, ``cout(x)``) goes straight to the engine's read or write
    without a Python frame (a method costs one; a ``functools.partial`` subclass, which these
    were, three C calls more: see ``_CallEnd``)."""

    _end: csp.Reader | csp.Writer
    channel: Channel
    isretired: bool

    def _setup(self, channel: Channel, end: csp.Reader | csp.Writer) -> None:
        self.channel = channel
        self._end = end
        self.isretired = False

    def retire(self) -> None:
        """Leaves the channel; when all readers or all writers have left, it retires."""
        if not self.isretired:
            self.isretired = True
            self._end.retire()
            self.channel._ends.discard(self)

    def poison(self) -> None:
        """Poisons the channel (through this end)."""
        self._end.poison()

    def disconnect(self) -> None:
        """Accepted for PyCSP compatibility; a ferrocsp end holds no connection."""

    def isReader(self) -> bool:  # noqa: N802 - PyCSP's name
        """Whether this is a reader end."""
        return isinstance(self._end, csp.Reader)

    def isWriter(self) -> bool:  # noqa: N802 - PyCSP's name
        """Whether this is a writer end."""
        return isinstance(self._end, csp.Writer)

    def __lt__(self, other: object) -> bool:
        return id(self) < id(other)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (_rebuild_end, (type(self), self.channel, self._end, self.isretired))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of channel {self.channel.name!r}>"


def _rebuild_end(
    cls: type[ChannelEndRead | ChannelEndWrite],
    channel: Channel,
    end: Any,
    isretired: bool,
) -> ChannelEnd:
    new = cls(channel, end)
    new.isretired = isretired
    if isretired:
        channel._ends.discard(new)
    return new


class ChannelEndRead(ChannelEnd, _CallEnd):
    """A reader end: ``cin()`` reads one value (blocking); raises ``ChannelPoisonException``
    or ``ChannelRetireException`` when the channel is poisoned or retired."""

    def __new__(cls, channel: Channel, end: csp.Reader) -> ChannelEndRead:
        self = super().__new__(cls, end)
        self._setup(channel, end)
        channel._ends.add(self)
        return self


class ChannelEndWrite(ChannelEnd, _CallEnd):
    """A writer end: ``cout(value)`` writes one value (blocking until taken, or buffered)."""

    def __new__(cls, channel: Channel, end: csp.Writer) -> ChannelEndWrite:
        self = super().__new__(cls, end)
        self._setup(channel, end)
        channel._ends.add(self)
        return self


# Calls of the ends by vectorcall, as on CPython 3.12+ (3.11 does not pass it on to a class
# statement's subclass: see `_CallEnd`). Never assign `__call__` on these classes.
_vectorcall(ChannelEndRead)
_vectorcall(ChannelEndWrite)


def _ends_of(api: str, items: tuple[Any, ...]) -> list[ChannelEnd | Channel]:
    out: list[ChannelEnd | Channel] = []
    for item in items:
        if not isinstance(item, ChannelEnd | Channel):
            raise misuse(
                api, f"expected channel ends (+c, -c, c.reader(), c.writer()), got {item!r}"
            )
        out.append(item)
    return out


def retire(*list_of_channelEnds: Any) -> None:  # noqa: N803 - PyCSP's parameter name
    """Retires each end; when all readers or all writers of a channel retired, it retires."""
    for end in _ends_of("retire", list_of_channelEnds):
        if isinstance(end, Channel):
            raise misuse("retire", f"retire takes channel ends, not the channel {end.name!r}")
        end.retire()


def poison(*list_of_channelEnds: Any) -> None:  # noqa: N803 - PyCSP's parameter name
    """Poisons the channel of each end (or each channel)."""
    for end in _ends_of("poison", list_of_channelEnds):
        end.poison()


def is_method(obj: Any, name: str) -> types.MethodType | None:
    """``obj.name`` if it is a bound method (PyCSP's test for what a process may poison or
    retire among its arguments), else None."""
    try:
        m = getattr(obj, name)
    except Exception:  # noqa: BLE001 - an argument's odd __getattr__ must not stop shutdown
        return None
    return m if isinstance(m, types.MethodType) else None
