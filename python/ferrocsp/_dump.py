"""``ferrocsp.dump()``: the live network as text, and the SIGQUIT handler that writes it.

Invariants:
- A dump only reads: it never blocks on a channel, never waits for a process, and works while
  every process is blocked (which is when it is wanted).
- Process states come from the native participant registry (the one deadlock detection uses)
  when the extension has it; a process it does not list is running (or finished, once its
  outcome is known).
- The other OS processes of the network (``backend="os"``) are listed from the participant
  table in shared memory, as each last described itself there (a child writes its
  participants when one of its shared waits has lasted a moment, and when it publishes that
  all of them wait forever): best effort, never a reason for a dump to fail.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from types import FrameType
from typing import IO, Any

from . import _native
from ._graph import NetSnap, ProcSnap, live

__all__ = ["dump", "install_sigquit", "render"]


def _participants() -> list[dict[str, Any]]:
    get = getattr(_native, "_participants", None)
    if get is None:
        return []
    try:
        return list(get())
    except Exception:  # noqa: BLE001 - a dump must never fail because of the registry
        return []


def _waits(p: dict[str, Any]) -> str:
    waits = [f"{chan!r} {op}" for chan, op in p.get("waits", [])]
    if p.get("alt"):
        text = "alt on " + ", ".join(waits) if waits else "alt"
    else:
        text = " and ".join(waits) if waits else "a channel"
    return text + (" (with a timeout)" if p.get("timeout") else "")


def _state(p: dict[str, Any] | None) -> str:
    if p is None:
        return "running"
    since = float(p.get("since", 0.0))
    state = p.get("state", "running")
    if state == "blocked":
        return f"blocked on {_waits(p)} for {since:.1f} s"
    if state == "blocked (shared)":
        return (
            f"blocked on {_waits(p)} (shared with OS processes: not seen by deadlock "
            f"detection) for {since:.1f} s"
        )
    if state == "blocked (shared, watched)":
        return f"blocked on {_waits(p)} (shared with OS processes) for {since:.1f} s"
    if state == "blocked (networked)":
        return (
            f"blocked on {_waits(p)} (networked: not seen by deadlock detection) for {since:.1f} s"
        )
    if state == "joining":
        return f"joining its processes for {since:.1f} s"
    return str(state)


def _os_processes() -> list[dict[str, Any]]:
    get = getattr(_native, "_xtable_slots", None)
    if get is None:
        return []
    try:
        return list(get())
    except Exception:  # noqa: BLE001 - a dump must never fail because of the table
        return []


def _os_lines() -> Iterator[str]:
    slots = _os_processes()
    if not slots:
        return
    yield "other OS processes of this network (participant table):"
    for s in slots:
        pid = s.get("pid")
        what = "every participant waits forever" if s.get("published") else "not all waiting"
        yield f"  pid {pid}: {what}"
        for p in s.get("participants", []):
            yield f"  pid {pid} {p.get('name')!r}  {_state(p)}"


def _finished(task: Any) -> bool:
    return task is not None and (getattr(task, "outcome", None) is not None or not task.alive)


def _proc_state(proc: ProcSnap, by_name: dict[str, list[dict[str, Any]]]) -> str:
    if _finished(proc.task):
        out = proc.task.outcome
        failed = out is not None and out.error is not None
        return f"finished (failed: {type(out.error).__name__})" if failed else "finished"
    matches = by_name.get(proc.name)
    if not matches:
        return _state(None)
    # A coroutine process's operation on a shared or networked channel runs on a task or
    # worker of its own that carries its name (``_io._offload``) while it shows as joining:
    # the blocked one says what the process waits for.
    i = next((i for i, p in enumerate(matches) if str(p.get("state")).startswith("blocked")), 0)
    return _state(matches.pop(i))


def _stats(ch: Any) -> str:
    # A networked channel's counts come from its server and a survey of its connections
    # (docs/net.md): a dump waits for them, and says so if they cannot be had.
    net = "networked, " if getattr(ch, "connection", None) is not None else ""
    try:
        s = ch.stats()
    except Exception as exc:  # noqa: BLE001 - a dump must never fail because of one channel
        return f"{net}counts unavailable ({type(exc).__name__}: {exc})"
    kind = net + (f"buffered {s.buffered}/{s.capacity}" if s.capacity else "rendezvous")
    flags = "".join(f", {f}" for f in ("poisoned", "retired") if getattr(s, f))
    return (
        f"{kind}, readers waiting {s.readers_waiting}, writers waiting {s.writers_waiting}, "
        f"reader ends {s.reader_ends}, writer ends {s.writer_ends}{flags}"
    )


_MODE = {"w": "writes", "r": "reads", "c": "uses"}


def _network(net: NetSnap, by_name: dict[str, list[dict[str, Any]]], pad: str) -> Iterator[str]:
    procs = list(net.all_procs())
    n = len(procs)
    yield f"{pad}network {net.name}: {n} process{'es' if n != 1 else ''}"
    width = max((len(p.name) for p in procs), default=0)
    for p in procs:
        yield f"{pad}  process {p.name:<{width}}  {p.backend:<8}  {_proc_state(p, by_name)}"
    chans: dict[int, Any] = {}
    uses: dict[int, list[str]] = {}
    for p in procs:
        for ref, ch in zip(p.ends, p.channels, strict=False):
            chans.setdefault(ref.key, ch)
            uses.setdefault(ref.key, []).append(f"{p.name} {_MODE[ref.mode]}")
    for key, ch in chans.items():
        yield f"{pad}  channel {ch.name!r}: {', '.join(uses[key])}"
        yield f"{pad}    {_stats(ch)}"


def render() -> str:
    """The dump's text (see ``dump``)."""
    nets = live()
    parts = _participants()
    by_name: dict[str, list[dict[str, Any]]] = {}
    for p in parts:
        by_name.setdefault(str(p.get("name")), []).append(p)
    n = len(nets)
    lines = [
        f"ferrocsp dump (pid {os.getpid()}, monotonic {time.monotonic():.3f}): "
        f"{n} running network{'s' if n != 1 else ''}"
    ]
    for net in nets:
        lines.extend(_network(net, by_name, ""))
    # Participants that are no process of a running network: the main thread, other threads.
    rest = [p for ps in by_name.values() for p in ps]
    names = {pr.name for net in nets for pr in net.all_procs()}
    rest = [p for p in rest if str(p.get("name")) not in names]
    if rest:
        lines.append("other participants:")
        for p in rest:
            backend = p.get("backend", "thread")
            lines.append(f"  {p.get('name')}  {backend}  {_state(p)}")
    lines.extend(_os_lines())
    return "\n".join(lines) + "\n"


def dump(file: IO[str] | None = None) -> None:
    """Writes the live network as text to ``file`` (default: standard output).

    For each running network (``Par``, ``Spawn``; nested ones inside theirs): its processes
    with backend and state (``running``, ``blocked on 'jobs' write for 2.0 s``, ``blocked on
    alt on 'a' read, 'b' read``, ``joining its processes``, ``finished``), then its channels
    with what each process does with them (``producer writes``, ``consumer reads``,
    ``worker uses`` for a plain ``Channel``) and their stats (``Channel.stats()``). Threads
    blocked on channels outside any network (the main thread, say) follow.

    Sending the process SIGQUIT (Ctrl-\\ in a terminal) writes the same dump to standard
    error, when ferrocsp installed that handler: at import, only if SIGQUIT still had its
    default action and ``ferrocsp`` was imported by the main thread (it then no longer quits
    the program with a core dump).
    """
    out = sys.stdout if file is None else file
    out.write(render())
    out.flush()


def _on_sigquit(_signum: int, _frame: FrameType | None) -> None:
    dump(sys.stderr)


def install_sigquit() -> bool:
    """Makes SIGQUIT write a dump to stderr, if SIGQUIT has its default action and this is the
    main thread; returns whether it did."""
    sigquit = getattr(signal, "SIGQUIT", None)
    if sigquit is None or threading.current_thread() is not threading.main_thread():
        return False
    try:
        if signal.getsignal(sigquit) is not signal.SIG_DFL:
            return False
        signal.signal(sigquit, _on_sigquit)
    except (ValueError, OSError):  # pragma: no cover - embedded interpreters
        return False
    return True
