"""``ferrocsp.dump()``: the live network as text (processes, states, channels), and SIGQUIT."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import ferrocsp as csp
from _chans import Chans
from _kit import Kit
from _support import wait_until
from ferrocsp import _native

ROOT = Path(__file__).resolve().parents[1]
HAVE_STATES = hasattr(_native, "_participants")  # the deadlock detector's registry


async def producer(k: Kit, out: csp.Writer, n: int) -> None:
    for i in range(n):
        await k.write(out, i)
    await k.write(out, "never read")  # blocks until poisoned


async def consumer(k: Kit, inp: csp.Reader, n: int) -> int:
    return sum([await k.read(inp) for _ in range(n)])


async def idle(k: Kit, ch: csp.Channel) -> None:
    await k.read(ch)


def _blocked_network(
    k: Kit, mk: Chans
) -> tuple[csp.Handle[list[object]], csp.Channel, csp.Channel]:
    jobs = mk(name=f"dump-jobs-{k.backend}")
    spare = mk(2, name=f"dump-spare-{k.backend}")
    h = k.Par(
        k.process(producer)(jobs.writer(), 3),
        k.process(consumer)(jobs.reader(), 3),
        k.process(idle)(spare),
    ).start()
    wait_until(lambda: jobs.stats().writers_waiting == 1, what="producer blocked")
    wait_until(lambda: spare.stats().readers_waiting == 1, what="idle blocked")
    return h, jobs, spare


def _section(text: str, channel: str) -> list[str]:
    """The lines of the network that uses ``channel``."""
    blocks = text.split("network ")
    mine = [b for b in blocks if f"channel '{channel}'" in b]
    assert len(mine) == 1, text
    return ("network " + mine[0]).splitlines()


@pytest.mark.timeout(30)
def test_dump_lists_processes_states_and_channels(k: Kit, mk: Chans) -> None:
    backend = k.backend
    h, jobs, spare = _blocked_network(k, mk)
    try:
        wait_until(lambda: not h._tasks[1].alive or h._tasks[1].outcome is not None)
        # The producer's last write ("never read") blocks after the consumer has finished.
        wait_until(lambda: jobs.stats().writers_waiting == 1, what="producer blocked again")
        buf = io.StringIO()
        csp.dump(buf)
        lines = _section(buf.getvalue(), jobs.name)
        assert lines[0] == "network Par(producer, consumer, idle): 3 processes"
        procs = {ln.split()[1]: ln for ln in lines if ln.startswith("  process ")}
        assert set(procs) == {"producer", "consumer", "idle"}
        assert all(f"  {backend} " in ln for ln in procs.values())
        if HAVE_STATES:
            # A shared or networked wait says so after the channel (its detection differs).
            after = {"local": " for ", "shm": " (shared with OS processes", "net": " (networked"}
            assert f"blocked on '{jobs.name}' write{after[mk.kind]}" in procs["producer"]
            assert f"blocked on '{spare.name}' read{after[mk.kind]}" in procs["idle"]
        else:
            assert procs["producer"].endswith("running")
        assert procs["consumer"].endswith("finished")
        text = "\n".join(lines)
        assert f"channel '{jobs.name}': producer writes, consumer reads" in text
        assert f"channel '{spare.name}': idle uses" in text
        i = lines.index(f"  channel '{jobs.name}': producer writes, consumer reads")
        net = "networked, " if mk.is_net else ""
        assert lines[i + 1].strip() == (
            f"{net}rendezvous, readers waiting 0, writers waiting 1, reader ends 1, writer ends 1"
        )
        j = lines.index(f"  channel '{spare.name}': idle uses")
        assert lines[j + 1].strip().startswith(f"{net}buffered 0/2, readers waiting 1,")
    finally:
        h.poison()
        h.join(10)  # every process ends cleanly by poison


@pytest.mark.timeout(30)
def test_dump_defaults_to_stdout_and_forgets_ended_networks(
    capsys: pytest.CaptureFixture[str],
) -> None:
    ch = csp.Channel(name="dump-ended")
    kit = Kit("thread")
    csp.Par(kit.process(producer)(ch.writer(), 0), kit.process(idle)(ch)).start().join(10)
    csp.dump()
    out = capsys.readouterr().out
    assert out.startswith("ferrocsp dump (pid ")
    assert "dump-ended" not in out


SCRIPT = """
import os, signal, sys, time
{before}
import ferrocsp as csp

@csp.process
def stuck(ch):
    ch.read()

ch = csp.Channel(name="quit-chan")
h = csp.Par(stuck(ch)).start()
while ch.stats().readers_waiting == 0:
    time.sleep(0.001)
os.kill(os.getpid(), signal.SIGQUIT)
time.sleep(0.2)
print("handler:", signal.getsignal(signal.SIGQUIT) is not signal.SIG_DFL, flush=True)
h.poison()
h.join(5)
"""


@pytest.mark.timeout(30)
def test_sigquit_writes_the_dump_to_stderr() -> None:
    # SIGQUIT as at a terminal (a runner started in the background passes it on ignored, and
    # ferrocsp then leaves it alone, as it leaves a handler of the program's own).
    code = textwrap.dedent(SCRIPT.format(before="signal.signal(signal.SIGQUIT, signal.SIG_DFL)"))
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=20, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr
    assert "network Par(stuck): 1 process\n" in proc.stderr
    assert "channel 'quit-chan': stuck uses" in proc.stderr
    assert "handler: True" in proc.stdout


@pytest.mark.timeout(30)
def test_sigquit_handler_of_the_program_is_kept() -> None:
    before = "signal.signal(signal.SIGQUIT, lambda *a: print('mine', flush=True))"
    code = textwrap.dedent(SCRIPT.format(before=before))
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=20, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr
    assert "mine" in proc.stdout
    assert "quit-chan" not in proc.stderr


@csp.process
async def areader(inp: csp.Reader) -> None:
    await inp.aread()


@pytest.mark.timeout(30)
def test_dump_shows_asyncio_processes_and_other_threads() -> None:
    ch = csp.Channel(name="dump-async")
    side = csp.Channel(name="dump-side")
    h = csp.Par(areader(ch.reader())).start()
    helper = threading.Thread(target=lambda: side.read(timeout=20), name="dump-helper")
    helper.start()
    try:
        wait_until(lambda: ch.stats().readers_waiting == 1, what="areader blocked")
        wait_until(lambda: side.stats().readers_waiting == 1, what="helper blocked")
        buf = io.StringIO()
        csp.dump(buf)
        lines = _section(buf.getvalue(), ch.name)
        assert lines[0] == "network Par(areader): 1 process"
        (line,) = [ln for ln in lines if ln.startswith("  process areader")]
        assert "  asyncio  " in line
        if HAVE_STATES:
            assert f"blocked on '{ch.name}' read for " in line
            rest = buf.getvalue().split("other participants:\n", 1)[1]
            assert (
                f"dump-helper  thread  blocked on '{side.name}' read (with a timeout) for" in rest
            )
    finally:
        side.write(None)
        helper.join(10)
        ch.write(None)
        h.join(10)
