"""Ctrl-C: a KeyboardInterrupt in the main thread ends blocked networks and the interpreter.

Each scenario runs in a fresh interpreter that prints "ready" once the main thread is
observably blocked (a helper thread watches ``ch.stats()``), then gets SIGINT. It must exit
promptly with KeyboardInterrupt and leave no Python threads behind.
"""

from __future__ import annotations

import sys
import textwrap

import pytest

from _support import interrupt_child

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals"),
]

PRELUDE = textwrap.dedent(
    """
    import signal, sys, threading, time
    import ferrocsp as csp

    signal.signal(signal.SIGINT, signal.default_int_handler)

    def announce_when(predicate):
        # Announce only once the main thread is past start() (a SIGINT inside start() would
        # escape the scenario's try/finally).
        started = threading.Event()

        def watch():
            started.wait()
            deadline = time.monotonic() + 20
            while not predicate():
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
        watcher.join(5)
        others = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
        print("LEFTOVER", others, flush=True)
    """
)

SCENARIOS = {
    "par": """
        a, b = csp.Channel(name="a"), csp.Channel(name="b")

        @csp.process
        def reader(ch):
            ch.read()

        @csp.process
        def writer(ch):
            ch.write(1)

        watcher = announce_when(
            lambda: a.stats().readers_waiting == 2 and b.stats().writers_waiting == 1
        )
        try:
            csp.Par(reader(a), reader(a), writer(b)).run()
        finally:
            leftover_threads(watcher)
    """,
    "nested-par": """
        a = csp.Channel(name="a")

        @csp.process
        def reader(ch):
            for _ in ch:
                pass

        watcher = announce_when(lambda: a.stats().readers_waiting == 3)
        try:
            csp.Par(csp.Par(reader(a), reader(a)), reader(a)).run()
        finally:
            leftover_threads(watcher)
    """,
    "par-start-join": """
        a = csp.Channel(name="a")

        @csp.process
        def reader(ch):
            for _ in ch:
                pass

        watcher = announce_when(lambda: a.stats().readers_waiting == 2)
        h = csp.Par(reader(a), reader(a)).start()
        try:
            h.join()
        finally:
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
    "spawn-join": """
        ch = csp.Channel(name="spawned")

        @csp.process
        def reader(ch):
            ch.read()

        h = csp.Spawn(reader(ch))
        watcher = announce_when(lambda: ch.stats().readers_waiting == 1)
        try:
            h.join()
        finally:
            leftover_threads(watcher)
    """,
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_ctrl_c_exits_promptly(scenario: str) -> None:
    code = PRELUDE + textwrap.dedent(SCENARIOS[scenario])
    returncode, out, err = interrupt_child(code, {"FERROCSP_DEADLOCK": "off"})
    assert returncode != 0, f"stdout: {out}\nstderr: {err}"
    assert "KeyboardInterrupt" in err, err
    assert "LEFTOVER []" in out, f"threads left behind: {out}\nstderr: {err}"
