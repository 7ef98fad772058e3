"""The thread backend: each process is one OS (daemon) thread.

Invariant: ``ThreadTask.wait`` returns True only after the thread has fully ended, so a joined
network leaves no thread behind.
"""

from __future__ import annotations

import threading
from typing import Any

from .._process import Outcome, Process, execute

__all__ = ["ThreadTask"]


class ThreadTask:
    """One process running on its own OS thread."""

    __slots__ = ("_done", "_proc", "outcome", "thread")

    def __init__(self, proc: Process[Any]) -> None:
        self._proc = proc
        self._done = threading.Event()
        self.outcome: Outcome | None = None
        # Daemon: a process stuck in pure Python code must not keep the interpreter alive after
        # Ctrl-C; blocked channel operations are woken by poison instead.
        self.thread = threading.Thread(target=self._main, name=proc.name, daemon=True)
        self.thread.start()

    def _main(self) -> None:
        try:
            self.outcome = execute(self._proc)
        finally:
            self._done.set()

    def wait(self, timeout: float | None) -> bool:
        """Waits for the process to end (interruptible by Ctrl-C in the main thread)."""
        if not self._done.wait(timeout):
            return False
        self.thread.join()
        return True

    @property
    def alive(self) -> bool:
        return not self._done.is_set()
