"""Choice: ``Alt`` over input, output, timeout and skip guards.

Invariants:
- Guards are validated when the ``Alt`` is built (TypeError/ValueError before anything blocks);
  a selection turns the enabled guards into engine operations and makes one native call, which
  fires exactly one guard (a write's value is sent iff its guard is chosen).
- ``fair_select`` state (the guard chosen last) lives on the ``Alt`` object; an ``Alt`` may be
  used from several threads at once, each selection independent.
- Networked guards (``ferrocsp.net``) take part through local engine channels, so the one
  native selection stays the only decision: an input guard's value arrives only into a waiting
  selection that wins it; an Output guard's value is encoded per selection and leaves the
  process only after its guard won (then it is sent to the reader held for it, and the Alt
  returns once that reader has it); the ends it carries are uncounted if it did not fire.
- ``Alt`` subclasses the native ``_NativeAlt``, whose methods are the selections. When every
  guard is in-process (channels, their ends, Output guards on them, Timeout, Skip, in
  ``Guard`` wrappers or not) it holds them, built once: a selection is then one native call
  that reads what may change (``when``, an Output's ``value``, a Timeout's ``seconds``),
  chooses, waits and returns ``(guard, value)``, with the fair state kept natively (it keeps
  the last selection of every guard whole and only refreshes it). When it cannot run the
  selection as built (a networked or foreign guard, a channel moved to shared memory, a
  wrapper's ``guard`` or an Output's ``target`` reassigned) it has sent nothing and calls the
  general path below (``_run``/``_arun``) instead.
- A selection with any channel shared with OS processes runs in shared memory
  (``_shm.select``), its in-process guards with it, linked to its cell: still one decision. A
  ``_Moved`` (an in-process channel moved to shared memory while the selection waited, and
  nothing fired) makes the selection run again.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Protocol, TypeAlias, TypeGuard, runtime_checkable

from . import _shm
from ._io import _offload
from ._native import (
    Channel,
    Loan,
    Reader,
    Writer,
    _aselect,
    _in_coroutine,
    _io_wait,
    _Moved,
    _NativeAlt,
    _select,
    _shared_wait,
)

__all__ = ["Alt", "Guard", "Output", "Skip", "Timeout", "select"]

_READ, _WRITE, _SKIP, _TIMEOUT = 0, 1, 2, 3
_RANDOM, _PRIORITY, _FAIR = 0, 1, 2


class Output:
    """An output guard: ready when ``value`` can be written to ``target`` (Channel or Writer,
    local or networked).

    The value is sent if and only if this guard is chosen.
    """

    __slots__ = ("target", "value")

    def __init__(self, target: Channel | Writer | _ForeignOutput, value: Any) -> None:
        if isinstance(target, Reader):
            raise TypeError("Output needs a Channel or Writer, not a Reader")
        if not isinstance(target, Channel | Writer | _ForeignOutput):
            raise TypeError(f"Output needs a Channel or Writer, not {type(target).__name__}")
        if isinstance(value, Loan):
            # A guard's value is sent only if chosen, but writing spends a loan: an Alt would
            # have to give it back when another guard fires.
            raise TypeError(
                "an Output guard cannot offer a Loan (writing spends it): write it with "
                "write()/awrite(), or offer bytes"
            )
        self.target = target
        self.value = value

    def __repr__(self) -> str:
        return f"Output({self.target!r}, {self.value!r})"


class Timeout:
    """A guard that becomes ready ``seconds`` after the selection starts."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise TypeError(f"Timeout needs a number of seconds, not {type(seconds).__name__}")
        if math.isnan(seconds) or seconds < 0:
            raise ValueError(f"Timeout must be >= 0 seconds, got {seconds}")
        self.seconds = float(seconds)

    def __repr__(self) -> str:
        return f"Timeout({self.seconds})"


class Skip:
    """A guard that is always ready: an ``Alt`` holding one never blocks."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Skip()"


@runtime_checkable
class _ForeignInput(Protocol):
    """An input guard that is not an engine channel (a networked channel or reader end,
    ``ferrocsp.net``): the Alt waits on the local channel it names, tells it while it waits
    (so values are offered only to a waiting selection), and decodes what it delivers. What
    it delivers may be an ``int``: a hold (a selecting writer elsewhere reserved this Alt and
    sends its value only once its own selection chose us); ``_csp_alt_take`` then waits for
    that value, or returns None if the writer chose something else (the Alt selects again)."""

    def _csp_alt_input(self) -> Channel: ...
    def _csp_alt_demand(self, up: bool) -> None: ...
    def _csp_alt_decode(self, raw: Any) -> Any: ...
    def _csp_alt_take(self, hold: int) -> bytes | None: ...
    async def _csp_alt_atake(self, hold: int) -> bytes | None: ...


@runtime_checkable
class _ForeignOutput(Protocol):
    """An Output target that is not an engine channel (a networked channel or writer end):
    ``_csp_alt_output(value)`` encodes the value for one selection and names the local channel
    the Alt writes a token to; only the guard's winning selection is told where to send it
    (``_csp_alt_commit``); a token whose guard did not fire is given back (``_csp_alt_unsend``).
    """

    def _csp_alt_output(self, value: Any) -> tuple[Channel, Any]: ...
    def _csp_alt_out_demand(self, up: bool) -> None: ...
    def _csp_alt_commit(self, token: Any) -> None: ...
    async def _csp_alt_acommit(self, token: Any) -> None: ...
    def _csp_alt_unsend(self, token: Any) -> None: ...


GuardLike: TypeAlias = "Channel | Reader | Output | Timeout | Skip | Guard | _ForeignInput"

#: Guard types that are never foreign (see ``_is_foreign``).
_PLAIN = (Channel, Reader, Writer, Output, Timeout, Skip)


class Guard:
    """Wraps a guard with a boolean precondition (occam's ``cond & guard``).

    The wrapped guard is considered only while ``when`` is true; set ``guard.when`` between
    selections to switch it. The selection reports the ``Guard`` object itself as chosen.
    """

    __slots__ = ("guard", "when")

    def __init__(
        self,
        guard: Channel | Reader | Output | Timeout | Skip | _ForeignInput,
        when: bool = True,
    ) -> None:
        if isinstance(guard, Guard):
            raise TypeError("Guard cannot wrap another Guard")
        _check_plain(guard)
        self.guard = guard
        self.when = bool(when)

    def __repr__(self) -> str:
        return f"Guard({self.guard!r}, when={self.when})"


def _is_foreign(g: object) -> TypeGuard[_ForeignInput]:
    """Whether ``g`` is a foreign input guard. The guard types of this module and the native
    channel types never are, and are ruled out first: ``isinstance`` against a runtime
    protocol looks up every protocol attribute (tens of microseconds on Python 3.11)."""
    return not isinstance(g, _PLAIN) and isinstance(g, _ForeignInput)


def _check_plain(g: object) -> None:
    if _is_foreign(g):
        return
    if isinstance(g, Writer):
        raise TypeError("a Writer is not an input guard: use Output(writer, value)")
    if not isinstance(g, Channel | Reader | Output | Timeout | Skip):
        raise TypeError(
            "Alt guards must be a Channel, Reader, Output, Timeout, Skip or Guard, "
            f"not {type(g).__name__}"
        )


#: A networked Output guard of one selection: (op index, target, token).
_Out: TypeAlias = tuple[int, Any, Any]


def _networked(target: Any, end: type[Reader[Any]] | type[Writer[Any]]) -> bool:
    """Whether ``target`` is a networked ``Channel`` or an ``end`` (type) of one."""
    if isinstance(target, Channel):
        return target._net_core is not None
    return isinstance(target, end) and target.channel._net_core is not None


def _net_in(g: Any) -> _ForeignInput | None:
    """The networked-channel adapter of input guard ``g`` (None: not networked)."""
    if not _networked(g, Reader):
        return None
    from .net._alt import NetInput  # only programs with networked channels load ferrocsp.net

    return NetInput(g)


def _net_out(t: Any) -> _ForeignOutput | None:
    """The networked-channel adapter of Output target ``t`` (None: not networked)."""
    if not _networked(t, Writer):
        return None
    from .net._alt import NetOutput

    return NetOutput(t)


def _op(
    g: Channel | Reader | Output | Timeout | Skip | _ForeignInput, outs: list[_Out] | None = None
) -> tuple[int, Any, Any]:
    f = g if _is_foreign(g) else _net_in(g)
    if f is not None:
        return (_READ, f._csp_alt_input(), None)
    if isinstance(g, Output):
        t = g.target
        if not isinstance(t, Channel | Writer) and isinstance(t, _ForeignOutput):
            fo: _ForeignOutput | None = t
        else:
            fo = _net_out(t)
        if fo is not None:
            local, token = fo._csp_alt_output(g.value)
            if outs is not None:
                outs.append((-1, fo, token))
            return (_WRITE, local, token)
        return (_WRITE, t, g.value)
    if isinstance(g, Timeout):
        return (_TIMEOUT, g.seconds, None)
    if isinstance(g, Skip):
        return (_SKIP, None, None)
    return (_READ, g, None)


def _any_shared(ops: list[tuple[int, Any, Any]]) -> bool:
    """Whether a guard's channel lives in shared memory (it was sent to an OS process)."""
    return any(_shm.shared_of(op[1]) is not None for op in ops)


def _foreign_in(guard: Any) -> _ForeignInput | None:
    g = guard.guard if isinstance(guard, Guard) else guard
    return g if _is_foreign(g) else _net_in(g)


def _decode(g: _ForeignInput, raw: bytes | None) -> tuple[bool, Any]:
    """A foreign guard's value decoded; ``(False, None)`` if it was rejected (logged) or a
    hold was released, and the selection runs again, as a networked ``read`` keeps waiting
    after a rejected message."""
    if raw is None:
        return False, None
    try:
        return True, g._csp_alt_decode(raw)
    except ValueError as e:
        logging.getLogger("ferrocsp.net").warning("Alt guard %r: rejected a message: %s", g, e)
        return False, None


def _since(ops: list[tuple[int, Any, Any]], t0: float | None) -> list[tuple[int, Any, Any]]:
    """``ops`` for a selection that runs again (after a rejected message or a released hold):
    Timeout guards count from the first start, not from this one."""
    if t0 is None:
        return ops
    spent = time.monotonic() - t0
    return [(k, max(0.0, v - spent), x) if k == _TIMEOUT else (k, v, x) for k, v, x in ops]


def _native_specs(guards: tuple[GuardLike, ...]) -> list[tuple[Any, Any, int, Any]] | None:
    """What the native selection of ``guards`` (validated) is built from, or None if a guard
    is networked or foreign: those take the general path (``Alt._run``)."""
    specs: list[tuple[Any, Any, int, Any]] = []
    for g in guards:
        plain = g.guard if isinstance(g, Guard) else g
        if isinstance(plain, Output):
            t = plain.target
            if not isinstance(t, Channel | Writer) or _networked(t, Writer):
                return None
            specs.append((g, plain, _WRITE, t))
        elif isinstance(plain, Timeout):
            specs.append((g, plain, _TIMEOUT, None))
        elif isinstance(plain, Skip):
            specs.append((g, plain, _SKIP, None))
        elif isinstance(plain, Channel | Reader) and not _networked(plain, Reader):
            specs.append((g, plain, _READ, plain))
        else:
            return None
    return specs


def _settle(outs: list[_Out], chosen: int | None) -> tuple[Any, Any] | None:
    """Gives back the tokens of networked Output guards that did not fire; returns the
    ``(target, token)`` of the one that did (``chosen`` is the op index), if any."""
    fired = None
    for i, target, token in outs:
        if i == chosen:
            fired = (target, token)
        else:
            target._csp_alt_unsend(token)
    return fired


class Alt(_NativeAlt):
    """A choice between guards; each selection fires exactly one.

    Guards: a ``Channel`` or ``Reader`` (input), ``Output(writer_or_channel, value)``,
    ``Timeout(seconds)``, ``Skip()``, any of them wrapped as ``Guard(g, when=...)``.
    A selection returns ``(guard, value)``: the guard object passed in and the value read
    (``None`` for output, timeout and skip guards). A poisoned channel counts as ready and
    choosing it raises ``ChannelPoisoned``; if no guard can ever fire (every channel retired,
    no Timeout or Skip) it raises ``ChannelRetired``. Waiting is event driven (no polling).
    """

    # The selections (``select``, ``pri_select``, ``fair_select`` and their ``a`` twins) are
    # methods of the native base class: one native call with no Python frame, which runs the
    # general path below (``_run``/``_arun``) when the native one cannot (module docs).
    __slots__ = ("_foreign", "_last", "_static", "guards")
    guards: tuple[GuardLike, ...]
    _last: int | None
    _foreign: tuple[_ForeignInput, ...]
    _static: list[tuple[int, Any, Any]] | None

    def __new__(cls, *guards: GuardLike) -> Alt:
        if not guards:
            raise ValueError("Alt needs at least one guard")
        for g in guards:
            if isinstance(g, Guard):
                continue
            _check_plain(g)
        foreign = tuple(f for f in map(_foreign_in, guards) if f is not None)
        # Fast path: the whole selection in one native call (module docs); then the fair
        # state lives there, shared with the general path (`_fair_last`).
        self = super().__new__(cls, None if foreign else _native_specs(guards))
        self.guards = guards
        self._last = None
        self._foreign = foreign
        # Fast path: with no Guard wrapper (``when`` may change) and no Output (its ``value``
        # may change), the engine operations are the same for every selection; build them once.
        self._static = None
        if not any(isinstance(g, Guard | Output) for g in guards):
            self._static = [_op(g) for g in guards]  # type: ignore[arg-type]
        return self

    @property
    def _native(self) -> _NativeAlt | None:
        """The native selection's state (its fair ``last``), when selections take it."""
        return self if self._native_on else None

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # By its guards alone (an Alt sent to an OS process): what a selection derives from
        # them (networked guards' adapters and local channels) belongs to the selecting process.
        return (Alt, self.guards)

    def _fair_last(self) -> int | None:
        return self._last if self._native is None else self._native.last

    def _ops(
        self, policy: int
    ) -> tuple[list[tuple[int, Any, Any]], list[int] | None, int | None, list[_Out]]:
        """The engine operations of the enabled guards, their guard indices, fair's ``last``,
        and the networked Output guards among them (with this selection's tokens)."""
        if self._static is not None:
            return self._static, None, self._fair_last() if policy == _FAIR else None, []
        ops: list[tuple[int, Any, Any]] = []
        index: list[int] = []
        outs: list[_Out] = []
        try:
            for i, g in enumerate(self.guards):
                found = len(outs)
                if isinstance(g, Guard):
                    if not g.when:
                        continue
                    ops.append(_op(g.guard, outs))
                else:
                    ops.append(_op(g, outs))
                if len(outs) > found:
                    outs[-1] = (len(ops) - 1, outs[-1][1], outs[-1][2])
                index.append(i)
        except BaseException:
            _settle(outs, None)
            raise
        last = None
        fair_last = self._fair_last() if policy == _FAIR else None
        if fair_last is not None and index:
            # Rotation starts after the guard chosen last; if it is disabled now, after the
            # nearest enabled guard before it (wrapping around).
            before = [k for k, i in enumerate(index) if i <= fair_last]
            last = before[-1] if before else len(index) - 1
        return ops, index, last, outs

    def _chosen(self, policy: int, index: list[int] | None, chosen: int) -> Any:
        guard_index = chosen if index is None else index[chosen]
        if policy == _FAIR:
            if self._native is None:
                self._last = guard_index
            else:
                self._native.last = guard_index
        return self.guards[guard_index]

    def _run(self, policy: int) -> tuple[Any, Any]:
        t0: float | None = None
        while True:
            ops, index, last, outs = self._ops(policy)
            ops = _since(ops, t0)
            started = time.monotonic() if self._foreign else 0.0  # re-runs need foreign guards
            # With a channel shared with OS processes, the shared-memory selection runs every
            # guard (in-process ones linked to its cell); csp.dump() shows the wait.
            shared = _any_shared(ops)
            if shared:
                _shared_wait(_shm.alt_waits(ops))
            self._demand(True, outs)
            try:
                if shared:
                    chosen, value = _shm.select(ops, policy, last)
                else:
                    chosen, value = _select(ops, policy, last)
            except _Moved:
                # A channel moved to shared memory while we waited (nothing fired):
                # choose again, over it where it is now.
                _settle(outs, None)
                continue
            except BaseException:
                _settle(outs, None)
                raise
            finally:
                self._demand(False, outs)
                if shared:
                    _shared_wait(None)
            guard = self._chosen(policy, index, chosen)
            fired = _settle(outs, chosen)
            if fired is not None:
                fired[0]._csp_alt_commit(fired[1])
                return guard, None
            g = _foreign_in(guard)
            if g is None:
                return guard, value
            if isinstance(value, int):
                value = g._csp_alt_take(value)
            done, value = _decode(g, value)
            if done:
                return guard, value
            t0 = t0 if t0 is not None else started

    async def _arun(self, policy: int) -> tuple[Any, Any]:
        if _in_coroutine():
            # A process of the coroutine backend on the general path (shared or networked
            # guards wait through an event loop, which it has not): the blocking selection
            # runs on a worker thread (``aio``) while the process waits for it.
            return await _offload(self._run, policy)
        t0: float | None = None
        while True:
            ops, index, last, outs = self._ops(policy)
            ops = _since(ops, t0)
            started = time.monotonic() if self._foreign else 0.0  # re-runs need foreign guards
            shared = _any_shared(ops)  # see `_run`
            self._demand(True, outs)
            try:
                if shared:
                    chosen, value = await _shm.aselect(ops, policy, last)
                else:
                    chosen, value = await _aselect(ops, policy, last)
            except _Moved:
                _settle(outs, None)  # as in `_run`: a channel moved to shared memory
                continue
            except BaseException:
                _settle(outs, None)
                raise
            finally:
                self._demand(False, outs)
            guard = self._chosen(policy, index, chosen)
            fired = _settle(outs, chosen)
            if fired is not None:
                await fired[0]._csp_alt_acommit(fired[1])
                return guard, None
            g = _foreign_in(guard)
            if g is None:
                return guard, value
            if isinstance(value, int):
                value = await g._csp_alt_atake(value)
            done, value = _decode(g, value)
            if done:
                return guard, value
            t0 = t0 if t0 is not None else started

    def _demand(self, up: bool, outs: list[_Out]) -> None:
        """Tells networked guards whether this selection is waiting (values are offered only
        to a waiting selection, readers are claimed only for one), and marks the wait as one a
        remote peer may end."""
        if not self._foreign and not outs:
            return
        if up:
            for f in self._foreign:
                f._csp_alt_demand(True)
            for _, t, _ in outs:
                t._csp_alt_out_demand(True)
            # A peer on another machine may answer: never a deadlock among local participants.
            _io_wait(True)
        else:
            _io_wait(False)
            for f in self._foreign:
                f._csp_alt_demand(False)
            for _, t, _ in outs:
                t._csp_alt_out_demand(False)

    def __repr__(self) -> str:
        return f"Alt{self.guards!r}"


def select(*guards: GuardLike) -> tuple[Any, Any]:
    """Shortcut for ``Alt(*guards).select()``."""
    return Alt(*guards).select()
