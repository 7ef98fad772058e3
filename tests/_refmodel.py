"""A reference model of ferrocsp's channel semantics, and a linearizability checker over it.

The model is the contract of DESIGN 2 and docs/semantics.md written as small pure functions
over an immutable state, so that it can be read as the specification:

- a channel has a capacity, a FIFO buffer (empty for a rendezvous), a poisoned flag and its
  counted reader and writer ends; an end is retired or not;
- ``writers retired`` / ``readers retired``: ends of that kind were made and all retired;
- a read: through a retired end fails ``Retired``; on a poisoned channel ``Poisoned``; after
  the readers retired ``Retired``; otherwise it takes the head of the buffer; on a rendezvous
  it takes the value of a writer at the same instant (a *communication*: one event that
  completes both operations); with nothing to take it fails ``Retired`` once the writers
  retired, else it is not possible now (a timeout, ``WouldBlock``);
- a write: through a retired end ``Retired``; poisoned ``Poisoned``; either side retired
  ``Retired``; otherwise into a free buffer place, or to a reader at the same instant on a
  rendezvous; else not possible now;
- poison drops the buffer; the last reader end retiring drops it too;
- an Alt fires exactly one enabled guard: an input or output guard by the rules above, Skip
  at any time, a Timeout once its time has passed and only when no other enabled guard is
  ready; ``pri_select`` (and ``fair_select`` on a fresh ``Alt``, whose rotation starts at the
  first guard) fires the first ready guard in order; a poisoned channel's guard is ready and
  choosing it raises ``Poisoned``.

Two refinements say what is observable when operations overlap, both decided by the engine
(docs/design.md, "How it is checked: hypothesis models"):

- An end is looked at when an operation *starts*: an operation that was already under way
  when its end (or, for a write, the last writer end) retired may still complete. So a retire
  that finished before an operation was invoked makes it fail, and one that overlapped it
  allows either outcome.
- Readiness the model cannot see (a counterpart waiting on a rendezvous) is never required:
  the model rejects a choice only when a guard it knows was ready (a buffered value or place,
  poison) should have been preferred.

``check(history)`` is a Wing & Gong search (with Lowe's memoisation of visited configurations)
for a total order of the operations that respects real time (an operation that returned
before another was invoked comes first), pairs each rendezvous write with the read that got
its value, and is accepted step by step by the model. Values are unique per history (the
programs write distinct integers or distinct ends), which names each communication's partner.

Invariants:
- The model is pure: ``step`` never mutates its argument, states are hashable tuples.
- ``check`` returns None when a linearization exists, else a text naming the operations it
  could not place; it never gives up early (no budget), so a failure is a real divergence.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

# Outcome kinds of an operation.
OK = "ok"
POISONED = "poisoned"
RETIRED = "retired"
NOTNOW = "notnow"  # TimeoutError or WouldBlock: nothing was sent or taken

#: Slack for comparing a Timeout guard's elapsed time with its duration (clock granularity).
CLOCK_SLACK_NS = 1_000_000


@dataclass(frozen=True)
class ChanSpec:
    """A channel of the history: its capacity and the labels of its counted ends.

    ``own_side_retire_unchecked``: the known divergence of networked channels (docs/design.md,
    "How it is checked: hypothesis models"): an operation through the channel object does not
    look at whether every end of its *own* side retired (a read after every reader end
    retired, a write after every writer end retired), and the buffer is kept. With it set the
    model allows that as well as ``Retired``, so that the rest is still checked."""

    name: str
    capacity: int
    readers: tuple[str, ...] = ()
    writers: tuple[str, ...] = ()
    own_side_retire_unchecked: bool = False
    #: Networked channels, as docs/net.md says ("Alt"): a guard's value or room is offered
    #: only to a selection that waits, so a selection that does not wait (a Skip, a Timeout
    #: that came first) may pass over it; the model then never knows such a guard is ready.
    offers_only_to_waiting: bool = False
    #: Networked channels: a write or read that gives up (``*_nowait``, a timeout) may do so
    #: while the model's buffer had room or a value: ``*_nowait`` is one round trip with
    #: timeout 0 (docs/net.md), and a value read counts against the capacity until its
    #: acknowledgement reaches the server. Nothing was sent or taken still holds (the values
    #: are accounted for by the rest of the history).
    may_give_up_early: bool = False


@dataclass(frozen=True)
class GuardSpec:
    """One guard of an Alt: ``kind`` is ``in``, ``out``, ``timeout`` or ``skip``; ``end`` is
    None for the channel object itself."""

    kind: str
    chan: str | None = None
    end: str | None = None
    value: Any = None
    enabled: bool = True
    seconds: float = 0.0


@dataclass
class Op:
    """One operation of a history with its invocation and response times (ns).

    ``kind``: ``read``, ``write``, ``alt``, ``poison``, ``retire``, ``stats``.
    ``outcome``: ``(OK, value)`` (for an Alt ``(OK, (index, value))``), ``(POISONED, None)``,
    ``(RETIRED, None)``, ``(NOTNOW, None)``; for ``stats`` ``(OK, (poisoned, retired))``.
    """

    proc: str
    inv: int
    resp: int
    kind: str
    chan: str | None = None
    end: str | None = None
    value: Any = None
    outcome: tuple[str, Any] = (OK, None)
    guards: tuple[GuardSpec, ...] = ()
    method: str = "select"
    id: int = field(default=-1, compare=False)

    def __str__(self) -> str:
        where = f"{self.chan}" + (f" via {self.end}" if self.end else "")
        what = f"{self.kind} {where}"
        if self.kind == "write":
            what += f" {self.value!r}"
        if self.kind == "alt":
            what = f"alt.{self.method}({', '.join(map(_guard_str, self.guards))})"
        return f"#{self.id} {self.proc}: {what} -> {self.outcome} [{self.inv}, {self.resp}]"


def _guard_str(g: GuardSpec) -> str:
    off = "" if g.enabled else " (off)"
    if g.kind == "in":
        return f"in {g.chan}{' via ' + g.end if g.end else ''}{off}"
    if g.kind == "out":
        return f"out {g.chan}{' via ' + g.end if g.end else ''} {g.value!r}{off}"
    if g.kind == "timeout":
        return f"timeout {g.seconds}{off}"
    return f"skip{off}"


# ------------------------------------------------------------------------------- the model

# A state: (per channel in spec order: (buffer tuple, poisoned), frozenset of retire op ids).
State = tuple[tuple[tuple[tuple[Any, ...], bool], ...], frozenset[int]]


class Model:
    """The channel semantics over the channels and retire operations of one history."""

    def __init__(self, chans: Sequence[ChanSpec], ops: Sequence[Op]) -> None:
        self.chans = list(chans)
        self.index = {c.name: i for i, c in enumerate(self.chans)}
        self.end_chan: dict[str, tuple[str, str]] = {}
        for c in self.chans:
            for e in c.readers:
                self.end_chan[e] = (c.name, "reader")
            for e in c.writers:
                self.end_chan[e] = (c.name, "writer")
        self.ops = ops
        # retire ops by the end they retire
        self.retires_of: dict[str, list[Op]] = {}
        for o in ops:
            if o.kind == "retire":
                assert o.end is not None
                self.retires_of.setdefault(o.end, []).append(o)

    def initial(self) -> State:
        return tuple(((), False) for _ in self.chans), frozenset()

    # ---------------------------------------------------------------- retire status

    def _end_status(self, state: State, end: str, op: Op) -> str:
        """``no``: not retired at this point; ``yes``: retired before ``op`` was invoked;
        ``maybe``: retired at this point by a retire that overlapped ``op``."""
        status = "no"
        for r in self.retires_of.get(end, ()):
            if r.id in state[1]:
                if r.resp < op.inv:
                    return "yes"
                status = "maybe"
        return status

    def _side_status(self, state: State, chan: str, side: str, op: Op) -> str:
        """The same for "every end of ``side`` made has retired" (``no`` with no end made)."""
        c = self.chans[self.index[chan]]
        ends = c.readers if side == "reader" else c.writers
        if not ends:
            return "no"
        statuses = [self._end_status(state, e, op) for e in ends]
        if "no" in statuses:
            return "no"
        return "yes" if all(s == "yes" for s in statuses) else "maybe"

    # ---------------------------------------------------------------- single events

    def _chan(self, state: State, chan: str) -> tuple[tuple[Any, ...], bool]:
        return state[0][self.index[chan]]

    def _set(self, state: State, chan: str, buf: tuple[Any, ...], poisoned: bool) -> State:
        chans = list(state[0])
        chans[self.index[chan]] = (buf, poisoned)
        return tuple(chans), state[1]

    def read_outcomes(self, state: State, chan: str, end: str | None, op: Op) -> Iterator[Any]:
        """What a read (or an input guard) may do at this point: yields ``(kind, detail,
        new_state)``; ``detail`` is the value taken (OK), or ``"pair"`` for a rendezvous
        communication (the caller finds the partner), None otherwise."""
        buf, poisoned = self._chan(state, chan)
        cap = self.chans[self.index[chan]].capacity
        es = self._end_status(state, end, op) if end else "no"
        if es in ("yes", "maybe"):
            yield RETIRED, None, state
            if es == "yes":
                return
        if poisoned:
            yield POISONED, None, state
            return
        # The last reader end retiring fails waiting readers at once (no grace for readers).
        if self._all_retired(state, chan, "reader"):
            yield RETIRED, None, state
            if not self._lax(chan):
                return
        if buf:
            yield OK, buf[0], self._set(state, chan, buf[1:], poisoned)
            if self._gives_up_early(chan):
                yield NOTNOW, None, state
            return
        if cap == 0:
            yield OK, "pair", state  # a writer already under way may still be met
        # The last writer end retiring fails waiting readers at once too: no timeout then.
        if self._all_retired(state, chan, "writer"):
            yield RETIRED, None, state
            return
        yield NOTNOW, None, state

    def _gives_up_early(self, chan: str) -> bool:
        return self.chans[self.index[chan]].may_give_up_early

    def _lax(self, chan: str) -> bool:
        return self.chans[self.index[chan]].own_side_retire_unchecked

    def _retired(self, state: State, end: str) -> bool:
        return any(r.id in state[1] for r in self.retires_of.get(end, ()))

    def _all_retired(self, state: State, chan: str, side: str) -> bool:
        """Ends of ``side`` were made and each has retired by this point."""
        c = self.chans[self.index[chan]]
        ends = c.readers if side == "reader" else c.writers
        return bool(ends) and all(self._retired(state, e) for e in ends)

    def write_outcomes(
        self, state: State, chan: str, end: str | None, value: Any, op: Op
    ) -> Iterator[Any]:
        buf, poisoned = self._chan(state, chan)
        cap = self.chans[self.index[chan]].capacity
        es = self._end_status(state, end, op) if end else "no"
        if es in ("yes", "maybe"):
            yield RETIRED, None, state
            if es == "yes":
                return
        if poisoned:
            yield POISONED, None, state
            return
        if self._all_retired(state, chan, "reader"):
            yield RETIRED, None, state
            return
        ws = self._side_status(state, chan, "writer", op)
        if ws == "yes" and self._lax(chan):
            ws = "maybe"
        if ws in ("yes", "maybe"):
            yield RETIRED, None, state
            if ws == "yes":
                return
        if cap == 0:
            yield OK, "pair", state
        elif len(buf) < cap:
            yield OK, None, self._set(state, chan, (*buf, value), poisoned)
            if not self._gives_up_early(chan):
                return
        yield NOTNOW, None, state

    def ready(self, state: State, g: GuardSpec) -> bool:
        """Whether the model *knows* guard ``g`` is ready (see the module doc)."""
        if not g.enabled or g.kind == "timeout":
            return False
        if g.kind == "skip":
            return True
        assert g.chan is not None
        if self.chans[self.index[g.chan]].offers_only_to_waiting:
            return False
        if g.end and self._retired(state, g.end):
            return False
        buf, poisoned = self._chan(state, g.chan)
        if poisoned:
            return True
        cap = self.chans[self.index[g.chan]].capacity
        if self._all_retired(state, g.chan, "reader") or cap == 0:
            return False
        if g.kind == "in":
            return bool(buf)
        if self._all_retired(state, g.chan, "writer"):
            return False
        return len(buf) < cap

    # ---------------------------------------------------------------- one operation

    def steps(self, state: State, op: Op) -> Iterator[tuple[State, tuple[str, Any] | None]]:
        """The states ``op`` may lead to from ``state`` with its recorded outcome; each with
        None, or ``("read"|"write", (chan, value))`` when it needs a rendezvous partner."""
        kind, detail = op.outcome
        if op.kind == "poison":
            assert op.chan is not None
            yield self._set(state, op.chan, (), True), None
        elif op.kind == "retire":
            assert op.end is not None
            chans, retired = state
            new: State = (chans, retired | {op.id})
            chan, side = self.end_chan[op.end]
            if side == "reader" and self._all_retired(new, chan, "reader") and not self._lax(chan):
                _, poisoned = self._chan(new, chan)
                new = self._set(new, chan, (), poisoned)
            yield new, None
        elif op.kind == "stats":
            assert op.chan is not None
            _, poisoned = self._chan(state, op.chan)
            want_poisoned, want_retired = detail
            retired = self._all_retired(state, op.chan, "reader") or self._all_retired(
                state, op.chan, "writer"
            )
            if (poisoned, retired) == (want_poisoned, want_retired):
                yield state, None
        elif op.kind == "read":
            assert op.chan is not None
            for k, d, s in self.read_outcomes(state, op.chan, op.end, op):
                if k != kind:
                    continue
                if k == OK and d == "pair":
                    yield s, ("read", (op.chan, detail))
                elif k != OK or d == detail:
                    yield s, None
        elif op.kind == "write":
            assert op.chan is not None
            for k, d, s in self.write_outcomes(state, op.chan, op.end, op.value, op):
                if k != kind:
                    continue
                yield s, (("write", (op.chan, op.value)) if k == OK and d == "pair" else None)
        elif op.kind == "alt":
            yield from self._alt_steps(state, op)
        else:
            raise ValueError(f"unknown operation kind {op.kind!r}")

    def _alt_steps(self, state: State, op: Op) -> Iterator[tuple[State, tuple[str, Any] | None]]:
        kind, detail = op.outcome
        guards = op.guards
        if kind == POISONED:
            # Some enabled channel guard whose channel is poisoned was chosen.
            for g in guards:
                if g.enabled and g.kind in ("in", "out") and self._chan(state, g.chan)[1]:
                    yield state, None
                    return
            return
        if kind != OK:
            return  # an Alt with an enabled Timeout or Skip neither times out nor retires
        index, value = detail
        g = guards[index]
        if not g.enabled:
            return
        ordered = op.method in ("pri_select", "fair_select")
        if ordered and any(self.ready(state, h) for h in guards[:index]):
            return
        if g.kind == "skip":
            yield state, None
        elif g.kind == "timeout":
            if op.resp - op.inv + CLOCK_SLACK_NS < g.seconds * 1e9:
                return  # fired before its time
            if not any(self.ready(state, h) for h in guards if h is not g):
                yield state, None
        elif g.kind == "in":
            assert g.chan is not None
            for k, d, s in self.read_outcomes(state, g.chan, g.end, op):
                if k == OK and d == "pair":
                    yield s, ("read", (g.chan, value))
                elif k == OK and d == value:
                    yield s, None
        else:
            assert g.chan is not None
            for k, d, s in self.write_outcomes(state, g.chan, g.end, g.value, op):
                if k == OK:
                    yield s, (("write", (g.chan, g.value)) if d == "pair" else None)


# ------------------------------------------------------------------------------- the search


def _partners(ops: Sequence[Op]) -> dict[tuple[str, str, Any], int]:
    """(role, chan, value) -> op id, for the operations that completed a rendezvous side."""
    found: dict[tuple[str, str, Any], int] = {}

    def add(key: tuple[str, str, Any], op: Op) -> None:
        if key in found:
            raise ValueError(f"value {key[2]!r} appears twice as {key[0]} on {key[1]}")
        found[key] = op.id

    for o in ops:
        if o.outcome[0] != OK:
            continue
        if o.kind == "read":
            add(("read", o.chan, o.outcome[1]), o)  # type: ignore[arg-type]
        elif o.kind == "write":
            add(("write", o.chan, o.value), o)  # type: ignore[arg-type]
        elif o.kind == "alt":
            index, value = o.outcome[1]
            g = o.guards[index]
            if g.kind == "in":
                add(("read", g.chan, value), o)  # type: ignore[arg-type]
            elif g.kind == "out":
                add(("write", g.chan, g.value), o)  # type: ignore[arg-type]
    return found


def check(chans: Sequence[ChanSpec], ops: Sequence[Op]) -> str | None:
    """None if the history is linearizable against the model, else why not (see module doc)."""
    ops = sorted(ops, key=lambda o: (o.inv, o.resp))
    for i, o in enumerate(ops):
        o.id = i
        if o.resp < o.inv:
            raise ValueError(f"operation returned before it was invoked: {o}")
    model = Model(chans, ops)
    try:
        partners = _partners(ops)
    except ValueError as e:
        return f"not linearizable: {e}\nhistory:\n" + "\n".join(f"  {o}" for o in ops)
    n = len(ops)
    full = (1 << n) - 1
    seen: set[tuple[int, State]] = set()
    best: list[int] = [0]  # the most operations placed, for the report
    best_mask: list[int] = [0]
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * n + 1000))

    def candidates(mask: int) -> list[Op]:
        pending = [o for o in ops if not mask >> o.id & 1]
        first_resp = min(o.resp for o in pending)
        return [o for o in pending if o.inv <= first_resp]

    def search(mask: int, state: State) -> bool:
        if mask == full:
            return True
        if (mask, state) in seen:
            return False
        done = bin(mask).count("1")
        if done > best[0]:
            best[0], best_mask[0] = done, mask
        cands = candidates(mask)
        ids = {o.id for o in cands}
        for o in cands:
            for new, need in model.steps(state, o):
                bits = 1 << o.id
                if need is not None:
                    role, (chan, value) = need
                    other = "write" if role == "read" else "read"
                    p = partners.get((other, chan, value))
                    if p is None or p not in ids or p == o.id:
                        continue
                    # The partner completes at the same instant: it must accept it too.
                    if not _partner_accepts(model, new, ops[p], role, chan, value):
                        continue
                    bits |= 1 << p
                if search(mask | bits, new):
                    return True
        seen.add((mask, state))
        return False

    try:
        if search(0, model.initial()):
            return None
    finally:
        sys.setrecursionlimit(limit)
    placed = best_mask[0]
    stuck = [o for o in ops if not placed >> o.id & 1]
    lines = [f"not linearizable: {best[0]} of {n} operations placed; could not place:"]
    lines += [f"  {o}" for o in stuck[:12]]
    lines += ["history:"] + [f"  {o}" for o in ops]
    return "\n".join(lines)


def _partner_accepts(model: Model, state: State, p: Op, role: str, chan: str, value: Any) -> bool:
    """Whether op ``p`` can be the other side (a write if ``role`` is read) of a rendezvous
    communication of ``value`` on ``chan`` at this point."""
    for _new, need in model.steps(state, p):
        if need == ("write" if role == "read" else "read", (chan, value)):
            return True
    return False
