"""A normal interpreter exit while other threads are still in and out of channel operations.

CPython ends a daemon thread that takes the GIL back once the interpreter finalizes by a forced
unwind of its stack; through the bindings' frames that unwind aborted the whole process
("FATAL: exception not rethrown", SIGABRT) after the program itself had ended. Threads doing
timed operations in a loop hit it at almost every exit once they contended for the GIL
(``crates/ferrocsp-py/src/detach.rs``). Each case runs a fresh interpreter many times, since
one exit is one roll of the dice.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

TESTS = str(Path(__file__).parent)

#: Daemon workers looping on short timed reads, so that at any moment some are waiting for the
#: GIL to come back from the bindings; the main thread ends the program while they do.
SPINNERS = textwrap.dedent(
    """
    import sys, threading, time
    sys.path.insert(0, {tests!r})
    import ferrocsp as csp
    from ferrocsp import _shm

    how = {how!r}
    chans = [csp.Channel(name=f"quiet-{{i}}") for i in range(6)]
    if how == "shared":
        for ch in chans:
            _shm.share(ch)

    def spin(ch):
        while True:
            try:
                ch.read(timeout=0.0002)
            except TimeoutError:
                pass

    @csp.process
    def spin_process(ch):
        spin(ch)

    @csp.process
    async def spin_async(ch):
        while True:
            try:
                await ch.aread(timeout=0.0002)
            except TimeoutError:
                pass

    def network(backend, proc):
        csp.Par(*[proc(ch) for ch in chans[:3]], backend=backend).run()

    if how in ("thread", "shared"):
        workers = [threading.Thread(target=spin, args=(ch,), daemon=True) for ch in chans]
    elif how == "coroutine":
        workers = [threading.Thread(target=network, args=("coroutine", spin_async), daemon=True)]
    else:
        workers = [threading.Thread(target=network, args=(how, spin_process), daemon=True)]
    for w in workers:
        w.start()
    time.sleep(0.1)
    print("ending", flush=True)
    """
)


def run_child(code: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "FERROCSP_DEADLOCK": "off"},
        check=False,
    )


@pytest.mark.parametrize("how", ["thread", "shared", "greenlet", "coroutine"])
def test_exit_while_daemon_threads_keep_operating_never_aborts(how: str) -> None:
    code = SPINNERS.format(tests=TESTS, how=how)
    for attempt in range(12):
        proc = run_child(code)
        detail = f"run {attempt}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        assert proc.returncode == 0, detail
        assert proc.stdout == "ending\n", detail
        assert "FATAL" not in proc.stderr, detail


#: An exit handler registered before ferrocsp was imported runs after ferrocsp's last one, and
#: may wait for a worker that is still doing channel operations: the worker must come back
#: (after ``detach.rs``'s bounded ``SIT_OUT``), never hang the exit.
JOINED_AT_EXIT = textwrap.dedent(
    """
    import atexit, threading

    stop = threading.Event()
    done = []

    def stop_worker():
        stop.set()
        worker.join(20)
        print("joined" if not worker.is_alive() else "still running", flush=True)

    atexit.register(stop_worker)

    import ferrocsp as csp

    ch = csp.Channel(name="quiet")

    def work():
        while not stop.is_set():
            try:
                ch.read(timeout=0.01)
            except TimeoutError:
                pass

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    """
)


def test_an_earlier_exit_handler_can_join_a_worker_doing_channel_operations() -> None:
    proc = run_child(JOINED_AT_EXIT)
    detail = f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    assert proc.returncode == 0, detail
    assert proc.stdout == "joined\n", detail
