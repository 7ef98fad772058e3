"""Ctrl-C delivered to a thread other than the main one still interrupts ``Par.run()``.

The kernel gives a process-directed SIGINT to any thread that does not block it: to the main
thread when it can take it, but also to a process's thread that is running at that instant
(the soak, docs/soak.md, lost one Ctrl-C in three sent just as a busy asyncio network started).
Python's C handler then only sets a flag; a main thread asleep in a lock wait without a
timeout never looks at it, and the network ran on forever. Each case here makes a process
send SIGINT to its *own* thread (``pthread_kill``) once the main thread waits in ``join``: the
interpreter must still exit by ``KeyboardInterrupt``, promptly, on every backend that hosts
processes on threads of the parent.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals"),
]

SCRIPT = textwrap.dedent(
    """
    import asyncio, signal, sys, threading, time
    import ferrocsp as csp

    signal.signal(signal.SIGINT, signal.default_int_handler)

    def main_waits():
        frame = sys._current_frames().get(threading.main_thread().ident)
        while frame is not None:
            if frame.f_code.co_name == "_wait_until":
                return True
            frame = frame.f_back
        return False

    def interrupt_me():
        deadline = time.monotonic() + 20
        while not main_waits() and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.1)  # well inside the lock wait
        signal.pthread_kill(threading.get_ident(), signal.SIGINT)

    # Then busy, never blocked for good (so no deadlock ends the wait instead), until poison.
    def plain(ch):
        interrupt_me()
        while True:
            try:
                ch.read(timeout=0.05)
            except TimeoutError:
                pass

    async def coro(ch):
        interrupt_me()
        while True:
            try:
                await asyncio.wait_for(ch.aread(), 0.05)
            except TimeoutError:
                pass

    ch = csp.Channel()  # an argument: the Ctrl-C's poison ends the process
    backend = sys.argv[1]
    if backend == "asyncio":
        proc = csp.process(coro)(ch)
    else:
        proc = csp.process(backend=backend)(plain)(ch)
    csp.Par(proc).run()
    """
)


@pytest.mark.parametrize("backend", ["thread", "greenlet", "asyncio"])
def test_ctrl_c_on_another_thread_interrupts_run(backend: str, tmp_path: Path) -> None:
    script = tmp_path / "interrupt.py"
    script.write_text(SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), backend], capture_output=True, text=True, timeout=20
    )
    assert proc.returncode == -signal.SIGINT, (proc.returncode, proc.stderr[-2000:])
    assert "KeyboardInterrupt" in proc.stderr
