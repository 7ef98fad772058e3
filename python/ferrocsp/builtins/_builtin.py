"""How a builtin is declared: ``@builtin(...)`` is ``@process`` plus argument checks at the call.

Invariants:
- A builtin is a process factory (a ``@process``): calling it makes an unstarted ``Process``
  named after the builtin, with the arguments exactly as given (so the process rules of
  ``_process`` find its channels and ends among them).
- Calling it with arguments of the wrong number, kind or value raises ``TypeError`` /
  ``ValueError`` at the call, before any process starts (DESIGN §2 "Errors").
- Groups of channels (``cins``, ``couts``) are lists or tuples: the process rules look for
  channels and ends directly inside list, tuple and dict arguments, nowhere else.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any, ParamSpec, TypeAlias, TypeVar

from .._native import Channel, Reader, Writer
from .._process import Process, _Factory

__all__ = [
    "Check",
    "In",
    "Out",
    "builtin",
    "callable_arg",
    "input_end",
    "input_ends",
    "output_end",
    "output_ends",
    "positive_number",
]

P = ParamSpec("P")
R = TypeVar("R")

#: Where a builtin reads: a ``Reader`` end (best: end-of-stream passes through it) or a channel.
In: TypeAlias = Reader | Channel
#: Where a builtin writes: a ``Writer`` end (best: it can be retired) or a channel.
Out: TypeAlias = Writer | Channel

#: ``check(what, value)`` raises TypeError/ValueError naming ``what`` if ``value`` is wrong.
Check = Callable[[str, Any], None]


def input_end(what: str, value: Any) -> None:
    """Checks one input: a ``Reader`` or a ``Channel``."""
    if isinstance(value, Writer):
        raise TypeError(f"{what} is an input: give a Reader or a Channel, not a Writer")
    if not isinstance(value, Reader | Channel):
        raise TypeError(f"{what} must be a Reader or a Channel, not {type(value).__name__}")


def output_end(what: str, value: Any) -> None:
    """Checks one output: a ``Writer`` or a ``Channel``."""
    if isinstance(value, Reader):
        raise TypeError(f"{what} is an output: give a Writer or a Channel, not a Reader")
    if not isinstance(value, Writer | Channel):
        raise TypeError(f"{what} must be a Writer or a Channel, not {type(value).__name__}")


def _group(check: Check) -> Check:
    def check_all(what: str, value: Any) -> None:
        if not isinstance(value, list | tuple):
            raise TypeError(
                f"{what} must be a list or tuple of channels, not {type(value).__name__}"
            )
        if not value:
            raise ValueError(f"{what} must not be empty")
        for i, v in enumerate(value):
            check(f"{what}[{i}]", v)

    return check_all


#: Checks a non-empty list or tuple of inputs.
input_ends: Check = _group(input_end)
#: Checks a non-empty list or tuple of outputs (also ``Delta``'s ``*couts``, a tuple).
output_ends: Check = _group(output_end)


def callable_arg(what: str, value: Any) -> None:
    """Checks a function argument (``Map``'s ``fn``, ``Filter``'s ``pred``)."""
    if not callable(value):
        raise TypeError(f"{what} must be callable, not {type(value).__name__}")


def positive_number(what: str, value: Any) -> None:
    """Checks a number of seconds > 0 (``Clock``'s ``period``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number of seconds, not {type(value).__name__}")
    if math.isnan(value) or math.isinf(value) or value <= 0:
        raise ValueError(f"{what} must be a finite number of seconds > 0, got {value}")


class _Builtin(_Factory[P, R]):
    """A ``@process`` factory that checks its arguments when called."""

    def __init__(self, fn: Callable[P, R], checks: dict[str, Check]) -> None:
        super().__init__(fn, None, None)
        self._label = f"{getattr(fn, '__name__', 'builtin')}()"
        self._signature = inspect.signature(fn)
        self._checks = checks
        unknown = set(checks) - set(self._signature.parameters)
        if unknown:  # a typo in a builtin's declaration
            raise TypeError(f"{self._label}: checks for unknown parameters {sorted(unknown)}")

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Process[R]:
        try:
            bound = self._signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self._label}: {exc}") from None
        bound.apply_defaults()  # so that an empty ``*couts`` is checked too
        for name, check in self._checks.items():
            check(f"{self._label} argument {name!r}", bound.arguments[name])
        return super().__call__(*args, **kwargs)


def builtin(**checks: Check) -> Callable[[Callable[P, R]], _Factory[P, R]]:
    """``@process`` for the builtins, with a check per parameter name, run at the call.

    Example: ``@builtin(cin=input_end, cout=output_end)`` over ``def Id(cin, cout)``.
    """

    def wrap(fn: Callable[P, R]) -> _Factory[P, R]:
        return _Builtin(fn, checks)

    return wrap
