"""Ctrl-C: a KeyboardInterrupt in the main thread ends blocked networks and the interpreter.

Each scenario runs in a fresh interpreter that prints "ready" once the network is observably
blocked (a helper thread watches ``ch.stats()``), then gets SIGINT. It must exit promptly with
KeyboardInterrupt and leave no Python threads behind. Scenarios with processes run once per
backend (thread, greenlet, asyncio), the process bodies written once with tests/_kit.py; a
network mixing all three, and the main thread's own blocked ``read``/``write`` (no backend
involved), run once.
"""

from __future__ import annotations

import signal
import sys
import textwrap
from pathlib import Path

import pytest

from _support import interrupt_child

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals"),
]

PRELUDE = textwrap.dedent(
    """
    import asyncio, signal, sys, threading, time
    sys.path.insert(0, {tests!r})
    import ferrocsp as csp
    from _kit import Kit

    signal.signal(signal.SIGINT, signal.default_int_handler)
    k = Kit({backend!r})

    async def read_once(k, ch):
        await k.read(ch)

    async def write_once(k, ch):
        await k.write(ch, 1)

    async def read_all(k, ch):
        async for _ in k.iter(ch):
            pass

    reader = k.process(read_once, name="reader")
    writer = k.process(write_once, name="writer")
    drain = k.process(read_all, name="drain")

    def main_in(name):
        # whether the main thread is inside a call of a function called `name`
        frame = sys._current_frames().get(threading.main_thread().ident)
        while frame is not None:
            if frame.f_code.co_name == name:
                return True
            frame = frame.f_back
        return False

    def announce_when(predicate, joining=False):
        # "ready" only once the main thread is past `t.start()` (which waits for the new
        # thread): a SIGINT sent while it is still in there would escape the scenario's try.
        started = threading.Event()

        def watch():
            deadline = time.monotonic() + 20
            while not (
                started.is_set() and predicate() and (not joining or main_in("_wait_until"))
            ):
                if time.monotonic() > deadline:
                    print("never ready", flush=True)
                    return
                time.sleep(0.005)
            print("ready", flush=True)
        t = threading.Thread(target=watch, name="watcher", daemon=True)
        t.start()
        started.set()
        return t

    def leftover_threads(watcher):
        # Every thread but the main one must have ended, except csp.io's pooled workers (a
        # nested greenlet Par joins through io()) and the kept host threads, which must all
        # be idle: each pool counts a worker idle just after it handed its result back, hence
        # the bounded wait.
        from ferrocsp import _io
        from ferrocsp._backends import _pool
        watcher.join(5)
        deadline = time.monotonic() + 5
        while True:
            others = [t for t in threading.enumerate() if t is not threading.main_thread()]
            io_workers = [t for t in others if t.name == "ferrocsp-io"]
            kept = set(_pool.idle_threads())
            rest = [t for t in others if t not in io_workers and t not in kept]
            if (len(io_workers) == _io._idle and not rest) or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        print("LEFTOVER", [t.name for t in rest], flush=True)
        print("BUSY-IO", len(io_workers) - _io._idle, flush=True)
    """
)

SCENARIOS = {
    "par": """
        a, b = csp.Channel(name="a"), csp.Channel(name="b")
        watcher = announce_when(
            lambda: a.stats().readers_waiting == 2 and b.stats().writers_waiting == 1,
            joining=True,
        )
        try:
            k.Par(reader(a), reader(a), writer(b)).run()
        finally:
            leftover_threads(watcher)
    """,
    "nested-par": """
        a = csp.Channel(name="a")
        watcher = announce_when(lambda: a.stats().readers_waiting == 3, joining=True)
        try:
            k.Par(k.Par(drain(a), drain(a)), drain(a)).run()
        finally:
            leftover_threads(watcher)
    """,
    "par-start-join": """
        a = csp.Channel(name="a")
        watcher = announce_when(lambda: a.stats().readers_waiting == 2, joining=True)
        h = k.Par(drain(a), drain(a)).start()
        try:
            h.join()
        finally:
            leftover_threads(watcher)
    """,
    "spawn-join": """
        ch = csp.Channel(name="spawned")
        h = k.Spawn(reader(ch))
        watcher = announce_when(lambda: ch.stats().readers_waiting == 1, joining=True)
        try:
            h.join()
        finally:
            leftover_threads(watcher)
    """,
    "seq": """
        ch = csp.Channel(name="in-seq")
        watcher = announce_when(lambda: ch.stats().readers_waiting == 1)
        try:
            csp.Seq(reader(ch)).run()
        finally:
            leftover_threads(watcher)
            assert ch.stats().poisoned, "the interrupted process did not poison its channel"
    """,
    "arun": """
        a, b = csp.Channel(name="a"), csp.Channel(name="b")
        watcher = announce_when(
            lambda: a.stats().readers_waiting == 2 and b.stats().writers_waiting == 1
        )
        try:
            asyncio.run(k.Par(reader(a), reader(a), writer(b)).arun())
        finally:
            leftover_threads(watcher)
    """,
}

ONCE = {
    "mixed-par": """
        a = csp.Channel(name="a")
        kits = [Kit(b) for b in ("thread", "greenlet", "asyncio")]
        procs = [kit.process(read_all, name=f"drain-{kit.backend}")(a) for kit in kits]
        outs = [csp.Channel(name=f"out-{kit.backend}") for kit in kits]
        procs += [kit.process(write_once)(out) for kit, out in zip(kits, outs)]
        watcher = announce_when(
            lambda: a.stats().readers_waiting == 3
            and all(out.stats().writers_waiting == 1 for out in outs),
            joining=True,
        )
        try:
            csp.Par(*procs).run()
        finally:
            leftover_threads(watcher)
    """,
    "during-start": """
        # SIGINT lands while Par is still starting: inside the greenlet host's Thread.start
        # (which waits for the new thread), after the asyncio host is running and before the
        # thread process is launched. The hosts already running must be wound down.
        a, b, c = (csp.Channel(name=n) for n in "abc")
        kits = {kit.backend: kit for kit in (Kit(b) for b in ("thread", "greenlet", "asyncio"))}
        procs = [kits["greenlet"].process(read_all, name="g")(a) for _ in range(2)]
        procs.append(kits["asyncio"].process(read_all, name="aio")(b))
        procs.append(kits["thread"].process(read_all, name="t")(c))
        start = threading.Thread.start

        def interrupted_start(self):
            global watcher
            start(self)
            if self.name.endswith("[greenlet]"):
                watcher = announce_when(
                    lambda: a.stats().readers_waiting == 2 and b.stats().readers_waiting == 1
                )
                while True:
                    time.sleep(0.01)  # where the SIGINT lands

        threading.Thread.start = interrupted_start
        try:
            csp.Par(*procs).run()
        finally:
            threading.Thread.start = start
            leftover_threads(watcher)
    """,
    "during-join-bookkeeping": """
        # SIGINT lands in join() before it waits (while it records the caller as joining):
        # the network must still be wound down.
        from ferrocsp import _par
        a = csp.Channel(name="a")
        procs = [k.process(read_all, name="r")(a) for _ in range(2)]
        joining = _par._joining

        def interrupted_joining(on):
            global watcher
            if on:
                watcher = announce_when(lambda: a.stats().readers_waiting == 2)
                while True:
                    time.sleep(0.01)  # where the SIGINT lands
            joining(on)

        _par._joining = interrupted_joining
        try:
            csp.Par(*procs).run()
        finally:
            _par._joining = joining
            leftover_threads(watcher)
    """,
    "plain-read": """
        ch = csp.Channel(name="main-blocked")
        watcher = announce_when(lambda: ch.stats().readers_waiting == 1)
        try:
            ch.read()
        finally:
            leftover_threads(watcher)
    """,
    "plain-write-buffered": """
        ch = csp.Channel(1, name="main-blocked")
        ch.write(0)
        watcher = announce_when(lambda: ch.stats().writers_waiting == 1)
        try:
            ch.write(1)
        finally:
            leftover_threads(watcher)
    """,
}

TESTS = str(Path(__file__).resolve().parent)


def _interrupt(scenario: str, backend: str) -> None:
    code = PRELUDE.format(tests=TESTS, backend=backend) + textwrap.dedent(scenario)
    returncode, out, err = interrupt_child(code, {"FERROCSP_DEADLOCK": "off"})
    # An uncaught KeyboardInterrupt ends the interpreter by SIGINT (-2); anything else (an
    # abort at exit, -6) is a failure.
    assert returncode == -signal.SIGINT, f"exit {returncode}\nstdout: {out}\nstderr: {err}"
    assert "KeyboardInterrupt" in err, err
    assert "LEFTOVER []" in out, f"threads left behind: {out}\nstderr: {err}"
    assert "BUSY-IO 0" in out, f"io() workers still busy: {out}\nstderr: {err}"
    assert "AssertionError" not in err, err


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_ctrl_c_exits_promptly(backend: str, scenario: str) -> None:
    _interrupt(SCENARIOS[scenario], backend)


@pytest.mark.parametrize("scenario", list(ONCE))
def test_ctrl_c_once(scenario: str) -> None:
    """A network mixing all three backends, and the main thread's own blocked operations."""
    _interrupt(ONCE[scenario], "thread")


STUBBORN = """
import sys
import ferrocsp as csp

# Not an argument of the process: the Ctrl-C's poison of the network cannot reach it, so the
# process goes on with timed reads, in and out of the bindings, while the interpreter exits.
ch = csp.Channel(name="never-poisoned")
announced = []

def announce():
    if not announced:
        announced.append(True)
        print("ready", flush=True)

if {backend!r} == "asyncio":
    @csp.process
    async def stubborn():
        while True:
            try:
                await ch.aread(timeout=0.005)
            except TimeoutError:
                announce()
else:
    @csp.process
    def stubborn():
        while True:
            try:
                ch.read(timeout=0.005)
            except TimeoutError:
                announce()

csp.Par(stubborn(), backend={backend!r}).run()
"""


def test_ctrl_c_exits_cleanly_while_a_process_keeps_operating(backend: str) -> None:
    """A process the poison cannot reach is still going in and out of the bindings while the
    interpreter finalizes: the exit is by SIGINT, never an abort. (CPython ends a daemon
    thread that takes the GIL back during finalization by a forced unwind, which through the
    bindings' frames aborted the process: "FATAL: exception not rethrown", exit -6.)"""
    code = STUBBORN.format(backend=backend)
    returncode, out, err = interrupt_child(code, {"FERROCSP_DEADLOCK": "off"})
    assert returncode == -signal.SIGINT, f"exit {returncode}\nstdout: {out}\nstderr: {err}"
    assert "KeyboardInterrupt" in err, err
    assert "FATAL" not in err, err
