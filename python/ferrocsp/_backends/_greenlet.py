"""The greenlet backend: plain-function processes as greenlets on one scheduler thread.

Invariants:
- The greenlet processes of one network run on one native scheduler (``_native._Scheduler``)
  in one dedicated daemon thread (``GreenletHost``), from ``Par.run`` as from ``Par.start`` and
  ``Spawn``; ``wait`` returns True only after that thread has ended, so a joined network leaves
  nothing behind. ``join`` waits on the host as on any thread, so Ctrl-C poisons and joins as
  for threads.
- Every process runs through ``_process.execute``, so shutdown rules match the threads'.
- A blocking channel operation in a process greenlet switches to the other greenlets; a
  blocking call that is not a channel operation blocks the whole scheduler unless wrapped in
  ``ferrocsp.io``.
"""

from __future__ import annotations

from typing import Any

from .._native import _Scheduler
from .._process import Process, execute
from ._hosted import ThreadHost

__all__ = ["GreenletHost"]


class GreenletHost(ThreadHost):
    """Runs plain-function processes as greenlets on one scheduler in its own daemon thread."""

    what = "the greenlet scheduler"
    __slots__ = ()

    def __init__(self, procs: list[Process[Any]], name: str) -> None:
        super().__init__(procs, f"{name} [greenlet]")

    def _run(self) -> None:
        sched = _Scheduler()
        for i in range(len(self._procs)):
            sched.spawn(_one, self, i)
        sched.run()


def _one(host: GreenletHost, i: int) -> None:
    """Process ``i`` of ``host``: a plain function, not a bound method, so that the greenlet
    starts it without a method call's C frame, which a blocked process would otherwise save
    and restore at every switch."""
    host.outcomes[i] = execute(host._procs[i])
