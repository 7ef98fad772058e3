"""The thread backend: each process is one OS (daemon) thread.

Invariant: ``ThreadTask.wait`` returns True only after the thread has fully ended, so a joined
network leaves no thread behind.
"""

from __future__ import annotations

from typing import Any

from .._process import Outcome, Process, execute
from ._hosted import ThreadHost

__all__ = ["ThreadTask"]


class ThreadTask(ThreadHost):
    """One process running on its own OS thread."""

    __slots__ = ()

    def __init__(self, proc: Process[Any]) -> None:
        super().__init__([proc], proc.name)

    def _run(self) -> None:
        self.outcomes[0] = execute(self._procs[0])

    @property
    def outcome(self) -> Outcome | None:
        return self.outcomes[0]
