"""The soak: mixed traffic for a given time, with SIGKILLs and Ctrl-Cs, exact accounting of
every value, and resource curves that must stay flat.

    python bench/soak/soak.py --duration 3600 --out target/soak     # scripts/soak.sh does this

The parent runs rounds (``soak_work.Round``) one after another until the time is up:

- *regular rounds*: writers and readers on one channel, in process, in shared memory or on
  NATS, on thread/greenlet/asyncio/os backends, rendezvous or buffered, plain or ``Alt``,
  ended by retire or by a reader's poison; in half of those with ``"os"`` workers one of them
  gets SIGKILL at a random instant (``ProcessCrashed``: the network must shut down);
- *Ctrl-C rounds*: a round of endless writers in a fresh interpreter (its own session) that
  gets SIGINT on its whole process group, as a terminal's Ctrl-C; it must exit by
  ``KeyboardInterrupt`` and leave no process of the group behind;
- *lease rounds*: a NATS peer that is not a child of any ``Par`` (so nothing poisons for it) is
  killed while it writes (its reader must see end-of-stream within the lease bound) or while
  it reads beside a reader of ours (the values it held go to ours).

Before the first sample, warm-up rounds use each backend on each transport once (what an
interpreter makes once, such as the forkserver or the NATS connection's threads, is not a
leak). After every round its logs are checked (``soak_check.account``: every value read exactly
once or attributable to a kill); between rounds the parent samples its own resource counts,
and those of its forkserver; a long-lived *lane* (a second interpreter running regular
rounds, never killed) samples its own. At the end every curve must be flat
(``soak_check.flat``); the samples go to ``samples.csv``, the totals to ``summary.json``.
Any breach ends the soak at once with exit status 1, keeping the round's logs.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import faulthandler
import gc
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from _common import reexec_in_venv  # noqa: E402

if __name__ == "__main__":
    reexec_in_venv(__file__)

import soak_check  # noqa: E402
import soak_probe  # noqa: E402
import soak_work  # noqa: E402

import ferrocsp as csp  # noqa: E402
from ferrocsp._backends import _pool  # noqa: E402

#: NATS options of every participant (docs/net.md, "Dead participants"). The lease is the
#: default: a live participant loses its ends if none of its refreshes reaches the server for
#: a whole lease, and a soak shares its machine (a load of 25 on 2 cores was seen); a short
#: ack timeout makes values held by a killed reader come back (and be re-sent to slow live
#: readers, whose claims must then keep them read once) within a second.
LEASE_TTL = 10.0
ACK_TIMEOUT = 1.0
#: How long a dead peer's ends may take to go away: 1.5 leases (docs/net.md) plus room for a
#: loaded machine's scheduling and round trips.
LEASE_BOUND = 1.5 * LEASE_TTL + 15.0
#: How long a Ctrl-C'd run may take to exit: INTERRUPT_GRACE (2 s) plus interpreter exit.
CTRLC_BOUND = 30.0
#: A round still running after this long has hung: the stacks of every process of the round
#: (``dump_round``) and then of every thread here go to standard error and the soak exits 1
#: (faulthandler), with the round named in ``current.txt``. Below the parent's patience with
#: a lane at the end (``LANE_GRACE``), so that a lane's hung round reports itself.
ROUND_LIMIT = 240.0
#: How long the parent waits past the duration for a lane to finish before it asks the lane's
#: current round for its stacks (``dump_round``) and kills it.
LANE_GRACE = 300.0


class SoakFailure(Exception):
    """A breach: accounting, an unexpected error, a hang, a process left behind."""


# --- NATS ----------------------------------------------------------------------------------


class Nats:
    """A private nats-server with JetStream on 127.0.0.1 (as tests/_nats.py starts one)."""

    def __init__(self, store: Path) -> None:
        exe = shutil.which("nats-server")
        if exe is None:
            raise FileNotFoundError("nats-server")
        self.store = store
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        with open(store / "nats.log", "ab") as log:
            self.proc = subprocess.Popen(
                [exe, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(store / "js")],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise SoakFailure("nats-server did not start") from None
                time.sleep(0.05)
        self.url = f"nats://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def connect(url: str) -> Any:
    import ferrocsp.net as net

    return net.connect(url, lease_ttl=LEASE_TTL, ack_timeout=ACK_TIMEOUT)


# --- helpers --------------------------------------------------------------------------------


def helper_pids() -> set[int]:
    """multiprocessing's long-lived helpers of this interpreter (forkserver, resource tracker)."""
    pids: set[int] = set()
    with contextlib.suppress(ImportError, AttributeError):
        from multiprocessing import forkserver, resource_tracker

        fs = getattr(forkserver._forkserver, "_forkserver_pid", None)
        rt = getattr(resource_tracker._resource_tracker, "_pid", None)
        pids.update(p for p in (fs, rt) if p)
    return pids


def forkserver_pid() -> int | None:
    with contextlib.suppress(ImportError, AttributeError):
        from multiprocessing import forkserver

        pid: int | None = getattr(forkserver._forkserver, "_forkserver_pid", None)
        return pid
    return None


def native_threads(pid: int) -> str:
    """Every thread of ``pid`` as ``name:kernel wait channel``: faulthandler shows only the
    Python threads; a hang in a Rust thread (a NATS connection's runtime, a watchdog) shows
    here as where it sleeps."""
    parts = []
    for task in sorted(Path(f"/proc/{pid}/task").glob("*")):
        with contextlib.suppress(OSError):
            name = (task / "comm").read_text().strip()
            parts.append(f"{name}:{(task / 'wchan').read_text().strip() or '-'}")
    return "threads " + " ".join(parts)


def dump_round(folder: Path, note: str = "") -> None:
    """Asks every live process of a round (the ``P`` lines of its logs: "os" workers, and the
    interpreter of its thread workers) for the stacks of all its threads (SIGUSR1, which
    ``soak_work.Log`` registers with faulthandler), to standard error."""
    print(f"[soak] round in {folder} hung{note}: stacks of its processes follow", flush=True)
    for log in sorted(folder.glob("*.log")):
        pid = soak_check.parse(log).pid
        if pid is None or not alive(pid):
            continue
        try:
            # A pid reused by an unrelated process would die of SIGUSR1: ours run Python.
            if b"python" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                continue
            print(f"[soak]   {log.name}: pid {pid}; {native_threads(pid)}", file=sys.stderr)
            sys.stderr.flush()
            os.kill(pid, signal.SIGUSR1)
        except OSError:
            continue  # gone meanwhile
        time.sleep(0.5)  # one dump at a time: they share standard error


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def group_gone(pgid: int, within: float) -> list[int]:
    """Waits until process group ``pgid`` is empty; the pids still in it after ``within``."""
    deadline = time.monotonic() + within
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        if time.monotonic() > deadline:
            left = []
            for d in Path("/proc").iterdir():
                if d.name.isdigit():
                    with contextlib.suppress(OSError, ValueError, IndexError):
                        stat = (d / "stat").read_text()
                        if int(stat[stat.rindex(")") + 2 :].split()[2]) == pgid:
                            left.append(int(d.name))
            return left
        time.sleep(0.05)


def round_logs(r: soak_work.Round) -> tuple[list[soak_check.Events], list[soak_check.Events]]:
    ws = [soak_check.parse(Path(w.log)) for w in r.workers if w.role == "w"]
    rs = [soak_check.parse(Path(w.log)) for w in r.workers if w.role == "r"]
    return ws, rs


def reads_so_far(paths: list[str]) -> int:
    """The ``R`` lines among the first 64 KiB of each log (enough to wait for a few reads,
    and bounded: a Ctrl-C run's endless writers fill their logs fast)."""
    n = 0
    for p in paths:
        with contextlib.suppress(FileNotFoundError), open(p) as f:
            n += f.read(65536).count("\nR ")
    return n


# --- rounds -----------------------------------------------------------------------------------


class Soak:
    """One soaking interpreter: the parent (kills, Ctrl-Cs, lease rounds) or a lane."""

    def __init__(self, args: argparse.Namespace, role: str) -> None:
        self.args = args
        self.role = role
        self.rng = random.Random(args.seed)
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.t0 = args.t0 if args.t0 else time.time()
        self.deadline = time.monotonic() + args.duration
        self.tally = soak_check.Tally()
        self.rounds = 0
        self.kills = 0
        self.ctrlcs = 0
        self.lease_rounds = 0
        self.lease_waits: list[float] = []
        self.url: str | None = args.url
        self.conn: Any = None
        self.transports = ["local", "shm"] + (["net"] if self.url else [])
        self.rows: list[dict[str, Any]] = []
        self.last_sample = -1e9
        self.skip: set[int] = set()  # long-lived children that are not leaks (nats, lane)
        self.lanes: list[subprocess.Popen[bytes]] = []
        self.round_channel: Any = None  # a regular round's, for its watchdog
        faulthandler.register(signal.SIGUSR1, all_threads=True)  # dump_round asks us too

    def round_hung(self, folder: Path) -> None:
        """The watchdog of a round that runs past ``ROUND_LIMIT`` (a timer thread)."""
        dump_round(folder)
        ch = self.round_channel
        if ch is not None:
            # For a networked channel, the server's view: a poison there that the round's
            # processes did not see is a lost wake-up, none is a poison never sent.
            print(f"[soak] its channel {ch.name!r}: {ch.stats()}", file=sys.stderr, flush=True)

    # -- regular rounds --

    def regular(self, r: soak_work.Round) -> None:
        if r.transport == "net":
            ch = self.conn.channel(f"soak-{os.getpid()}-{r.number}", r.capacity)
        else:
            ch = csp.Channel(r.capacity, name=f"soak-{r.number}")
        self.round_channel = ch
        procs = soak_work.processes(r, ch)
        killed: list[int] = []
        stop = threading.Event()

        def killer() -> None:
            assert r.kill_after is not None
            if stop.wait(r.kill_after):
                return
            while not stop.is_set():
                cands = []
                for i, w in enumerate(r.workers):
                    if w.backend == "os":
                        pid = soak_check.parse(Path(w.log)).pid
                        if pid is not None and alive(pid):
                            cands.append((i, pid))
                if cands:
                    # Its own generator: the plan of rounds must not depend on this thread.
                    i, pid = random.Random(r.number).choice(cands)
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass  # it ended between the look and the kill: look again
                    else:
                        killed.append(i)
                        return
                stop.wait(0.02)

        t = threading.Thread(target=killer, name="killer", daemon=True)
        if r.kill_after is not None:
            t.start()
        failed: ExceptionGroup[Exception] | None = None
        try:
            csp.Par(*procs).run()
        except ExceptionGroup as eg:
            failed = eg
        finally:
            # Before `killed` is looked at: the Par can see the crash before the killer
            # thread, between its kill and its record of it, runs again.
            stop.set()
            if t.is_alive() or r.kill_after is not None:
                t.join()
        if failed is not None:
            _, rest = failed.split(csp.ProcessCrashed)
            if rest is not None or not killed:
                raise SoakFailure(f"round {r.describe()}: unexpected failure") from failed
        self.kills += len(killed)
        ws, rs = round_logs(r)
        # Poisoned by a stopping reader (it logs so first), or by the Par for a killed
        # process (unless the kill landed after that process had finished).
        poisoned = bool(killed) or any(e.poisoned for e in rs)
        if r.transport != "net":
            seen = ch.stats().poisoned
            if not killed and seen != poisoned:
                raise SoakFailure(f"round {r.describe()}: poisoned={seen}, expected {poisoned}")
            poisoned = seen
        held = sum(1 for i in killed if r.workers[i].role == "r")
        killed_writers = sum(1 for i in killed if r.workers[i].role == "w")
        self.tally.add(
            soak_check.account(
                ws,
                rs,
                capacity=r.capacity,
                poisoned=poisoned,
                held=held,
                killed_writers=killed_writers,
                what=f"round {r.describe()} (logs in {Path(r.workers[0].log).parent})",
            )
        )

    # -- Ctrl-C rounds --

    def ctrlc(self, number: int, folder: Path) -> None:
        cmd = [sys.executable, __file__, "--role", "ctrlc", "--out", str(folder)]
        cmd += ["--seed", str(self.rng.randrange(2**32)), "--number", str(number)]
        if self.url:
            cmd += ["--url", self.url]
        with open(folder / "stderr.txt", "wb") as err:
            proc = subprocess.Popen(cmd, stdout=err, stderr=err, start_new_session=True)
        try:
            plan_path = folder / "plan.json"
            deadline = time.monotonic() + 60
            want = self.rng.randint(5, 40)
            while True:
                if proc.poll() is not None:
                    raise SoakFailure(f"Ctrl-C run ended by itself ({proc.returncode}): {folder}")
                if plan_path.exists():
                    plan = json.loads(plan_path.read_text())
                    if reads_so_far([w["log"] for w in plan["workers"]]) >= want:
                        break
                if time.monotonic() > deadline:
                    raise SoakFailure(f"Ctrl-C run made no progress in 60 s: {folder}")
                time.sleep(0.02)
            os.killpg(proc.pid, signal.SIGINT)
            try:
                rc = proc.wait(timeout=CTRLC_BOUND)
            except subprocess.TimeoutExpired:
                raise SoakFailure(
                    f"Ctrl-C run still running {CTRLC_BOUND} s after SIGINT: {folder}"
                ) from None
            if rc != -signal.SIGINT:
                raise SoakFailure(f"Ctrl-C run exited {rc}, not by SIGINT: {folder}/stderr.txt")
            left = group_gone(proc.pid, 10.0)
            if left:
                raise SoakFailure(f"Ctrl-C run left processes behind: {left}")
        finally:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.ctrlcs += 1
        r = soak_work.Round(plan["number"], plan["transport"], plan["capacity"])
        r.workers = [soak_work.Worker(**w) for w in plan["workers"]]
        ws, rs = round_logs(r)
        self.tally.add(
            soak_check.account(
                ws,
                rs,
                capacity=r.capacity,
                poisoned=True,
                held=len(rs),
                killed_writers=len(ws),
                what=f"Ctrl-C round {r.describe()} (logs in {folder})",
            )
        )

    # -- lease rounds --

    def lease(self, number: int, folder: Path) -> None:
        """A NATS peer outside any Par, killed while it writes or while it reads."""
        peer_role = self.rng.choice(["writer", "reader"])
        cap = self.rng.choice([0, 4])
        name = f"soak-{os.getpid()}-{number}-lease"
        ch = self.conn.channel(name, cap)
        peer_log = str(folder / "peer.log")
        mine = str(folder / "mine.log")
        cmd = [sys.executable, __file__, "--role", "peer", "--url", str(self.url)]
        cmd += ["--chan", name, "--capacity", str(cap), "--peer", peer_role, "--log", peer_log]
        cmd += ["--number", str(number), "--out", str(folder)]
        our_reader = ch.reader()
        our_writer = ch.writer() if peer_role == "reader" else None
        with open(folder / "stderr.txt", "wb") as err:
            proc = subprocess.Popen(cmd, stdout=err, stderr=err)
        self.skip.add(proc.pid)
        want = self.rng.randint(3, 20)
        read_err: list[BaseException] = []
        ended_at: list[float] = []

        def drain() -> None:
            log = soak_work.Log(mine)
            try:
                while True:
                    log.line("R", our_reader.read(timeout=LEASE_BOUND + 30))
            except csp.ChannelRetired:
                ended_at.append(time.monotonic())
            except BaseException as e:  # noqa: BLE001 - reported below, with the round
                read_err.append(e)
            finally:
                log.close()

        t = threading.Thread(target=drain, name="lease-reader", daemon=True)
        t.start()
        try:
            killed_at = 0.0
            if peer_role == "writer":
                deadline = time.monotonic() + 60
                while reads_so_far([mine]) < want and time.monotonic() < deadline:
                    time.sleep(0.02)
                os.kill(proc.pid, signal.SIGKILL)
                killed_at = time.monotonic()
            else:
                assert our_writer is not None
                wlog = soak_work.Log(str(folder / "w.log"))
                n = self.rng.randint(want + 5, want + 40)
                with our_writer:
                    for seq in range(n):
                        ident = f"{number}.0.{seq}"
                        wlog.line("A", ident)
                        our_writer.write(ident, timeout=LEASE_BOUND + 30)
                        wlog.line("C", ident)
                        if seq == want:
                            # Kill once the peer has read something (or now, if it is slow).
                            deadline = time.monotonic() + 10
                            while reads_so_far([peer_log]) == 0 and time.monotonic() < deadline:
                                time.sleep(0.02)
                            os.kill(proc.pid, signal.SIGKILL)
                wlog.close()
            proc.wait(timeout=30)
            t.join(LEASE_BOUND + 60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            self.skip.discard(proc.pid)
        if t.is_alive():
            raise SoakFailure(f"lease round {number}: our reader never saw end-of-stream")
        if read_err:
            raise SoakFailure(f"lease round {number}: our reader failed") from read_err[0]
        our_reader.retire()
        if peer_role == "writer":
            waited = ended_at[0] - killed_at
            self.lease_waits.append(waited)
            if waited > LEASE_BOUND:
                raise SoakFailure(
                    f"lease round {number}: end-of-stream {waited:.1f} s after the writer's "
                    f"death (bound {LEASE_BOUND:.1f} s)"
                )
            ws = [soak_check.parse(Path(peer_log))]
            rs = [soak_check.parse(Path(mine))]
        else:
            ws = [soak_check.parse(folder / "w.log")]
            rs = [soak_check.parse(Path(mine)), soak_check.parse(Path(peer_log))]
        self.kills += 1
        self.lease_rounds += 1
        self.tally.add(
            soak_check.account(
                ws,
                rs,
                capacity=cap,
                poisoned=False,
                held=1 if peer_role == "reader" else 0,
                killed_writers=1 if peer_role == "writer" else 0,
                what=f"lease round {number} (peer {peer_role}, capacity {cap}, logs in {folder})",
            )
        )

    # -- sampling --

    def sample(self, force: bool = False) -> None:
        now = time.time() - self.t0
        if not force and now - self.last_sample < self.args.interval:
            return
        self.last_sample = now
        # Quiescent counts: what the finished rounds left is garbage only once collected
        # (a traceback's frames hold channels in a cycle until then), and the kept idle
        # workers (a cache bounded by count and idle time: threads, and the event loops'
        # descriptors) are let go, so the counts do not move with how many happen to be kept.
        # Shared segments are counted before that: a kept worker must hold none (its pooled
        # operation greenlets once kept their last channels: CHANGELOG).
        gc.collect()
        before = soak_probe.sample(os.getpid(), set())
        _pool.release_idle(10.0)
        gc.collect()
        procs = [(self.role, os.getpid(), self.skip | helper_pids())]
        fs = forkserver_pid()
        if fs is not None:
            procs.append((f"{self.role}-forkserver", fs, set()))
        for name, pid, skip in procs:
            counts = soak_probe.sample(pid, skip)
            if counts is None:
                continue
            row: dict[str, Any] = {"t": round(now, 2), "proc": name, "round": self.rounds}
            row.update(values=self.tally.committed, kills=self.kills, ctrlc=self.ctrlcs)
            row.update(counts)
            if pid == os.getpid() and before is not None:
                row.update(memfd_fds=before["memfd_fds"], shm_maps=before["shm_maps"])
            self.rows.append(row)

    # -- the loop --

    def warm_up(self, rounds_dir: Path) -> None:
        """One round of each backend on each transport before the first sample: what is made
        once per interpreter (the forkserver, the NATS connection's threads, each backend's
        first use) is not a leak, so the curves start after it. In the parent, one of them
        gets a SIGKILL, and a Ctrl-C round and a lease round follow, so that even a short
        soak has each kind of fault."""
        shapes = [("local", b, b) for b in ("thread", "greenlet", "asyncio")]
        shapes += [("shm", "os", "thread"), ("shm", "greenlet", "os")]
        if self.url:
            shapes += [("net", "os", "asyncio"), ("net", "thread", "os")]
        for transport, wb, rb in shapes:
            folder = rounds_dir / f"warm-{self.rounds}"
            folder.mkdir()
            r = soak_work.Round(self.rounds, transport, 1)
            r.workers = [
                soak_work.Worker("w", wb, "plain", str(folder / "w0.log"), n=10),
                soak_work.Worker(
                    "r", rb, "alt" if rb != "thread" else "plain", str(folder / "r1.log")
                ),
            ]
            if self.role == "parent" and (transport, wb) == ("shm", "os"):
                r.workers[0].n = 10**6  # killed at 0.3 s, long before it could finish
                r.kill_after = 0.3
            self.regular(r)
            shutil.rmtree(folder)
            self.rounds += 1
        if self.role != "parent":
            return
        folder = rounds_dir / f"warm-{self.rounds}"
        folder.mkdir()
        self.ctrlc(self.rounds, folder)
        shutil.rmtree(folder)
        self.rounds += 1
        if self.url:
            folder = rounds_dir / f"warm-{self.rounds}"
            folder.mkdir()
            self.lease(self.rounds, folder)
            shutil.rmtree(folder)
            self.rounds += 1

    def run(self) -> None:
        if self.url:
            self.conn = connect(self.url)
        rounds_dir = self.out / "rounds"
        rounds_dir.mkdir(exist_ok=True)
        parent = self.role == "parent"
        try:
            self.warm_up(rounds_dir)
            self.deadline = time.monotonic() + self.args.duration  # traffic after the warm-up
            self.sample(force=True)
            while time.monotonic() < self.deadline:
                number = self.rounds
                folder = rounds_dir / str(number)
                folder.mkdir()
                kind = "regular"
                if parent:
                    x = self.rng.random()
                    if x < self.args.ctrlc_rate:
                        kind = "ctrlc"
                    elif self.url and x < self.args.ctrlc_rate + self.args.lease_rate:
                        kind = "lease"
                (self.out / "current.txt").write_text(f"round {number} ({kind}): {folder}\n")
                self.round_channel = None
                faulthandler.dump_traceback_later(ROUND_LIMIT, exit=True)
                # Before faulthandler's exit: the round's own processes say where they wait
                # (a Python thread: a hang that holds the GIL leaves only faulthandler's dump).
                watch = threading.Timer(ROUND_LIMIT - 15, self.round_hung, (folder,))
                watch.daemon = True
                watch.start()
                if kind == "ctrlc":
                    self.ctrlc(number, folder)
                elif kind == "lease":
                    self.lease(number, folder)
                else:
                    r = soak_work.plan(self.rng, number, folder, self.transports, kills=parent)
                    (self.out / "current.txt").write_text(f"{r.describe()}: {folder}\n")
                    self.regular(r)
                watch.cancel()
                faulthandler.cancel_dump_traceback_later()
                shutil.rmtree(folder)
                self.rounds += 1
                self.sample()
                for i, lane in enumerate(self.lanes):
                    if lane.poll() not in (None, 0):
                        raise SoakFailure(f"lane {i} failed (exit {lane.returncode})")
            self.sample(force=True)
        finally:
            if self.conn is not None:
                self.conn.close()

    def write_csv(self, path: Path) -> None:
        cols = ["t", "proc", "round", "values", "kills", "ctrlc", *soak_probe.FIELDS]
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols)
            w.writeheader()
            w.writerows(self.rows)


# --- the roles of the other interpreters ---------------------------------------------------


def ctrlc_run(args: argparse.Namespace) -> None:
    """A round of endless writers, for the parent to interrupt (SIGINT to the group)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    folder = Path(args.out)
    rng = random.Random(args.seed)
    transports = ["local", "shm"] + (["net"] if args.url else [])
    r = soak_work.plan(rng, args.number, folder, transports, kills=False, n_range=(10**9, 10**9))
    for w in r.workers:
        w.stop_after = 0  # only Ctrl-C ends it
    conn = connect(args.url) if args.url and r.transport == "net" else None
    ch = (
        conn.channel(f"soak-{os.getpid()}-{r.number}-c", r.capacity)
        if conn is not None
        else csp.Channel(r.capacity)
    )
    procs = soak_work.processes(r, ch)
    plan = {"number": r.number, "transport": r.transport, "capacity": r.capacity}
    plan["workers"] = [vars(w) for w in r.workers]
    tmp = folder / "plan.tmp"
    tmp.write_text(json.dumps(plan))
    tmp.rename(folder / "plan.json")
    try:
        csp.Par(*procs).run()
    finally:
        if conn is not None:
            conn.close()


def peer_run(args: argparse.Namespace) -> None:
    """A NATS participant outside any Par: writes forever, or reads forever."""
    conn = connect(args.url)
    ch = conn.channel(args.chan, args.capacity)
    if args.peer == "writer":
        w = ch.writer()
        soak_work.writer(w, f"{args.number}.0", 10**9, args.log, "plain")
    else:
        soak_work.reader(ch.reader(), args.log, "plain", 0)


# --- main -------------------------------------------------------------------------------------


def check_curves(rows: list[dict[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    """Start/end values and the flatness verdict of every (process, resource) curve."""
    curves: dict[str, Any] = {}
    failures = []
    for proc in sorted({r["proc"] for r in rows}):
        mine = [r for r in rows if r["proc"] == proc]
        times = [float(r["t"]) for r in mine]
        for field in soak_probe.FIELDS:
            values = [float(r[field]) for r in mine]
            why = soak_check.flat(times, values, soak_check.TOLERANCES[field])
            curves[f"{proc}.{field}"] = {
                "samples": len(values),
                "first": values[0],
                "after_warmup": values[int(len(values) * soak_check.WARMUP)],
                "last": values[-1],
                "max": max(values),
                "flat": why is None,
            }
            if why is not None:
                failures.append(f"{proc} {field}: {why}")
    return curves, failures


def parent_main(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    args.t0 = time.time()
    nats: Nats | None = None
    if not args.no_net:
        try:
            nats = Nats(Path(tempfile.mkdtemp(prefix="soak-nats-")))
            args.url = nats.url
        except FileNotFoundError:
            if os.environ.get("CI") in ("1", "true"):
                raise
            print("[soak] nats-server not found: networked channels left out", flush=True)
    soak = Soak(args, "parent")
    lanes = []
    if nats is not None:
        soak.skip.add(nats.proc.pid)
    for i in range(args.lanes):
        cmd = [sys.executable, __file__, "--role", "lane", "--out", str(out / f"lane{i}")]
        cmd += ["--duration", str(args.duration), "--seed", str(args.seed + 1 + i)]
        cmd += ["--t0", str(args.t0), "--interval", str(args.interval)]
        if args.url:
            cmd += ["--url", args.url]
        lane = subprocess.Popen(cmd)
        soak.skip.add(lane.pid)
        lanes.append(lane)
    soak.lanes = lanes
    failure: BaseException | None = None
    started = time.monotonic()
    try:
        soak.run()
    except (SoakFailure, soak_check.AccountingError) as e:
        failure = e
    finally:
        for lane in lanes:
            if failure is not None:
                lane.terminate()  # it stops, keeping its samples (lane_main)
            try:
                lane.wait(timeout=args.duration + LANE_GRACE if failure is None else 30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(OSError, ValueError, IndexError):
                    current = Path(args.out) / f"lane{lanes.index(lane)}" / "current.txt"
                    dump_round(Path(current.read_text().split(": ", 1)[1].strip()), " (lane)")
                lane.kill()
                lane.wait()
        if nats is not None:
            nats.stop()
            shutil.rmtree(nats.store, ignore_errors=True)
    elapsed = time.monotonic() - started
    rows = list(soak.rows)
    lane_summaries = []
    for i, lane in enumerate(lanes):
        d = out / f"lane{i}"
        with contextlib.suppress(FileNotFoundError):
            with (d / "samples.csv").open() as f:
                rows.extend(csv.DictReader(f))
            lane_summaries.append(json.loads((d / "summary.json").read_text()))
        if lane.returncode != 0 and failure is None:
            failure = SoakFailure(f"lane {i} failed (exit {lane.returncode}): see its output")
    rows.sort(key=lambda r: float(r["t"]))
    soak.rows = rows
    soak.write_csv(out / "samples.csv")
    curves, flat_failures = check_curves(rows)
    total = soak_check.Tally()
    total.add(soak.tally)
    rounds = soak.rounds
    for s in lane_summaries:
        total.add(soak_check.Tally(**s["values"]))
        rounds += s["rounds"]
    summary = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(args.t0)),
        "duration_s": round(elapsed, 1),
        "seed": args.seed,
        "rounds": rounds,
        "values": vars(total),
        "kills": soak.kills,
        "ctrl_c": soak.ctrlcs,
        "lease_rounds": soak.lease_rounds,
        "lease_wait_max_s": round(max(soak.lease_waits), 2) if soak.lease_waits else None,
        "lanes": args.lanes,
        "net": args.url is not None,
        "curves": curves,
        "flat_failures": flat_failures,
        "failure": None if failure is None else f"{type(failure).__name__}: {failure}",
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"[soak] {elapsed:.0f} s, {rounds} rounds, {total.committed} values committed, "
        f"{total.read} read, {total.lost} lost to kills/poison (within the rule), "
        f"{total.indeterminate} indeterminate, {soak.kills} SIGKILLs, {soak.ctrlcs} Ctrl-Cs, "
        f"{soak.lease_rounds} lease rounds; samples: {out / 'samples.csv'}",
        flush=True,
    )
    for key, c in curves.items():
        print(
            f"[soak]   {key:32} first {c['first']:>9g}  after warm-up {c['after_warmup']:>9g}"
            f"  last {c['last']:>9g}  max {c['max']:>9g}  {'flat' if c['flat'] else 'GROWS'}"
        )
    if failure is not None:
        print(f"[soak] FAILED: {summary['failure']}", file=sys.stderr)
        if failure.__cause__ is not None:
            import traceback

            traceback.print_exception(failure.__cause__, file=sys.stderr)
        return 1
    if flat_failures:
        print("[soak] FAILED: resources grow:\n  " + "\n  ".join(flat_failures), file=sys.stderr)
        return 1
    print("[soak] passed", flush=True)
    return 0


def _terminated(signum: int, frame: Any) -> None:
    raise SystemExit(f"stopped by signal {signum}")


def lane_main(args: argparse.Namespace) -> int:
    # The parent stops a lane with SIGTERM when it failed: its samples are written on the way.
    signal.signal(signal.SIGTERM, _terminated)
    soak = Soak(args, "lane")
    try:
        soak.run()
    except (SoakFailure, soak_check.AccountingError) as e:
        print(f"[soak lane] FAILED: {type(e).__name__}: {e}", file=sys.stderr)
        if e.__cause__ is not None:
            import traceback

            traceback.print_exception(e.__cause__, file=sys.stderr)
        return 1
    finally:
        soak.write_csv(Path(args.out) / "samples.csv")
        (Path(args.out) / "summary.json").write_text(
            json.dumps({"rounds": soak.rounds, "values": vars(soak.tally)})
        )
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=60.0, help="seconds of traffic")
    p.add_argument("--out", default=None, help="folder for samples.csv and summary.json")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--interval", type=float, default=None, help="seconds between samples")
    p.add_argument("--lanes", type=int, default=1, help="long-lived interpreters beside")
    p.add_argument("--ctrlc-rate", type=float, default=0.06, help="share of Ctrl-C rounds")
    p.add_argument("--lease-rate", type=float, default=0.04, help="share of lease rounds")
    p.add_argument("--no-net", action="store_true", help="leave out networked channels")
    p.add_argument("--role", default="parent", choices=["parent", "lane", "ctrlc", "peer"])
    p.add_argument("--url", default=None)
    p.add_argument("--t0", type=float, default=0.0)
    p.add_argument("--number", type=int, default=0)
    p.add_argument("--chan", default="")
    p.add_argument("--capacity", type=int, default=0)
    p.add_argument("--peer", default="writer")
    p.add_argument("--log", default="")
    args = p.parse_args()
    if args.seed is None:
        args.seed = random.randrange(2**31)
    if args.interval is None:
        args.interval = max(1.0, args.duration / 400)
    if args.out is None:
        args.out = tempfile.mkdtemp(prefix="ferrocsp-soak-")
    if args.role == "ctrlc":
        ctrlc_run(args)
        return 0
    if args.role == "peer":
        peer_run(args)
        return 0
    if args.role == "lane":
        return lane_main(args)
    print(f"[soak] seed {args.seed}, {args.duration:g} s, out {args.out}", flush=True)
    return parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
