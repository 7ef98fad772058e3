"""The soak's workloads: writer and reader bodies, and one round built from them.

A *round* is one network: writers and readers on one channel (in process, in shared memory
because an ``"os"`` process holds an end, or on NATS), each worker on its own backend (thread,
greenlet, asyncio, os), each writing or selecting in its own way, shut down by retire (the
normal end) or by a reader's poison after some values, and possibly hit by a SIGKILL of one of
its OS processes.

Invariants (what ``soak_check.account`` relies on):

- Every value is a unique id ``"<round>.<writer>.<seq>"``, written by exactly one writer.
- Every worker appends to its own log file, one line per event, with ``os.write`` on an
  ``O_APPEND`` descriptor (so a line written before a SIGKILL is never lost): ``P <pid>`` at
  start; a writer ``A <id>`` before it offers a value and ``C <id>`` once the write (or the
  ``Output`` guard) returned; a reader ``R <id>`` right after a read returned it. Between a
  read returning and its ``R`` line a reader runs no channel operation, so a reader killed
  there holds at most one value nobody logged. A reader that stops early logs ``X poison``
  before it poisons the channel.
- A worker ends by returning, by ``ChannelPoisoned``/``ChannelRetired`` (a clean end) or by
  being killed; it never swallows another exception.
"""

from __future__ import annotations

import faulthandler
import os
import random
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ferrocsp as csp

#: How long an ``Output`` guard waits before its Alt takes the ``Timeout`` guard instead
#: (and tries again): exercises withdrawn offers without slowing the round much.
OFFER_WAIT = 0.02


class Log:
    """One worker's event log (see the module's invariants)."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.line("P", str(os.getpid()))
        # A hung round's watchdog (soak.py ``dump_round``) asks every process named by a ``P``
        # line for its stacks; an "os" worker has no other way to say where it waits.
        faulthandler.register(signal.SIGUSR1, all_threads=True)

    def line(self, kind: str, ident: str) -> None:
        os.write(self.fd, f"{kind} {ident}\n".encode())

    def close(self) -> None:
        os.close(self.fd)


def writer(out: Any, prefix: str, n: int, path: str, mode: str) -> None:
    """Writes ids ``prefix.0`` .. ``prefix.(n-1)``, then retires its end."""
    log = Log(path)
    try:
        with out:
            for seq in range(n):
                ident = f"{prefix}.{seq}"
                log.line("A", ident)
                if mode == "alt":
                    offer = csp.Output(out, ident)
                    while csp.Alt(offer, csp.Timeout(OFFER_WAIT)).select()[0] is not offer:
                        pass
                else:
                    out.write(ident)
                log.line("C", ident)
    finally:
        log.close()


def reader(inp: Any, path: str, mode: str, stop_after: int) -> None:
    """Reads until end-of-stream; with ``stop_after`` > 0, poisons the channel after that many."""
    log = Log(path)
    got = 0
    try:
        with inp:
            while stop_after <= 0 or got < stop_after:
                if mode == "alt":
                    v = csp.Alt(inp).fair_select()[1]
                elif mode == "timeout":
                    try:
                        v = inp.read(timeout=0.05)
                    except TimeoutError:
                        continue
                else:
                    v = inp.read()
                log.line("R", v)
                got += 1
            log.line("X", "poison")
            inp.poison()
    except csp.ChannelRetired:
        pass
    finally:
        log.close()


async def awriter(out: Any, prefix: str, n: int, path: str, mode: str) -> None:
    """``writer`` for the asyncio backend."""
    log = Log(path)
    try:
        with out:
            for seq in range(n):
                ident = f"{prefix}.{seq}"
                log.line("A", ident)
                if mode == "alt":
                    offer = csp.Output(out, ident)
                    while (await csp.Alt(offer, csp.Timeout(OFFER_WAIT)).aselect())[0] is not offer:
                        pass
                else:
                    await out.awrite(ident)
                log.line("C", ident)
    finally:
        log.close()


async def areader(inp: Any, path: str, mode: str, stop_after: int) -> None:
    """``reader`` for the asyncio backend."""
    log = Log(path)
    got = 0
    try:
        with inp:
            while stop_after <= 0 or got < stop_after:
                if mode == "alt":
                    v = (await csp.Alt(inp).aselect())[1]
                else:
                    v = await inp.aread()
                log.line("R", v)
                got += 1
            log.line("X", "poison")
            inp.poison()
    except csp.ChannelRetired:
        pass
    finally:
        log.close()


@dataclass
class Worker:
    """One worker of a round: its role, backend, mode, log file."""

    role: str  # "w" or "r"
    backend: str  # thread, greenlet, asyncio, os
    mode: str
    log: str
    n: int = 0  # writers: values to write
    stop_after: int = 0  # readers: poison after this many (0: read to the end)


@dataclass
class Round:
    """One network: a channel, its workers, and how it ends."""

    number: int
    transport: str  # local, shm, net
    capacity: int
    workers: list[Worker] = field(default_factory=list)
    kill_after: float | None = None  # seconds after the start: SIGKILL one "os" worker

    def describe(self) -> str:
        ws = ",".join(f"{w.role}:{w.backend}:{w.mode}" for w in self.workers)
        kill = f" kill@{self.kill_after:.2f}s" if self.kill_after is not None else ""
        return f"#{self.number} {self.transport} cap={self.capacity} [{ws}]{kill}"


def plan(
    rng: random.Random,
    number: int,
    folder: Path,
    transports: list[str],
    kills: bool,
    n_range: tuple[int, int] = (20, 120),
) -> Round:
    """A random round: 1-3 writers and 1-3 readers; values per writer drawn from ``n_range``."""
    transport = rng.choice(transports)
    inproc = rng.choice(["thread", "greenlet", "asyncio"])
    r = Round(number, transport, rng.choice([0, 0, 1, 4]))
    nw, nr = rng.randint(1, 3), rng.randint(1, 3)
    lo, hi = n_range
    if transport == "net":
        lo, hi = max(1, lo // 4), max(2, hi // 4)  # a networked value costs a few round trips
    for i in range(nw + nr):
        role = "w" if i < nw else "r"
        backend = inproc
        if transport != "local" and rng.random() < 0.5:
            backend = "os"
        if backend == "asyncio" or role == "w":
            mode = rng.choice(["plain", "alt"])
        else:
            mode = rng.choice(["plain", "alt", "timeout"])
        w = Worker(role, backend, mode, str(folder / f"{role}{i}.log"))
        if role == "w":
            w.n = rng.randint(lo, hi)
        r.workers.append(w)
    if transport == "shm" and not any(w.backend == "os" for w in r.workers):
        r.workers[rng.randrange(len(r.workers))].backend = "os"
        # An os worker runs plain functions: give it a mode both bodies have.
    for w in r.workers:
        if w.backend == "os" and w.mode == "timeout" and w.role == "w":
            w.mode = "plain"
    if rng.random() < 0.25:  # shut down by poison: one reader stops early
        readers = [w for w in r.workers if w.role == "r"]
        total = sum(w.n for w in r.workers if w.role == "w")
        rng.choice(readers).stop_after = rng.randint(1, max(1, total // 2))
    if kills and any(w.backend == "os" for w in r.workers) and rng.random() < 0.5:
        r.kill_after = rng.uniform(0.05, 1.5)
    return r


def processes(r: Round, ch: Any) -> list[Any]:
    """The round's unstarted processes, each with its own counted end of ``ch``."""
    procs = []
    for i, w in enumerate(r.workers):
        end = ch.writer() if w.role == "w" else ch.reader()
        if w.backend == "asyncio":
            fn: Any = awriter if w.role == "w" else areader
            factory = csp.process(name=f"{w.role}{i}")(fn)
        else:
            fn = writer if w.role == "w" else reader
            factory = csp.process(name=f"{w.role}{i}", backend=w.backend)(fn)
        if w.role == "w":
            procs.append(factory(end, f"{r.number}.{i}", w.n, w.log, w.mode))
        else:
            procs.append(factory(end, w.log, w.mode, w.stop_after))
    return procs
