"""Traces in the Chrome trace event format, which Perfetto (ui.perfetto.dev) and
``chrome://tracing`` open: ``{"traceEvents": [...], "displayTimeUnit": "ms"}``.

Mapping of ferrocsp's events (``Trace``'s JSON lines) onto it, one track per process (as
``ferrocsp trace`` draws lanes: processes sharing a name in one thread share a track; threads
that are no process get a track named after the thread):

- a process's life is a duration slice (``ph`` ``"B"`` at ``start``, ``"E"`` at ``end``, named
  after the process, ``args``: backend, status, error);
- a blocked channel operation is a slice nested in it, named ``blocked <op> <channel>``,
  from ``block`` to the communication that completed it (or the process's end);
- reads, writes, poison and retire are instant events (``ph`` ``"i"``, thread scope) named
  ``read <channel>`` and so on;
- a metadata event (``ph`` ``"M"``, ``thread_name``) names each track.

``ts`` is in microseconds since the trace started; ``pid`` is the traced OS process; ``tid``
numbers the tracks from 1 in order of first appearance. Every ``B`` has its ``E`` (slices
still open when the trace stopped end at its last event).
"""

from __future__ import annotations

from typing import Any

__all__ = ["to_chrome"]


def to_chrome(events: list[dict[str, Any]], pid: int = 0) -> dict[str, Any]:
    """The Chrome trace document of ``events`` (a trace's lines, header left out)."""
    out: list[dict[str, Any]] = []
    tracks: dict[tuple[str, Any], int] = {}
    # Per track, the open slices, innermost last: ("process" | "block", name).
    open_: dict[int, list[str]] = {}
    last_ts = 0.0

    def track(e: dict[str, Any]) -> int:
        proc = e.get("proc")
        name = proc if proc is not None else f"[thread {e.get('thread')}]"
        key = (name, e.get("tid"))
        tid = tracks.get(key)
        if tid is None:
            tid = tracks[key] = len(tracks) + 1
            open_[tid] = []
            out.append(
                {"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "ts": 0,
                 "args": {"name": name}}
            )  # fmt: skip
        return tid

    def close(tid: int, ts: float, kind: str, args: dict[str, Any] | None = None) -> None:
        """Ends the open slices of ``tid`` down to and including the innermost ``kind``."""
        stack = open_[tid]
        if kind not in stack:
            return
        while stack:
            top = stack.pop()
            rec: dict[str, Any] = {"ph": "E", "pid": pid, "tid": tid, "ts": ts}
            if top == kind and args:
                rec["args"] = args
            out.append(rec)
            if top == kind:
                return

    for e in events:
        ev = e.get("ev")
        ts = round(float(e["t"]) * 1e6, 3)
        last_ts = max(last_ts, ts)
        tid = track(e)
        chan = e.get("chan", "")
        op = e.get("op")
        if ev == "start":
            out.append(
                {"ph": "B", "name": e.get("proc") or "process", "cat": "process", "pid": pid,
                 "tid": tid, "ts": ts, "args": {"backend": e.get("backend")}}
            )  # fmt: skip
            open_[tid].append("process")
        elif ev == "end":
            close(tid, ts, "block")
            args = {"status": e.get("status")}
            if e.get("error"):
                args["error"] = e["error"]
            close(tid, ts, "process", args)
        elif ev == "block":
            close(tid, ts, "block")  # one wait at a time per track
            out.append(
                {"ph": "B", "name": f"blocked {op} {chan}", "cat": "block", "pid": pid,
                 "tid": tid, "ts": ts, "args": {"op": op, "channel": chan}}
            )  # fmt: skip
            open_[tid].append("block")
        else:
            if ev in ("read", "write"):
                close(tid, ts, "block")
            args = {"channel": chan}
            if op:
                args["op"] = op
            out.append(
                {"ph": "i", "s": "t", "name": f"{ev} {chan}", "cat": "channel", "pid": pid,
                 "tid": tid, "ts": ts, "args": args}
            )  # fmt: skip
    for tid, stack in open_.items():  # still open when the trace stopped
        while stack:
            stack.pop()
            out.append({"ph": "E", "pid": pid, "tid": tid, "ts": last_ts})
    return {"traceEvents": out, "displayTimeUnit": "ms", "otherData": {"source": "ferrocsp"}}
