"""The linearizability checker (tests/_refmodel.py) on hand-written histories.

Each rejected history is one a broken channel could record; each accepted one needs the
search (several orders are possible and only some are accepted by the model), so these show
that the checker can fail and that it does not reject correct concurrency.
"""

from __future__ import annotations

from _refmodel import NOTNOW, OK, POISONED, RETIRED, ChanSpec, GuardSpec, Op, check

BUF1 = [ChanSpec("c", 1)]
BUF2 = [ChanSpec("c", 2)]
RDV = [ChanSpec("c", 0)]


def w(proc: str, inv: int, resp: int, value: object, out: str = OK, **kw: object) -> Op:
    return Op(proc, inv, resp, "write", kw.get("chan", "c"), kw.get("end"), value, (out, None))  # type: ignore[arg-type]


def r(proc: str, inv: int, resp: int, value: object = None, out: str = OK, **kw: object) -> Op:
    return Op(proc, inv, resp, "read", kw.get("chan", "c"), kw.get("end"), None, (out, value))  # type: ignore[arg-type]


def accepted(chans: list[ChanSpec], ops: list[Op]) -> bool:
    return check(chans, ops) is None


# --------------------------------------------------------------------- rejected histories


def test_rejects_a_read_that_saw_nothing_while_a_value_was_buffered() -> None:
    # The classic non-linearizable history: the write returned before the read began, the
    # value is read later, yet a read in between found the channel empty.
    ops = [w("a", 0, 10, 1), r("b", 20, 30, out=NOTNOW), r("b", 40, 50, 1)]
    msg = check(BUF1, ops)
    assert msg is not None
    assert "not linearizable" in msg
    assert "notnow" in msg


def test_rejects_fifo_violation() -> None:
    ops = [w("a", 0, 10, 1), w("a", 20, 30, 2), r("b", 40, 50, 2), r("b", 60, 70, 1)]
    assert not accepted(BUF2, ops)


def test_rejects_a_value_read_twice() -> None:
    ops = [w("a", 0, 10, 1), r("b", 20, 30, 1), r("c", 20, 30, 1)]
    msg = check(BUF1, ops)
    assert msg is not None
    assert "twice" in msg


def test_rejects_a_lost_value() -> None:
    # The write succeeded, nobody read it, and the final drain found the channel empty.
    ops = [w("a", 0, 10, 1), r("main", 20, 30, out=NOTNOW)]
    assert not accepted(BUF1, ops)


def test_rejects_a_rendezvous_write_nobody_read() -> None:
    assert not accepted(RDV, [w("a", 0, 10, 1)])


def test_rejects_a_rendezvous_whose_sides_never_overlapped() -> None:
    assert not accepted(RDV, [w("a", 0, 10, 1), r("b", 20, 30, 1)])


def test_rejects_a_write_after_a_finished_retire() -> None:
    chans = [ChanSpec("c", 1, writers=("w0",))]
    ops = [
        Op("a", 0, 10, "retire", "c", "w0"),
        w("a", 20, 30, 1, end="w0"),
        r("b", 40, 50, 1),
    ]
    assert not accepted(chans, ops)


def test_rejects_a_timeout_after_end_of_stream() -> None:
    # Every writer end retired and the buffer is empty: a read fails Retired, never waits.
    chans = [ChanSpec("c", 1, writers=("w0",))]
    ops = [Op("a", 0, 10, "retire", "c", "w0"), r("b", 20, 30, out=NOTNOW)]
    assert not accepted(chans, ops)


def test_rejects_values_surviving_poison() -> None:
    ops = [w("a", 0, 10, 1), Op("a", 20, 30, "poison", "c"), r("b", 40, 50, 1)]
    assert not accepted(BUF1, ops)


def alt(proc: str, inv: int, resp: int, guards: list[GuardSpec], method: str, out: object) -> Op:
    return Op(proc, inv, resp, "alt", None, None, None, (OK, out), tuple(guards), method)


def test_rejects_pri_select_skipping_a_ready_earlier_guard() -> None:
    guards = [GuardSpec("in", "c"), GuardSpec("skip")]
    ops = [w("a", 0, 10, 1), alt("b", 20, 30, guards, "pri_select", (1, None)), r("b", 40, 50, 1)]
    assert not accepted(BUF1, ops)
    # select() may take the Skip: it is ready too.
    ops = [w("a", 0, 10, 1), alt("b", 20, 30, guards, "select", (1, None)), r("b", 40, 50, 1)]
    assert accepted(BUF1, ops)


def test_rejects_a_timeout_guard_firing_early_or_while_a_guard_was_ready() -> None:
    early = [GuardSpec("in", "c"), GuardSpec("timeout", seconds=1.0)]
    assert not accepted(BUF1, [alt("b", 0, 1000, early, "select", (1, None))])
    ready = [GuardSpec("in", "c"), GuardSpec("timeout", seconds=0.0)]
    ops = [w("a", 0, 10, 1), alt("b", 20, 30, ready, "select", (1, None)), r("b", 40, 50, 1)]
    assert not accepted(BUF1, ops)


def test_rejects_a_disabled_guard_firing() -> None:
    guards = [GuardSpec("skip", enabled=False), GuardSpec("timeout", seconds=0.0)]
    assert not accepted(BUF1, [alt("b", 0, 10, guards, "select", (0, None))])


# --------------------------------------------------------------------- accepted histories


def test_accepts_overlapping_operations_in_either_order() -> None:
    # The read overlaps both writes: it may have taken either, but FIFO says only the first
    # write's value can come out first, and the search has to find that order.
    ops = [w("a", 0, 100, 1), w("b", 0, 100, 2), r("c", 0, 100, 2), r("main", 200, 210, 1)]
    assert accepted(BUF2, ops)


def test_accepts_a_rendezvous_pair_and_a_timed_out_third_party() -> None:
    ops = [w("a", 0, 100, 7), r("b", 50, 150, 7), r("c", 0, 10, out=NOTNOW)]
    assert accepted(RDV, ops)


def test_accepts_an_in_flight_write_completing_after_the_writers_retire() -> None:
    # The engine looks at ends when an operation starts: a write already waiting when the last
    # writer end retires still completes (docs/design.md).
    chans = [ChanSpec("c", 0, writers=("w0",))]
    ops = [
        w("a", 0, 100, 1, end="w0"),
        Op("b", 10, 20, "retire", "c", "w0"),
        r("c", 30, 90, 1),
        r("c", 95, 99, out=RETIRED),
    ]
    assert accepted(chans, ops)


def test_accepts_poison_racing_a_blocked_read() -> None:
    ops = [
        r("b", 0, 100, out=POISONED),
        Op("a", 50, 60, "poison", "c"),
        w("a", 70, 80, 1, POISONED),
    ]
    assert accepted(RDV, ops)


def test_accepts_an_alt_meeting_an_alt() -> None:
    out = [GuardSpec("out", "c", value=5), GuardSpec("timeout", seconds=0.05)]
    inp = [GuardSpec("timeout", seconds=0.05), GuardSpec("in", "c")]
    ops = [
        alt("a", 0, 100, out, "pri_select", (0, None)),
        alt("b", 0, 100, inp, "pri_select", (1, 5)),
    ]
    assert accepted(RDV, ops)
