"""The soak's two verdicts: exact accounting of a round's values, and flat resource curves.

Accounting (``account``), over the logs of one round (``soak_work``'s line format). Let
*attempted* be the ids some writer logged ``A``, *committed* those it logged ``C`` (its write
returned), *read* the ``R`` lines of all readers. The rule:

1. no phantom: every id read was attempted;
2. no duplicate: no id is read twice (by one reader or by two);
3. no loss by a live pair: every committed id is read, except at most
   ``capacity`` ids when the channel was poisoned (a poisoned channel drops its buffer) plus
   one id per reader that was killed or interrupted (a reader holds at most one value
   between its read returning and its ``R`` line);
4. no write left open by a live writer: a writer offers one value at a time, so at most one
   of its ids is attempted and not committed, and outside a poisoned channel only a killed
   writer may leave one.

So a round that nobody poisoned, killed or interrupted must read exactly the attempted ids,
every one of them committed.

Any breach raises ``AccountingError`` naming the ids. Attempted ids whose write never
returned (its writer was killed, or the write raised on poison) may have been read once or
not at all; they are counted as *indeterminate*.

Flatness (``flat``): after a warm-up (the first ``WARMUP`` of the samples), the median of
the last third of a series may exceed the median of the first third by at most the series'
tolerance, and neither may the least-squares line's rise over the window.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

#: The share of the samples (by count) dropped before the flatness check: caches and pools
#: fill in the first rounds (allocator arenas, the forkserver, the NATS connection).
WARMUP = 0.2


#: A curve with fewer samples after the warm-up says nothing: it fails.
MIN_SAMPLES = 6


class AccountingError(AssertionError):
    """A round's values do not add up (the message names the ids)."""


@dataclass
class Events:
    """One worker's log, parsed."""

    pid: int | None
    attempted: list[str]
    committed: list[str]
    read: list[str]
    poisoned: bool = False  # this reader poisoned the channel


def parse(path: Path) -> Events:
    """A worker's log; a missing file is a worker that never started (killed before)."""
    ev = Events(None, [], [], [])
    try:
        text = path.read_text()
    except FileNotFoundError:
        return ev
    for line in text.splitlines():
        kind, _, ident = line.partition(" ")
        if kind == "P":
            ev.pid = int(ident)
        elif kind == "A":
            ev.attempted.append(ident)
        elif kind == "C":
            ev.committed.append(ident)
        elif kind == "R":
            ev.read.append(ident)
        elif kind == "X":
            ev.poisoned = True
        else:
            raise AccountingError(f"{path}: malformed log line {line!r}")
    return ev


@dataclass
class Tally:
    """What one round moved."""

    committed: int = 0
    read: int = 0
    lost: int = 0  # committed, never read, within the allowance
    indeterminate: int = 0  # attempted, write never returned

    def add(self, other: Tally) -> None:
        self.committed += other.committed
        self.read += other.read
        self.lost += other.lost
        self.indeterminate += other.indeterminate


def _ids(ids: set[str] | list[str], limit: int = 20) -> str:
    s = sorted(ids)
    more = f" ... (+{len(s) - limit})" if len(s) > limit else ""
    return ", ".join(s[:limit]) + more


def account(
    writers: list[Events],
    readers: list[Events],
    *,
    capacity: int,
    poisoned: bool,
    held: int,
    killed_writers: int = 0,
    what: str,
) -> Tally:
    """Checks the rule above for one channel. ``held``: readers killed or interrupted;
    ``killed_writers``: writers killed or interrupted."""
    attempted: set[str] = set()
    committed: set[str] = set()
    for w in writers:
        attempted.update(w.attempted)
        committed.update(w.committed)
    if not committed <= attempted:
        raise AccountingError(f"{what}: committed, never attempted: {_ids(committed - attempted)}")
    counts = Counter(v for r in readers for v in r.read)
    dups = {v for v, c in counts.items() if c > 1}
    if dups:
        raise AccountingError(f"{what}: read more than once: {_ids(dups)}")
    read = set(counts)
    phantom = read - attempted
    if phantom:
        raise AccountingError(f"{what}: read, never written: {_ids(phantom)}")
    lost = committed - read
    allowed = (capacity if poisoned else 0) + held
    if len(lost) > allowed:
        raise AccountingError(
            f"{what}: {len(lost)} committed values never read, at most {allowed} allowed "
            f"(capacity {capacity}, poisoned {poisoned}, readers killed {held}): {_ids(lost)}"
        )
    for w in writers:
        pending = set(w.attempted) - set(w.committed)
        if len(pending) > 1:  # a writer offers one value at a time
            raise AccountingError(f"{what}: one writer with several writes open: {_ids(pending)}")
    uncommitted = attempted - committed
    if not poisoned and len(uncommitted) > killed_writers:
        # Nothing poisoned: only a killed writer's last write may not have returned.
        raise AccountingError(f"{what}: writes that never returned: {_ids(uncommitted)}")
    return Tally(len(committed), len(read), len(lost), len(uncommitted))


@dataclass
class Tolerance:
    """How much a resource may grow over the soak: ``absolute + relative * start``."""

    absolute: float
    relative: float = 0.0

    def allowed(self, start: float) -> float:
        return self.absolute + self.relative * abs(start)


#: Per resource: quiescent counts must come back exactly (up to a pool's worth of slack);
#: memory may wander a little (allocator fragmentation) but not climb.
TOLERANCES = {
    "fds": Tolerance(3),
    "threads": Tolerance(1),
    "children": Tolerance(0),
    "maps": Tolerance(16, 0.05),
    "memfd_fds": Tolerance(2),
    "shm_maps": Tolerance(4),
    "rss_kb": Tolerance(8 * 1024, 0.10),
}


def flat(times: list[float], values: list[float], tol: Tolerance) -> str | None:
    """``None`` when the series is flat, else why not (see the module's rule)."""
    start = int(len(values) * WARMUP)
    t, v = times[start:], values[start:]
    if len(v) < MIN_SAMPLES:
        return f"only {len(v)} samples after the warm-up: too few to judge (need {MIN_SAMPLES})"
    third = len(v) // 3
    first, last = statistics.median(v[:third]), statistics.median(v[-third:])
    allowed = tol.allowed(first)
    if last - first > allowed:
        return f"median rose from {first:g} to {last:g} (allowed +{allowed:g})"
    mt, mv = statistics.fmean(t), statistics.fmean(v)
    var = sum((x - mt) ** 2 for x in t)
    if var > 0:
        slope = sum((x - mt) * (y - mv) for x, y in zip(t, v, strict=True)) / var
        rise = slope * (t[-1] - t[0])
        if rise > allowed:
            return f"least-squares rise {rise:g} over {t[-1] - t[0]:.0f} s (allowed +{allowed:g})"
    return None
