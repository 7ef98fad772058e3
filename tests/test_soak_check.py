"""The soak's verdicts (bench/soak/soak_check.py) on logs and curves made up to break each
rule: the accounting must name a duplicate, a phantom, a value a live pair lost, a write a
live writer left open; the flatness check must catch a slow climb and a late step, and let
noise and a warm-up pass. The soak itself runs in scripts/test.sh (short) and
scripts/soak.sh (full)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench" / "soak"))
import soak_check
from soak_check import AccountingError, Events, Tolerance, account, flat

pytestmark = pytest.mark.timeout(30)


def w(ids: range | list[int], committed: int | None = None) -> Events:
    """A writer log: attempted ``ids``, the first ``committed`` of them committed."""
    names = [f"1.0.{i}" for i in ids]
    return Events(1, names, names[: len(names) if committed is None else committed], [])


def r(ids: list[int]) -> Events:
    return Events(2, [], [], [f"1.0.{i}" for i in ids])


def test_a_clean_round_adds_up() -> None:
    t = account(
        [w(range(6))], [r([0, 2, 4]), r([1, 3, 5])], capacity=0, poisoned=False, held=0, what="x"
    )
    assert (t.committed, t.read, t.lost, t.indeterminate) == (6, 6, 0, 0)


def test_a_duplicate_is_named() -> None:
    with pytest.raises(AccountingError, match=r"read more than once: 1\.0\.2"):
        account([w(range(3))], [r([0, 2]), r([1, 2])], capacity=4, poisoned=True, held=1, what="x")


def test_a_phantom_is_named() -> None:
    with pytest.raises(AccountingError, match=r"never written: 1\.0\.9"):
        account([w(range(3))], [r([0, 1, 2, 9])], capacity=0, poisoned=False, held=0, what="x")


def test_a_live_pair_loses_nothing() -> None:
    with pytest.raises(AccountingError, match=r"1 committed values never read, at most 0.*1\.0\.1"):
        account([w(range(3))], [r([0, 2])], capacity=4, poisoned=False, held=0, what="x")


def test_poison_may_drop_a_buffer_and_a_kill_one_held_value() -> None:
    # capacity 2 poisoned + one killed reader: 3 committed values may go unread, not 4.
    t = account([w(range(6))], [r([0, 1, 2])], capacity=2, poisoned=True, held=1, what="x")
    assert t.lost == 3
    with pytest.raises(AccountingError, match="4 committed values never read, at most 3"):
        account([w(range(6))], [r([0, 1])], capacity=2, poisoned=True, held=1, what="x")


def test_a_live_writer_leaves_no_write_open() -> None:
    with pytest.raises(AccountingError, match=r"never returned: 1\.0\.2"):
        account(
            [w(range(3), committed=2)], [r([0, 1])], capacity=0, poisoned=False, held=0, what="x"
        )
    # Killed: its last write may be open, read or not.
    t = account(
        [w(range(3), committed=2)],
        [r([0, 1, 2])],
        capacity=0,
        poisoned=False,
        held=0,
        killed_writers=1,
        what="x",
    )
    assert t.indeterminate == 1
    with pytest.raises(AccountingError, match="several writes open"):
        account([w(range(3), committed=1)], [r([0])], capacity=0, poisoned=True, held=0, what="x")


def test_a_malformed_log_line_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "x.log").write_text("P 12\nA 1.0.0\nZ what\n")
    with pytest.raises(AccountingError, match="malformed"):
        soak_check.parse(tmp_path / "x.log")
    assert soak_check.parse(tmp_path / "missing.log").pid is None


TIMES = [float(i) for i in range(100)]


def test_flat_curves_pass_with_noise_and_warm_up() -> None:
    warm = [10.0 + i for i in range(20)] + [30.0 + (i % 3) for i in range(80)]
    assert flat(TIMES, warm, Tolerance(3)) is None


def test_a_slow_climb_fails() -> None:
    climb = [100.0 + i * 0.1 for i in range(100)]  # +10 over the run, tolerance 3
    why = flat(TIMES, climb, Tolerance(3))
    assert why is not None
    assert "rose" in why or "rise" in why


def test_a_late_step_fails() -> None:
    step = [50.0] * 70 + [60.0] * 30
    why = flat(TIMES, step, Tolerance(3))
    assert why is not None


def test_relative_tolerance_for_memory() -> None:
    rss = [100_000.0] * 50 + [105_000.0] * 50  # +5 %, allowed 8 MiB + 10 %
    assert flat(TIMES, rss, soak_check.TOLERANCES["rss_kb"]) is None
    assert flat(TIMES, [100_000.0] * 50 + [130_000.0] * 50, soak_check.TOLERANCES["rss_kb"])


def test_too_few_samples_fail() -> None:
    why = flat(TIMES[:7], [1.0] * 7, Tolerance(3))  # 6 after the warm-up: enough
    assert why is None
    why = flat(TIMES[:5], [1.0] * 5, Tolerance(3))
    assert why is not None
    assert "too few" in why
