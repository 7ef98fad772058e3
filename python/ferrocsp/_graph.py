"""Networks as data: snapshots of running networks, and their DOT graph (``ferrocsp.graph``).

Invariants:
- A snapshot holds names, channel identities (the engine's channel id, ``hash(channel)``) and
  directions only: recording a network never keeps its channels, ends or processes alive (an
  end kept alive would never retire by being dropped).
- A nested ``Par``/``Seq`` (a process of another network) is expanded into its processes, so
  each process appears once, not also as the composite that runs it; the nested network's own
  registration when it starts is then skipped.
- DOT drawing rule for one channel: if every process holding it holds a ``Writer`` or a
  ``Reader`` end, with at least one of each and not several of both, it is drawn as edges from
  each writer to each reader; if exactly two processes hold it and one of them holds a plain
  ``Channel`` (direction unknown), one edge between them, directed only when the other holds
  an end, else undirected (``dir=none``); otherwise (several writers and several readers, no
  reader or no writer among the processes, or plain channels among more than two holders) the
  channel is a node of its own, with edges from writers, to readers, and undirected ones to
  the holders of the plain channel. Edges always carry the channel's name.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ._native import Channel, Reader, Writer
from ._process import Process

__all__ = ["ChanRef", "NetSnap", "ProcSnap", "graph", "live", "record", "snapshot", "to_dot"]

#: How a process holds a channel: "w" through a Writer, "r" through a Reader, "c" the Channel.
Mode = str


@dataclass(frozen=True, slots=True)
class ChanRef:
    """One channel as a process holds it."""

    key: int  # the engine's channel id (hash of the Channel)
    name: str
    capacity: int
    mode: Mode


@dataclass(slots=True)
class ProcSnap:
    """One process of a network: its name, backend and the channels it holds."""

    name: str
    backend: str
    ends: list[ChanRef]
    task: Any = None  # the live task (dump only; None in recorded snapshots)
    channels: list[Channel] = field(default_factory=list)  # live only, for stats


@dataclass(slots=True)
class NetSnap:
    """One network (a ``Par``/``Spawn`` handle), nested networks flattened into clusters."""

    name: str
    procs: list[ProcSnap]
    children: list[NetSnap] = field(default_factory=list)

    def all_procs(self) -> Iterator[ProcSnap]:
        yield from self.procs
        for c in self.children:
            yield from c.all_procs()


def _ref(e: Channel | Reader | Writer) -> tuple[ChanRef, Channel]:
    if isinstance(e, Writer):
        ch, mode = e.channel, "w"
    elif isinstance(e, Reader):
        ch, mode = e.channel, "r"
    else:
        ch, mode = e, "c"
    return ChanRef(hash(ch), ch.name, ch.capacity, mode), ch


def _composite(p: Process[Any]) -> Any:
    """The Par/Seq a process runs when it is a nested composition, else None."""
    from ._par import Par, Seq

    owner = getattr(p.fn, "__self__", None)
    return owner if isinstance(owner, Par | Seq) else None


def _backend_name(task: Any) -> str:
    from ._backends._asyncio import LoopHost, LoopTask
    from ._backends._coroutine import CoroutineHost
    from ._backends._greenlet import GreenletHost
    from ._backends._hosted import HostedTask

    if isinstance(task, LoopTask):
        return "asyncio"
    if isinstance(task, HostedTask):
        host = task._host
        if isinstance(host, GreenletHost):
            return "greenlet"
        if isinstance(host, LoopHost):
            return "asyncio"
        if isinstance(host, CoroutineHost):
            return "coroutine"
    return "thread"


def _proc(p: Process[Any], backend: str, task: Any, live: bool) -> ProcSnap:
    ends: list[ChanRef] = []
    chans: list[Channel] = []
    for e in p.endpoints():
        ref, ch = _ref(e)
        ends.append(ref)
        if live:
            chans.append(ch)
    return ProcSnap(p.name, backend, ends, task if live else None, chans)


def _expand(
    name: str,
    procs: list[Process[Any]],
    backends: list[str],
    tasks: list[Any],
    live: bool,
    expanded: list[object],
) -> NetSnap:
    net = NetSnap(name, [])
    for p, backend, task in zip(procs, backends, tasks, strict=True):
        owner = _composite(p)
        if owner is None:
            net.procs.append(_proc(p, backend, task, live))
            continue
        expanded.append(owner)
        inner_backend = "thread" if owner.__class__.__name__ == "Seq" else backend
        inner_backend = getattr(owner, "backend", None) or inner_backend
        n = len(owner.processes)
        net.children.append(
            _expand(owner.name, owner.processes, [inner_backend] * n, [None] * n, live, expanded)
        )
    return net


def snapshot(handles: Iterable[Any], *, live: bool = True) -> list[NetSnap]:
    """Snapshots of ``handles`` (``Handle`` objects); nested networks appear once, inside the
    network that runs them."""
    hs = list(handles)
    expanded: list[object] = []
    nets = [
        (
            h,
            _expand(
                h.name,
                h._processes,
                [_backend_name(t) for t in h._tasks],
                list(h._tasks),
                live,
                expanded,
            ),
        )
        for h in hs
    ]
    inner = {id(o.processes) for o in expanded}  # type: ignore[attr-defined]
    return [n for h, n in nets if id(h._processes) not in inner]


def live() -> list[NetSnap]:
    """Snapshots of every network running now, oldest first."""
    from ._par import _running, _running_lock

    # Bounded: a SIGQUIT dump runs in the main thread, which may hold the lock right now.
    locked = _running_lock.acquire(timeout=0.5)
    try:
        for _ in range(10):
            try:
                handles = [h for h in list(_running) if h.alive]
                break
            except RuntimeError:  # unlocked, and the set changed while copying it
                continue
        else:
            handles = []
    finally:
        if locked:
            _running_lock.release()
    handles.sort(key=lambda h: h.name)
    return snapshot(handles)


# --- recording (``ferrocsp graph``) -------------------------------------------------------

_recorded: list[NetSnap] = []
_expanded: weakref.WeakSet[Any] = weakref.WeakSet()
_record_lock = threading.Lock()


def _on_start(handle: Any) -> None:
    """Called by ``_par`` for every network started while recording."""
    with _record_lock:
        for owner in list(_expanded):
            if owner.processes is handle._processes:
                return  # a nested Par drawn inside the network that runs it
        expanded: list[object] = []
        net = _expand(
            handle.name,
            handle._processes,
            [_backend_name(t) for t in handle._tasks],
            [None] * len(handle._tasks),
            False,
            expanded,
        )
        for o in expanded:
            _expanded.add(o)
        _recorded.append(net)


class record:  # noqa: N801 - used like a function
    """``with record():`` snapshots every network started inside; ``.networks`` lists them."""

    def __enter__(self) -> record:
        from . import _par

        with _record_lock:
            _recorded.clear()
        _par._on_start = _on_start
        return self

    @property
    def networks(self) -> list[NetSnap]:
        with _record_lock:
            return list(_recorded)

    def __exit__(self, *_exc: object) -> None:
        from . import _par

        _par._on_start = None


# --- DOT ------------------------------------------------------------------------------------


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(nets: list[NetSnap], *, title: str = "ferrocsp") -> str:
    """The DOT text of ``nets``: processes as nodes (one cluster per network), channels as
    edges labelled with their names (see the module docs for the drawing rule)."""
    lines = [f"digraph {_q(title)} {{", "  rankdir=LR;", "  node [shape=box, style=rounded];"]
    ids: dict[int, str] = {}
    holders: dict[int, list[tuple[str, Mode]]] = {}
    names: dict[int, str] = {}
    counter = iter(range(1 << 62))

    def emit(net: NetSnap, depth: int) -> None:
        pad = "  " * depth
        cluster = next(counter)
        lines.append(f"{pad}subgraph cluster_{cluster} {{")
        lines.append(f"{pad}  label={_q(net.name)};")
        for p in net.procs:
            pid = f"p{len(ids)}"
            ids[id(p)] = pid
            lines.append(f"{pad}  {pid} [label={_q(p.name)}];")
            for ref in p.ends:
                names.setdefault(ref.key, ref.name)
                holders.setdefault(ref.key, []).append((pid, ref.mode))
        for c in net.children:
            emit(c, depth + 1)
        lines.append(f"{pad}}}")

    for net in nets:
        emit(net, 1)
    for n, (key, hs) in enumerate(holders.items()):
        label = _q(names[key])
        uniq = list(dict.fromkeys(hs))
        writers = [pid for pid, m in uniq if m == "w"]
        readers = [pid for pid, m in uniq if m == "r"]
        plain = [pid for pid, m in uniq if m == "c"]
        if not plain and writers and readers and (len(writers) == 1 or len(readers) == 1):
            for w in writers:
                for r in readers:
                    lines.append(f"  {w} -> {r} [label={label}];")
        elif plain and len(uniq) == 2:
            (a, ma), (b, mb) = uniq
            if ma == "r" or mb == "w":  # draw from the writing side
                a, b, ma, mb = b, a, mb, ma
            attrs = "" if ma == "w" or mb == "r" else ", dir=none"
            lines.append(f"  {a} -> {b} [label={label}{attrs}];")
        else:
            cid = f"c{n}"
            lines.append(f"  {cid} [label={label}, shape=ellipse, style=dashed];")
            lines.extend(f"  {w} -> {cid} [label={label}];" for w in writers)
            lines.extend(f"  {cid} -> {r} [label={label}];" for r in readers)
            lines.extend(f"  {c} -> {cid} [label={label}, dir=none];" for c in plain)
    lines.append("}")
    return "\n".join(lines) + "\n"


def graph(*, history: bool = False) -> str:
    """The network as a Graphviz DOT graph: processes are nodes (a cluster per ``Par`` or
    ``Spawn``), channels are edges from writer to reader labelled with the channel's name.

    With ``history=False``, the networks running now. With ``history=True``, every network
    started while recording: ``ferrocsp graph script.py`` records from the script's start.

    A process's direction on a channel comes from the end it was given: a ``Writer`` writes, a
    ``Reader`` reads. A plain ``Channel`` says nothing: a channel between two processes where
    one holds a plain ``Channel`` is an edge directed by the other's end (undirected,
    ``dir=none``, if both hold the plain channel); a channel shared more widely in ways that
    are not one writer to many readers or many writers to one reader is drawn as a dashed
    channel node. Render it with ``dot -Tsvg``.
    """
    nets = list(_recorded) if history else live()
    return to_dot(nets)
