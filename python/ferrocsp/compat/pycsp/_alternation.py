"""PyCSP 0.9 choice: ``Alternation``, ``AltSelect``, ``PriSelect``, ``FairSelect`` and
``@choice`` actions, on one ferrocsp ``Alt`` per alternation.

Invariants:
- Exactly one guard fires per selection (ferrocsp's Alt decides it); then its action runs, in
  the selecting process: a ``Choice`` (from ``@choice``) gets ``channel_input=`` for an input
  guard, a plain callable is called with ``channel_input=`` (input) or nothing (output, skip,
  timeout), a string is executed in the caller's namespace with ``channel_input`` bound.
- ``AltSelect`` is ferrocsp's arbitrary choice; ``PriSelect`` and ``Alternation`` pick the
  first ready guard in order; ``FairSelect`` orders guards by how often each channel was
  chosen before at the same call site of the same process (PyCSP's rule), skip and timeout
  guards last, then picks by priority.
- As in PyCSP, a selection whose channels include a retired one raises
  ``ChannelRetireException`` (checked when the selection starts), and a poisoned one raises
  ``ChannelPoisonException``.
- Selections return ``(ch_end, msg)``: the end (or the skip/timeout guard) chosen, and the
  value read (``None`` for the others).
"""

from __future__ import annotations

import sys
import threading
import types
from collections.abc import Callable
from typing import Any

import ferrocsp as csp

from ._channel import ChannelEndRead, ChannelEndWrite
from ._errors import ChannelRetireException, misuse
from ._guard import SkipGuard, TimeoutGuard
from ._process import current_process_id

__all__ = ["AltSelect", "Alternation", "Choice", "FairSelect", "PriSelect", "choice"]

_RANDOM, _PRIORITY = 0, 1


class Choice:
    """An action with its arguments bound, made by a ``@choice`` function."""

    def __init__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs

    def invoke_on_input(self, channel_input: Any) -> None:
        """Runs the action with the value read as ``channel_input=``."""
        self.fn(*self.args, **{**self.kwargs, "channel_input": channel_input})

    def invoke_on_output(self) -> None:
        """Runs the action for a guard that read nothing."""
        self.fn(*self.args, **self.kwargs)


class _ChoiceFactory:
    """What ``@choice`` returns; calling it binds arguments into a ``Choice``."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.__name__ = getattr(fn, "__name__", "choice")
        self.__doc__ = fn.__doc__

    def __call__(self, *args: Any, **kwargs: Any) -> Choice:
        return Choice(self.fn, *args, **kwargs)


def choice(func: Callable[..., Any]) -> Callable[..., Choice]:
    """``@choice``: turns a function into a factory of actions for guards."""
    if not callable(func):
        raise misuse("choice", f"@choice needs a function, got {func!r}")
    return _ChoiceFactory(func)


def _entries(api: str, guards: Any) -> list[tuple[Any, ...]]:
    """PyCSP's guard list (dicts ``{guard: action}`` or ``{(end, msg): action}``, or tuples)
    as tuples ``(target, action)`` / ``(end, msg, action)``."""
    out: list[tuple[Any, ...]] = []
    for g in guards:
        if isinstance(g, tuple):
            out.append(g)
        elif isinstance(g, dict):
            for key, action in g.items():
                out.append((key[0], key[1], action) if isinstance(key, tuple) else (key, action))
        else:
            raise misuse(api, f"expected dicts {{guard: action}} or guard tuples, got {g!r}")
    return out


def _engine_guard(api: str, entry: tuple[Any, ...]) -> Any:
    target = entry[0]
    if len(entry) == 3:
        if not isinstance(target, ChannelEndWrite):
            raise misuse(api, f"an output guard needs a writer end (-c), got {target!r}")
        return csp.Output(target._end, entry[1])  # type: ignore[arg-type]
    if len(entry) != 2:
        raise misuse(api, f"a guard is (end, action) or (end, msg, action), got {entry!r}")
    if isinstance(target, ChannelEndRead):
        return target._end
    if isinstance(target, SkipGuard):
        return csp.Skip()
    if isinstance(target, TimeoutGuard):
        return csp.Timeout(target.seconds)
    if isinstance(target, ChannelEndWrite):
        raise misuse(api, f"an output guard needs a message: use (end, msg), got {target!r}")
    raise misuse(api, f"cannot use {target!r} as a guard (use *Guard objects or channel ends)")


class Alternation:
    """``Alternation([{cin: action, (cout, msg): action, SkipGuard(): action}])``.

    ``execute()`` selects, performs the communication and runs the chosen guard's action;
    ``select()`` only selects. Both return ``(ch_end, msg)``; guards are tried in order.
    """

    def __init__(self, guards: Any, ensurePriority: bool = False) -> None:  # noqa: N803
        self._init(guards, "Alternation")

    def _init(self, guards: Any, api: str) -> None:
        self.guards = _entries(api, guards)
        if not self.guards:
            raise misuse(api, "needs at least one guard", ValueError)
        engine = [_engine_guard(api, e) for e in self.guards]
        self._alt = csp.Alt(*engine)
        self._index = {id(g): i for i, g in enumerate(engine)}
        self._ends = [e[0] for e in self.guards if isinstance(e[0], ChannelEndRead)]
        self._outs = [e[0] for e in self.guards if isinstance(e[0], ChannelEndWrite)]

    def _choose(self, how: int) -> tuple[int, Any]:
        for end in self._ends:
            st = end._end.channel.stats()
            if st.retired and not st.buffered and not st.poisoned:
                raise ChannelRetireException(f"channel {end.channel.name!r} is retired")
        for out in self._outs:
            st = out._end.channel.stats()
            if st.retired and not st.poisoned:
                raise ChannelRetireException(f"channel {out.channel.name!r} is retired")
        g, msg = self._alt.select() if how == _RANDOM else self._alt.pri_select()
        return self._index[id(g)], msg

    def _result(self, idx: int, msg: Any, frame: types.FrameType | None, run: bool) -> Any:
        entry = self.guards[idx]
        if run:
            _act(entry, msg, frame)
        return (entry[0], msg)

    def execute(self) -> tuple[Any, Any]:
        """Selects one ready guard (first in order), communicates, runs its action."""
        idx, msg = self._choose(_PRIORITY)
        return self._result(idx, msg, sys._getframe(1), True)  # type: ignore[no-any-return]

    def select(self) -> tuple[Any, Any]:
        """Selects one ready guard (first in order) and communicates; runs no action."""
        idx, msg = self._choose(_PRIORITY)
        return self._result(idx, msg, None, False)  # type: ignore[no-any-return]


def _act(entry: tuple[Any, ...], msg: Any, frame: types.FrameType | None) -> None:
    action = entry[-1]
    is_input = len(entry) == 2 and isinstance(entry[0], ChannelEndRead)
    if action is None:
        return
    if isinstance(action, Choice):
        if is_input:
            action.invoke_on_input(msg)
        else:
            action.invoke_on_output()
    elif isinstance(action, _ChoiceFactory):
        raise misuse(
            "choice",
            f"@choice function {action.__name__!r} is not instantiated: use {action.__name__}()"
            f" and not just {action.__name__}",
        )
    elif callable(action):
        if is_input:
            action(channel_input=msg)
        else:
            action()
    elif isinstance(action, str):
        env = dict(frame.f_locals) if frame is not None else {}
        if is_input:
            env["channel_input"] = msg
        where = f"{frame.f_code.co_filename} line {frame.f_lineno}" if frame else "<action>"
        exec(compile(action, f"{where} in string", "exec"), frame.f_globals if frame else {}, env)
    else:
        raise misuse("Alternation", f"an action is a @choice, a callable or a str, got {action!r}")


def _guards(api: str, guards: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for item in guards:
        for g in item if isinstance(item, list) else [item]:
            t = getattr(g, "g", None)
            if not isinstance(t, tuple):
                raise misuse(api, f"cannot use {g!r} as a guard; only use *Guard objects")
            out.append(t)
    return out


def _select(api: str, how: int, guards: tuple[Any, ...], frame: types.FrameType) -> Any:
    alt = Alternation.__new__(Alternation)
    alt._init(_guards(api, guards), api)
    idx, msg = alt._choose(how)
    return alt._result(idx, msg, frame, True)


def AltSelect(*guards: Any) -> tuple[Any, Any]:  # noqa: N802 - PyCSP's name
    """Selects one ready guard (any), communicates, runs its action; ``(ch_end, msg)``."""
    return _select("AltSelect", _RANDOM, guards, sys._getframe(1))  # type: ignore[no-any-return]


def PriSelect(*guards: Any) -> tuple[Any, Any]:  # noqa: N802 - PyCSP's name
    """Selects the first ready guard in order, communicates, runs its action."""
    return _select("PriSelect", _PRIORITY, guards, sys._getframe(1))  # type: ignore[no-any-return]


_history: dict[tuple[str, str, int], dict[str, int]] = {}
_history_lock = threading.Lock()


def FairSelect(*guards: Any) -> tuple[Any, Any]:  # noqa: N802 - PyCSP's name
    """Like ``PriSelect``, with the guards ordered by how seldom each channel was chosen at
    this call site in this process (skip and timeout guards last)."""
    frame = sys._getframe(1)
    key = (current_process_id(), frame.f_code.co_filename, frame.f_lineno)
    entries = _guards("FairSelect", guards)
    with _history_lock:
        counts = dict(_history.get(key, {}))
    chans = [e for e in entries if isinstance(e[0], ChannelEndRead | ChannelEndWrite)]
    rest = [e for e in entries if not isinstance(e[0], ChannelEndRead | ChannelEndWrite)]
    chans.sort(key=lambda e: counts.get(e[0].channel.name, 0))
    alt = Alternation.__new__(Alternation)
    alt._init(chans + rest, "FairSelect")
    idx, msg = alt._choose(_PRIORITY)
    chosen = alt.guards[idx][0]
    if isinstance(chosen, ChannelEndRead | ChannelEndWrite):
        with _history_lock:
            h = _history.setdefault(key, {})
            h[chosen.channel.name] = h.get(chosen.channel.name, 0) + 1
    return alt._result(idx, msg, frame, True)  # type: ignore[no-any-return]
