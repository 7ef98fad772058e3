"""Helpers shared by the test modules (imported as a plain module from tests/)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

#: How long a helper waits for another thread before declaring the test failed.
WAIT = 10.0

#: CI runs scripts/test.sh as root, which installs every system package the tests use.
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need_tool(exe: str, how: str, probe: str = "--version") -> str:
    """The path of the system program ``exe`` that a test needs (Graphviz's ``dot``,
    ``nats-server``); it counts as there when ``exe probe`` runs and succeeds. When it is
    missing the test is skipped with ``how`` to install it, except in CI (``CI=true``),
    where scripts/setup.sh installs it and its absence fails."""
    import shutil

    path = shutil.which(exe)
    if path is not None:
        try:
            ok = subprocess.run([path, probe], capture_output=True, timeout=30).returncode == 0
        except (OSError, subprocess.SubprocessError):
            ok = False
        if ok:
            return path
    msg = f"{exe} not installed: {how}"
    if IN_CI:
        pytest.fail(f"{msg} (CI=true: scripts/setup.sh should have installed it)")
    pytest.skip(msg)


def wait_until(predicate: Callable[[], bool], timeout: float = WAIT, what: str = "") -> None:
    """Spin (with short sleeps) until ``predicate()`` is true; fail after ``timeout`` s.

    Used to wait until another thread is *observably* blocked (e.g.
    ``ch.stats().readers_waiting == 1``), never as a blind sleep.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {timeout} s: {what}")
        time.sleep(0.001)


class Background:
    """Run ``fn(*args, **kwargs)`` on a daemon thread and keep its outcome.

    ``join()`` returns the result or re-raises the exception in the test's thread, so that a
    failure in the helper thread fails the test (instead of being lost).
    """

    def __init__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.result: Any = None
        self.exc: BaseException | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(
            target=self._run, args=(fn, args, kwargs), daemon=True, name=f"bg-{fn.__name__}"
        )
        self.thread.start()

    def _run(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        try:
            self.result = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            self.exc = exc
        finally:
            self.done.set()

    def join(self, timeout: float = WAIT) -> Any:
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise AssertionError(f"background thread {self.thread.name} did not finish")
        if self.exc is not None:
            raise self.exc
        return self.result

    def exception(self, timeout: float = WAIT) -> BaseException | None:
        """Wait for the thread and return the exception it raised (None if it returned)."""
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise AssertionError(f"background thread {self.thread.name} did not finish")
        return self.exc


def all_exceptions(exc: BaseException) -> list[BaseException]:
    """Flatten an exception (group) into the list of its leaf exceptions."""
    if isinstance(exc, BaseExceptionGroup):
        out: list[BaseException] = []
        for sub in exc.exceptions:
            out.extend(all_exceptions(sub))
        return out
    return [exc]


def notes(exc: BaseException) -> str:
    """The notes attached to ``exc``, joined by newlines, except the child's traceback that
    an exception from an OS process carries as a note (docs/design.md, OS processes)."""
    found = getattr(exc, "__notes__", ())
    return "\n".join(n for n in found if not n.startswith("traceback in OS process "))


def run_example(name: str, *args: str, quiet: bool = False) -> str:
    """Runs ``examples/NAME`` with ``args``; asserts exit 0 (and, if ``quiet``, an empty
    stderr); returns its stdout."""
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"{name} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    if quiet:
        assert proc.stderr == "", proc.stderr
    return proc.stdout


#: Source for a child interpreter (``interrupt_child``): ``announce_when_joining()`` prints
#: "ready" once the main thread is inside a handle's join wait, so the SIGINT that follows lands
#: there and not in the statements around it (which would test something else).
ANNOUNCE_WHEN_JOINING = """
import sys as _sys, threading as _threading, time as _time

def announce_when_joining():
    main = _threading.main_thread().ident

    def joining():
        frame = _sys._current_frames().get(main)
        while frame is not None:
            if frame.f_code.co_name == "_wait_until":
                return True
            frame = frame.f_back
        return False

    def watch():
        deadline = _time.monotonic() + 20
        while not joining():
            if _time.monotonic() > deadline:
                print("never joined", flush=True)
                return
            _time.sleep(0.005)
        print("ready", flush=True)

    _threading.Thread(target=watch, name="watcher", daemon=True).start()
"""


#: Puts SIGINT back to Python's default in a child: a runner started in the background (`cmd &`
#: in a shell without job control, nohup) passes SIGINT on ignored, and Python then never
#: raises KeyboardInterrupt; these tests are about what Ctrl-C does at a terminal.
CTRL_C_AS_AT_A_TERMINAL = "import signal as _s; _s.signal(_s.SIGINT, _s.default_int_handler)\n"


def interrupt_child(code: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Runs ``python -c code``, waits until it prints "ready" (it does so once blocked), sends
    SIGINT, and returns (returncode, stdout, stderr); fails if it does not exit within 10 s."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CTRL_C_AS_AT_A_TERMINAL + code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the child is blocked, or it died
        if line.strip() != "ready":
            out, err = proc.communicate(timeout=20)
            pytest.fail(f"child not ready: {line!r}\nstdout: {out}\nstderr: {err}")
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"child did not exit within 10 s of SIGINT\nstdout: {out}\nstderr: {err}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err
