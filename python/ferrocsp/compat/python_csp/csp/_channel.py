"""python-csp channels and guards: ``Channel`` (any-to-any, rendezvous), ``FileChannel``,
the ``Guard`` base class and ``ChannelPoison``.

A python-csp channel is used directly by every process (``c.read()``, ``c.write(x)``,
``c.poison()``); it wraps one ferrocsp channel without ends.

Invariants:
- ``ChannelPoison`` *is* ``ferrocsp.ChannelPoisoned``: what the engine raises is what
  python-csp programs catch.
- ``g1 | g2`` is ``Alt(g1, g2).select()``: it blocks until one of them is ready and returns
  what it gives.
- Channels pickle (to processes in other OS processes); a copy is the same channel.
"""

from __future__ import annotations

import uuid
from typing import Any

import ferrocsp as csp

__all__ = [
    "Channel",
    "ChannelPoison",
    "CorruptedData",
    "FileChannel",
    "Guard",
    "NoGuardInAlt",
    "misuse",
]

ChannelPoison = csp.ChannelPoisoned


class CorruptedData(Exception):
    """python-csp's error for undecodable channel data (never raised here)."""


class NoGuardInAlt(Exception):
    """An ``Alt`` has no guards left to select from."""

    def __str__(self) -> str:
        return "csp.Alt: every guard has been removed (poisoned); nothing to select"


def misuse(api: str, text: str, kind: type[Exception] = TypeError) -> Exception:
    """The error for a misuse of python-csp's ``<api>``: ``TypeError("csp.Alt: ...")``."""
    return kind(f"csp.{api}: {text}")


class Guard:
    """What can be selected by an ``Alt``: channels, ``Skip``, ``Timer``."""

    def engine_guard(self) -> Any:
        """The ferrocsp guard for one selection."""
        raise misuse(type(self).__name__, "is not a selectable guard")

    def chosen(self, value: Any) -> Any:
        """What a selection that chose this guard returns, given the engine's value."""
        return value

    def poison(self) -> None:
        """Poisons what the guard stands for (nothing, by default)."""

    def __or__(self, other: Any) -> Any:
        from ._alt import Alt

        return Alt(self, other).select()

    def __ror__(self, other: Any) -> Any:
        from ._alt import Alt

        return Alt(other, self).select()


class Channel(Guard):
    """A python-csp channel: any number of readers and writers, rendezvous."""

    def __init__(self) -> None:
        self.name = uuid.uuid1().hex
        self._ch = csp.Channel(name=self.name)
        self.read = self._ch.read
        self.write = self._ch.write

    def poison(self) -> None:
        """Poisons the channel: every pending and later read or write raises
        ``ChannelPoison``."""
        self._ch.poison()

    def engine_guard(self) -> Any:
        return self._ch

    def __getstate__(self) -> dict[str, Any]:
        return {"name": self.name, "_ch": self._ch}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.name = state["name"]
        self._ch = state["_ch"]
        self.read = self._ch.read
        self.write = self._ch.write

    def __str__(self) -> str:
        return f"Channel {self.name} (ferrocsp)"


class FileChannel(Channel):
    """python-csp's channel through a temporary file, for OS processes; ferrocsp's channels
    already cross OS processes, so this is a ``Channel``."""
