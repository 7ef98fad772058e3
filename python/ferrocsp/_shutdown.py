"""How a process's end spreads through the network (poison and retire propagation).

Invariants:
- The channels and ends of a process are exactly those among its arguments: positional and
  keyword arguments, and those directly inside list, tuple or dict arguments (dict values).
- Poisoning and retiring are idempotent, so propagating twice (or from two processes) is safe.
- Networked channels propagate like the others: a process that fails or ends by poison
  poisons them for every participant on every machine, as it would a local peer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from ._native import Channel, Reader, Writer

__all__ = ["channel_args", "poison_all", "retire_ends"]

Endpoint = Channel | Reader | Writer
_ENDPOINT = (Channel, Reader, Writer)


def _direct(values: Iterable[Any]) -> Iterator[Endpoint]:
    for v in values:
        if isinstance(v, _ENDPOINT):
            yield v
        elif isinstance(v, list | tuple):
            yield from (x for x in v if isinstance(x, _ENDPOINT))
        elif isinstance(v, dict):
            yield from (x for x in v.values() if isinstance(x, _ENDPOINT))


def channel_args(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> list[Endpoint]:
    """The channels and ends a process was given, in argument order, without duplicates."""
    seen: set[int] = set()
    out: list[Endpoint] = []
    for e in _direct((*args, *kwargs.values())):
        if id(e) not in seen:
            seen.add(id(e))
            out.append(e)
    return out


def poison_all(endpoints: Iterable[Endpoint]) -> None:
    """Poison every channel (through ends too). A networked channel whose connection is
    closed or lost cannot be poisoned any more; nothing here can wait on it, so it is
    skipped (the others are still poisoned)."""
    for e in endpoints:
        with contextlib.suppress(ConnectionError):
            e.poison()


def retire_ends(endpoints: Iterable[Endpoint]) -> None:
    """Retire every Reader/Writer end; plain channels are left alone (they have no end)."""
    for e in endpoints:
        if isinstance(e, Reader | Writer):
            e.retire()
