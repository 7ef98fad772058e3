"""Networked channels as ``Alt`` guards: the ``_csp_alt_*`` protocol of ``ferrocsp._alt`` for a
native ``Channel``/``Reader`` (input) or ``Channel``/``Writer`` (``Output`` target) whose
channel is networked.

The Alt waits on local engine channels that the transport feeds (``Channel._net_alt``), so
it decides once, exactly as between local channels; these adapters tell the transport while a
selection waits, decode what arrives, and send an Output guard's value only once its
selection chose it.

Invariants:
- An adapter holds no state but whether its own selection raised the transport's demand
  (``_up``), so every demand raised is withdrawn exactly once; it can be made for each
  selection.
- A retired end's guard is a retired guard, as a local retired end's is: the selection drops
  it, and raises ``ChannelRetired`` naming it only when nothing else can fire. It waits on a
  local stand-in retired on the end's side (the networked channel itself may be live for its
  other ends) and raises no demand: nobody is told that it waits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._native import Channel, Reader, Writer
from ._aio import await_op, connection_of

__all__ = ["NetInput", "NetOutput"]


def _retired(end: Any) -> bool:
    return isinstance(end, Reader | Writer) and end.retired


def _stand_in(end: Reader[Any] | Writer[Any]) -> Channel[Any]:
    """A local channel named as ``end``'s channel whose other side is retired: a selection
    drops a guard on it (a reader sees end-of-stream, a writer is refused), as it drops a
    retired local end's guard."""
    local: Channel[Any] = Channel(name=end.channel.name)
    (local.writer() if isinstance(end, Reader) else local.reader()).retire()
    return local


class _OutToken:
    """An Output guard's value for one selection (the Alt writes the token to the local
    channel; the transport only needs to win it; the guard that fired sends ``data``)."""

    __slots__ = ("data", "ends")

    def __init__(self, data: bytes, ends: Sequence[Any]) -> None:
        self.data = data
        self.ends = ends


class NetInput:
    """A networked ``Channel`` or ``Reader`` as an input guard."""

    __slots__ = ("_chan", "_conn", "_core", "_up", "target")

    def __init__(self, target: Channel[Any] | Reader[Any]) -> None:
        self.target = target
        self._chan: Channel[Any] = target if isinstance(target, Channel) else target.channel
        self._core = self._chan._net_core
        self._conn = connection_of(self._chan)
        self._up = False

    def _csp_alt_input(self) -> Any:
        if _retired(self.target):
            return _stand_in(self.target)  # type: ignore[arg-type]
        return self._chan._net_alt(False)

    def _csp_alt_demand(self, up: bool) -> None:
        if up and _retired(self.target):
            return
        if up or self._up:
            self._core.alt_demand(up)
        self._up = up

    def _csp_alt_decode(self, raw: bytes) -> Any:
        return self._conn._decode(self._chan.name, raw)

    def _csp_alt_take(self, hold: int) -> bytes | None:
        raw: bytes | None = self._core.alt_take(hold)
        return raw

    async def _csp_alt_atake(self, hold: int) -> bytes | None:
        raw: bytes | None = await await_op(self._core.start_alt_take(hold), self._chan.name, "read")
        return raw

    def __repr__(self) -> str:
        return repr(self.target)


class NetOutput:
    """A networked ``Channel`` or ``Writer`` as the target of an ``Output`` guard."""

    __slots__ = ("_chan", "_conn", "_core", "_up", "target")

    def __init__(self, target: Channel[Any] | Writer[Any]) -> None:
        self.target = target
        self._chan: Channel[Any] = target if isinstance(target, Channel) else target.channel
        self._core = self._chan._net_core
        self._conn = connection_of(self._chan)
        self._up = False

    def _csp_alt_output(self, value: Any) -> tuple[Any, _OutToken]:
        if _retired(self.target):
            return _stand_in(self.target), _OutToken(b"", ())  # type: ignore[arg-type]
        data, ends = self._conn._encode(self._chan.name, value)
        return self._chan._net_alt(True), _OutToken(data, ends)

    def _csp_alt_out_demand(self, up: bool) -> None:
        if up and _retired(self.target):
            return
        if up or self._up:
            self._core.alt_out_demand(up)
        self._up = up

    def _csp_alt_commit(self, token: _OutToken) -> None:
        # The native call takes the hold at once (before any wait), then sends.
        try:
            self._core.commit(token.data)
        except BaseException:
            self._conn._unsend_ends(token.ends)
            raise

    async def _csp_alt_acommit(self, token: _OutToken) -> None:
        try:
            await await_op(self._core.start_commit(token.data), self._chan.name, "write")
        except BaseException:
            self._conn._unsend_ends(token.ends)
            raise

    def _csp_alt_unsend(self, token: _OutToken) -> None:
        self._conn._unsend_ends(token.ends)

    def __repr__(self) -> str:
        return repr(self.target)
