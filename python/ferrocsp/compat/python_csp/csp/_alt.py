"""python-csp's ``Alt``: choice over channels (input), ``Skip`` and ``Timer`` guards, on one
ferrocsp ``Alt``.

Invariants:
- ``select()`` (any ready guard), ``pri_select()`` (the first ready in order) and
  ``fair_select()`` (not the guard chosen last time while another is ready) each wait without
  polling and return what the chosen guard gives: the value read from a channel, ``'Skip'``
  for Skip, ``None`` for a Timer.
- ``poison()`` poisons the guard chosen last and removes it; an ``Alt`` with no guard left
  raises ``NoGuardInAlt`` when asked to select.
- ``alt * n`` (or ``n * alt``) is a generator of ``n`` successive ``select()`` results.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import ferrocsp as csp

from ._channel import Guard, NoGuardInAlt, misuse

__all__ = ["Alt"]


class Alt:
    """``Alt(guard, ...)``: chooses one ready guard; see the module docstring."""

    def __init__(self, *args: Any) -> None:
        for g in args:
            if not isinstance(g, Guard):
                raise misuse("Alt", f"guards are Channels, Skip() or Timer(), got {g!r}")
        self.guards: list[Guard] = list(args)
        self.last_selected: Guard | None = None
        self._alt: csp.Alt | None = None
        self._built_for: list[Guard] = []

    def _engine(self) -> tuple[csp.Alt, list[Any]]:
        if not self.guards:
            raise NoGuardInAlt()
        engine = [g.engine_guard() for g in self.guards]
        # Timers are relative to each selection; channels and Skip keep one Alt, so that
        # fair_select remembers the guard it chose last.
        fixed = all(e is not None and not isinstance(e, csp.Timeout) for e in engine)
        if self._alt is None or not fixed or self._built_for != self.guards:
            self._alt = csp.Alt(*engine)
            self._built_for = list(self.guards)
            self._engine_guards = engine
        return self._alt, self._engine_guards

    def _finish(self, chosen: Any, value: Any, engine: list[Any]) -> Any:
        for g, e in zip(self.guards, engine, strict=True):
            if e is chosen:
                self.last_selected = g
                return g.chosen(value)
        raise AssertionError("ferrocsp chose a guard this Alt does not hold")

    def select(self) -> Any:
        """Waits for any guard to be ready, chooses one at random among the ready ones."""
        alt, engine = self._engine()
        chosen, value = alt.select()
        return self._finish(chosen, value, engine)

    def pri_select(self) -> Any:
        """Chooses the first ready guard in the order given to ``Alt``."""
        alt, engine = self._engine()
        chosen, value = alt.pri_select()
        return self._finish(chosen, value, engine)

    def fair_select(self) -> Any:
        """Chooses a ready guard other than the one chosen last time, if there is one."""
        alt, engine = self._engine()
        chosen, value = alt.fair_select()
        return self._finish(chosen, value, engine)

    def poison(self) -> None:
        """Poisons the guard chosen last and removes it from this Alt."""
        if self.last_selected is None:
            raise misuse("Alt", "poison() needs a guard chosen by an earlier select", ValueError)
        self.last_selected.poison()
        self.guards.remove(self.last_selected)
        self.last_selected = None

    def __mul__(self, n: int) -> Iterator[Any]:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise misuse("Alt", f"alt * n needs an int n >= 1, got {n!r}")
        return (self.select() for _ in range(n))

    __rmul__ = __mul__
