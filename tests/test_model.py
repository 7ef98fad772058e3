"""Hypothesis stateful test: a channel used from one thread against a sequential model.

The model is a deque (the buffer), a poisoned flag, and the list of counted ends with their
retired flags. Every operation is non-blocking (``*_nowait``), so one thread suffices; the
model predicts the value or the exception of each, and ``stats()`` after each step.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import ferrocsp as csp


@dataclass
class ModelEnd:
    end: Any
    kind: str  # "reader" | "writer"
    retired: bool = False


@dataclass
class Model:
    capacity: int
    buffer: deque[object] = field(default_factory=deque)
    poisoned: bool = False
    ends: list[ModelEnd] = field(default_factory=list)

    def side(self, kind: str) -> list[ModelEnd]:
        return [e for e in self.ends if e.kind == kind]

    def side_retired(self, kind: str) -> bool:
        ends = self.side(kind)
        return bool(ends) and all(e.retired for e in ends)

    @property
    def writers_retired(self) -> bool:
        return self.side_retired("writer")

    @property
    def readers_retired(self) -> bool:
        return self.side_retired("reader")


class ChannelMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.counter = itertools.count()
        self.ch: Any = None
        self.model: Model | None = None

    @initialize(capacity=st.integers(min_value=0, max_value=4))
    def make_channel(self, capacity: int) -> None:
        self.ch = csp.Channel(capacity, name="model")
        self.model = Model(capacity)

    # ----------------------------------------------------------------- helpers

    @property
    def m(self) -> Model:
        assert self.model is not None
        return self.model

    def _pick(self, kind: str, index: int) -> ModelEnd | None:
        """index 0 means "the channel itself", otherwise an end of the given kind."""
        ends = self.m.side(kind)
        if index == 0 or not ends:
            return None
        return ends[(index - 1) % len(ends)]

    def _expect(self, allowed: tuple[type[BaseException], ...], fn: Any) -> Any:
        caught: BaseException | None = None
        try:
            result = fn()
        except BaseException as exc:  # noqa: BLE001 - checked below
            caught = exc
        else:
            raise AssertionError(f"expected {allowed}, got result {result!r}")
        assert isinstance(caught, allowed), f"expected {allowed}, got {caught!r}"
        return caught

    # ----------------------------------------------------------------- rules

    @precondition(lambda self: not self.m.writers_retired and not self.m.poisoned)
    @rule()
    def make_writer(self) -> None:
        self.m.ends.append(ModelEnd(self.ch.writer(), "writer"))

    @precondition(lambda self: not self.m.readers_retired and not self.m.poisoned)
    @rule()
    def make_reader(self) -> None:
        self.m.ends.append(ModelEnd(self.ch.reader(), "reader"))

    @rule(via=st.integers(min_value=0, max_value=3))
    def write_nowait(self, via: int) -> None:
        m = self.m
        end = self._pick("writer", via)
        target = self.ch if end is None else end.end
        value = [next(self.counter)]  # a fresh object: identity is checked on read
        if m.poisoned and end is not None and end.retired:
            self._expect(
                (csp.ChannelPoisoned, csp.ChannelRetired), lambda: target.write_nowait(value)
            )
        elif m.poisoned:
            self._expect((csp.ChannelPoisoned,), lambda: target.write_nowait(value))
        elif (end is not None and end.retired) or m.writers_retired or m.readers_retired:
            self._expect((csp.ChannelRetired,), lambda: target.write_nowait(value))
        elif len(m.buffer) >= m.capacity:
            self._expect((csp.WouldBlock,), lambda: target.write_nowait(value))
        else:
            target.write_nowait(value)
            m.buffer.append(value)

    @rule(via=st.integers(min_value=0, max_value=3))
    def read_nowait(self, via: int) -> None:
        m = self.m
        end = self._pick("reader", via)
        target = self.ch if end is None else end.end
        if m.poisoned and end is not None and end.retired:
            self._expect((csp.ChannelPoisoned, csp.ChannelRetired), target.read_nowait)
        elif m.poisoned:
            self._expect((csp.ChannelPoisoned,), target.read_nowait)
        elif (end is not None and end.retired) or m.readers_retired:
            self._expect((csp.ChannelRetired,), target.read_nowait)
        elif m.buffer:
            got = target.read_nowait()
            expected = m.buffer.popleft()
            assert got is expected, f"read {got!r}, expected {expected!r}"
        elif m.writers_retired:
            self._expect((csp.ChannelRetired,), target.read_nowait)
        else:
            self._expect((csp.WouldBlock,), target.read_nowait)

    @rule(kind=st.sampled_from(["reader", "writer"]), index=st.integers(0, 5))
    def retire_end(self, kind: str, index: int) -> None:
        end = self._pick(kind, index + 1)
        if end is None:
            return
        end.end.retire()  # idempotent: retiring twice is fine
        end.retired = True

    @rule(kind=st.sampled_from(["channel", "reader", "writer"]), index=st.integers(0, 5))
    def poison(self, kind: str, index: int) -> None:
        end = None if kind == "channel" else self._pick(kind, index + 1)
        if end is not None and end.retired:
            return  # poisoning through a retired end is not specified
        (self.ch if end is None else end.end).poison()
        self.m.poisoned = True
        self.m.buffer.clear()

    @rule()
    def drain_by_iteration(self) -> None:
        """Iterating is only non-blocking once the writers have all retired."""
        m = self.m
        if m.poisoned or m.readers_retired or not m.writers_retired:
            return
        assert list(self.ch) == list(m.buffer)
        m.buffer.clear()

    # ----------------------------------------------------------------- invariants

    @invariant()
    def stats_match_model(self) -> None:
        if self.model is None:
            return
        m = self.m
        s = self.ch.stats()
        assert s.capacity == m.capacity
        if m.readers_retired:
            # no reader can ever take them: the channel may drop buffered values
            assert s.buffered in (0, len(m.buffer))
        else:
            assert s.buffered == len(m.buffer)
        assert s.readers_waiting == 0
        assert s.writers_waiting == 0
        assert s.poisoned == m.poisoned
        assert s.retired == (m.writers_retired or m.readers_retired)
        for kind, count in (("reader", s.reader_ends), ("writer", s.writer_ends)):
            made = len(m.side(kind))
            live = len([e for e in m.side(kind) if not e.retired])
            assert count in (made, live), f"{kind}_ends={count}, made={made}, live={live}"


ChannelMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

TestChannelModel = pytest.mark.timeout(120)(ChannelMachine.TestCase)
