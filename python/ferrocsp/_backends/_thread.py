"""The thread backend: each process is one OS (daemon) thread.

Invariant: ``ThreadTask.wait`` returns True only after the thread has fully ended, so a joined
network leaves no thread behind.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from .._process import Outcome, Process, execute

__all__ = ["ThreadTask"]


class ThreadTask:
    """One process running on its own OS thread."""

    __slots__ = ("_callbacks", "_done", "_lock", "_proc", "outcome", "thread")

    def __init__(self, proc: Process[Any]) -> None:
        self._proc = proc
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []
        self.outcome: Outcome | None = None
        # Daemon: a process stuck in pure Python code must not keep the interpreter alive after
        # Ctrl-C; blocked channel operations are woken by poison instead.
        self.thread = threading.Thread(target=self._main, name=proc.name, daemon=True)
        self.thread.start()

    def _main(self) -> None:
        try:
            self.outcome = execute(self._proc)
        finally:
            with self._lock:
                self._done.set()
                callbacks, self._callbacks = self._callbacks, []
            for cb in callbacks:
                cb()

    def add_done_callback(self, fn: Callable[[], None]) -> None:
        """Calls ``fn()`` (in the process's thread) when it ends; at once if it has ended."""
        with self._lock:
            if not self._done.is_set():
                self._callbacks.append(fn)
                return
        fn()

    def wait(self, timeout: float | None) -> bool:
        """Waits for the process to end (interruptible by Ctrl-C in the main thread)."""
        if not self._done.wait(timeout):
            return False
        self.thread.join()
        return True

    @property
    def alive(self) -> bool:
        return not self._done.is_set()
