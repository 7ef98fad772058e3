"""A process hosted by a scheduler shared with other processes (an event loop, a greenlet hub).

Invariant: a hosted process is alive while its host runs, and waiting for it waits for the
host's thread to end.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from .._process import Outcome

__all__ = ["Host", "HostedTask"]


class Host(Protocol):
    """What ``HostedTask`` needs of its host."""

    @property
    def outcomes(self) -> list[Outcome | None]: ...
    @property
    def alive(self) -> bool: ...
    def wait(self, timeout: float | None) -> bool: ...
    def add_done_callback(self, fn: Callable[[], None]) -> None: ...


class HostedTask:
    """One process of a host: its outcome slot, and the host's liveness and wait."""

    __slots__ = ("_host", "_i")

    def __init__(self, host: Host, i: int) -> None:
        self._host = host
        self._i = i

    @property
    def outcome(self) -> Outcome | None:
        return self._host.outcomes[self._i]

    @property
    def alive(self) -> bool:
        return self._host.alive

    def wait(self, timeout: float | None) -> bool:
        return self._host.wait(timeout)

    def add_done_callback(self, fn: Callable[[], None]) -> None:
        """Calls ``fn()`` when the host ends (in its thread); at once if it has ended."""
        self._host.add_done_callback(fn)
