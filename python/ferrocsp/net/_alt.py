"""Networked channels as ``Alt`` guards: the ``_csp_alt_*`` protocol of ``ferrocsp._alt`` for a
native ``Channel``/``Reader`` (input) or ``Channel``/``Writer`` (``Output`` target) whose
channel is networked.

The Alt waits on local engine channels that the transport feeds (``Channel._net_alt``), so
it decides once, exactly as between local channels; these adapters tell the transport while a
selection waits, decode what arrives, and send an Output guard's value only once its
selection chose it.

Invariants:
- An adapter holds no state of its own: it can be made for each selection.
- A retired end's guard raises ``ChannelRetired`` when the selection starts, as a local
  retired end does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._errors import ChannelRetired
from .._native import Channel, Reader, Writer
from ._aio import await_op, connection_of

__all__ = ["NetInput", "NetOutput"]


def _check(end: Any) -> None:
    if isinstance(end, Reader | Writer) and end.retired:
        kind = "reader" if isinstance(end, Reader) else "writer"
        raise ChannelRetired(f"{kind} end of channel '{end.channel.name}' is retired")


class _OutToken:
    """An Output guard's value for one selection (the Alt writes the token to the local
    channel; the transport only needs to win it; the guard that fired sends ``data``)."""

    __slots__ = ("data", "ends")

    def __init__(self, data: bytes, ends: Sequence[Any]) -> None:
        self.data = data
        self.ends = ends


class NetInput:
    """A networked ``Channel`` or ``Reader`` as an input guard."""

    __slots__ = ("_chan", "_conn", "_core", "target")

    def __init__(self, target: Channel[Any] | Reader[Any]) -> None:
        self.target = target
        self._chan: Channel[Any] = target if isinstance(target, Channel) else target.channel
        self._core = self._chan._net_core
        self._conn = connection_of(self._chan)

    def _csp_alt_input(self) -> Any:
        _check(self.target)
        return self._chan._net_alt(False)

    def _csp_alt_demand(self, up: bool) -> None:
        self._core.alt_demand(up)

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

    __slots__ = ("_chan", "_conn", "_core", "target")

    def __init__(self, target: Channel[Any] | Writer[Any]) -> None:
        self.target = target
        self._chan: Channel[Any] = target if isinstance(target, Channel) else target.channel
        self._core = self._chan._net_core
        self._conn = connection_of(self._chan)

    def _csp_alt_output(self, value: Any) -> tuple[Any, _OutToken]:
        _check(self.target)
        data, ends = self._conn._encode(self._chan.name, value)
        return self._chan._net_alt(True), _OutToken(data, ends)

    def _csp_alt_out_demand(self, up: bool) -> None:
        self._core.alt_out_demand(up)

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
