"""``ferrocsp trace FILE -o timeline.png``: a per-process timeline of a trace (matplotlib).

One lane per process (processes sharing a name in one thread share a lane; threads that are
no process get a lane named after the thread): a thin bar from start to end, red spans while
the process was blocked in a channel operation (from ``block`` to its completion or the
process's end), ticks for completed reads (below the lane) and writes (above), a black cross
where it poisoned a channel.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Lane", "lanes", "load", "plot"]


@dataclass
class Lane:
    """What one process did, in seconds since the trace started."""

    name: str
    start: float | None = None
    end: float | None = None
    blocked: list[tuple[float, float]] = field(default_factory=list)
    reads: list[float] = field(default_factory=list)
    writes: list[float] = field(default_factory=list)
    poisons: list[float] = field(default_factory=list)
    first: float = 0.0
    last: float = 0.0
    _block_at: float | None = None


def load(path: Path) -> list[dict[str, Any]]:
    """The events of a trace file (the header line left out)."""
    events: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{n}: not a JSON line ({exc.msg})") from None
            if not isinstance(rec, dict) or "ev" not in rec or "t" not in rec:
                raise ValueError(f"{path}:{n}: not a ferrocsp trace event")
            if rec["ev"] != "trace":
                events.append(rec)
    return events


def lanes(events: list[dict[str, Any]]) -> list[Lane]:
    """One ``Lane`` per process (or bare thread), in order of first appearance."""
    out: dict[tuple[str, Any], Lane] = {}
    for e in events:
        proc = e.get("proc")
        name = proc if proc is not None else f"[thread {e.get('thread')}]"
        key = (name, e.get("tid"))
        t = float(e["t"])
        lane = out.get(key)
        if lane is None:
            lane = out[key] = Lane(name, first=t)
        lane.last = t
        ev = e["ev"]
        if ev == "start":
            lane.start = t
        elif ev == "block":
            lane._block_at = t
        elif ev in ("read", "write", "end") and lane._block_at is not None:
            lane.blocked.append((lane._block_at, t))
            lane._block_at = None
        if ev == "read":
            lane.reads.append(t)
        elif ev == "write":
            lane.writes.append(t)
        elif ev == "poison":
            lane.poisons.append(t)
        elif ev == "end":
            lane.end = t
    end = max((float(e["t"]) for e in events), default=0.0)
    for lane in out.values():
        if lane._block_at is not None:  # still blocked when the trace stopped
            lane.blocked.append((lane._block_at, end))
            lane._block_at = None
    return list(out.values())


def plot(path: Path, out: Path) -> int:
    """Draws the timeline of trace ``path`` into image ``out``; returns the number of lanes.
    A file that is not a trace is said so first, with or without matplotlib."""
    ls = lanes(load(path))
    if not ls:
        raise ValueError(f"{path}: the trace holds no events")
    try:
        import matplotlib
    except ImportError:
        raise OSError("plotting needs matplotlib: pip install 'ferrocsp[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 1.0 + 0.45 * len(ls)))
    for y, lane in enumerate(ls):
        a = lane.start if lane.start is not None else lane.first
        b = lane.end if lane.end is not None else lane.last
        ax.broken_barh([(a, max(b - a, 1e-9))], (y - 0.08, 0.16), color="#9ecae1")
        spans = [(s, max(e - s, 1e-9)) for s, e in lane.blocked]
        ax.broken_barh(spans, (y - 0.25, 0.5), color="#de2d26", alpha=0.6)
        ax.plot(lane.reads, [y - 0.32] * len(lane.reads), "|", color="#3182bd", ms=6)
        ax.plot(lane.writes, [y + 0.32] * len(lane.writes), "|", color="#31a354", ms=6)
        ax.plot(lane.poisons, [y] * len(lane.poisons), "x", color="black", ms=7)
    ax.set_yticks(range(len(ls)), [lane.name for lane in ls])
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the trace started")
    ax.set_title(f"{path.name}: red = blocked, ticks = reads (below) / writes (above)")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return len(ls)
