"""Exactly once under random network faults (issue #17): every participant talks to the
server through the fault-injecting proxy (tests/_netproxy.py), which drops, delays and
duplicates the frames that carry values and acknowledgements and now and then cuts a
connection, with a seeded random sequence. Several writers and readers (one reader in another
OS process) move distinct values over a rendezvous channel, a buffered one, and both through
``Alt`` (``Output`` guards on the writing side, input guards on the reading side), and in
batches (``write_many`` / ``read_many`` on a buffered channel). The accounting is exact: every
value whose write succeeded (for a batch: one of the first ``written`` of its call) is read
exactly once, a value whose write raised is read at most once (never, when it raised
``TimeoutError``: such a value was not stored), nothing is read twice and nothing unknown is
read.

The default run moves ``N`` values per plain suite and ``N_ALT`` per Alt suite (seconds
each: every lost message stalls someone for ``ack_timeout``); ``FERROCSP_SLOW=1`` moves
10,000 per suite with more writers and readers. Each suite prints its numbers (values,
outcomes, faults injected by kind; ``pytest -s`` shows them). ``FERROCSP_FAULT_SEED`` picks
another random sequence.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import ferrocsp as csp
import ferrocsp.net as net
from _nats import NatsServer, nats_fixture, spawn  # noqa: F401 - nats_fixture is the fixture 'nats'
from _netproxy import FaultProxy, RandomFaults, value_traffic

SLOW = os.environ.get("FERROCSP_SLOW") == "1"
N = 10_000 if SLOW else 40
#: An Output guard's value takes more messages (claims or reservations, releases, commits),
#: so more of them meet a fault: the default run moves fewer values through Alt.
N_ALT = 10_000 if SLOW else 24
#: A batch suite moves more: its values share round trips.
N_BATCH = 10_000 if SLOW else 200
# More of each in the slow run: a lost message stalls one participant for about ack_timeout,
# and the others go on meanwhile.
WRITERS = 6 if SLOW else 3
READERS = 4 if SLOW else 2
ACK = 0.5  # ack_timeout (and JetStream's ack_wait) of every connection
QUIET = 4 * ACK  # a reader stops after this long without a value, once the writers are done
SEED = int(os.environ.get("FERROCSP_FAULT_SEED", "17"))

pytestmark = pytest.mark.timeout(3600 if SLOW else 120)


@pytest.fixture(name="proxy")
def proxy_fixture(nats: NatsServer) -> Iterator[FaultProxy]:
    with FaultProxy(nats.port) as p:
        yield p


def faults(seed: int) -> RandomFaults:
    return RandomFaults(
        seed,
        value_traffic(),
        drop=0.01,
        delay=0.03,
        dup=0.02,
        cut=0.001,
        max_delay=0.2,
    )


#: Values per ``write_many`` call, and the most one ``read_many`` takes, in the batch suite.
BATCH = 16

# Reads what comes, one value a line, until nothing came for `quiet` seconds after the parent
# said the writers are done (a line on stdin); in batches of up to `batch` if it is > 0.
OS_READER = """
import sys, threading
import ferrocsp.net as net
url, chan, cap, quiet = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
batch = int(sys.argv[5])
done = threading.Event()
threading.Thread(target=lambda: (sys.stdin.readline(), done.set()), daemon=True).start()
with net.connect(url, ack_timeout=0.5, reconnect_timeout=60) as c:
    ch = c.channel(chan, cap)
    print("ready", flush=True)
    while True:
        try:
            for v in ch.read_many(batch, timeout=quiet) if batch else [ch.read(timeout=quiet)]:
                print(v, flush=True)
        except TimeoutError:
            if done.is_set():
                break
"""

#: Writes its values in order; raises if not all were written (with ``written``, the number
#: of them written, for a batch).
Write = Callable[[Any, list[str]], None]
#: Reads one or more values; ``TimeoutError`` after ``QUIET`` seconds without one.
Read = Callable[[Any], list[Any]]


def plain_write(ch: Any, vs: list[str]) -> None:
    for v in vs:
        ch.write(v, timeout=120)


def plain_read(ch: Any) -> list[Any]:
    return [ch.read(timeout=QUIET)]


def alt_write(ch: Any, vs: list[str]) -> None:
    for v in vs:
        out = csp.Output(ch, v)
        # The Alt's Timeout fired: nothing was sent; offer it again.
        while csp.Alt(out, csp.Timeout(0.05)).select()[0] is not out:
            pass


def alt_read(ch: Any) -> list[Any]:
    g, v = csp.Alt(ch, csp.Timeout(QUIET)).select()
    if g is ch:
        return [v]
    raise TimeoutError


def batch_write(ch: Any, vs: list[str]) -> None:
    ch.write_many(vs, timeout=120)


def batch_read(ch: Any) -> list[Any]:
    return list(ch.read_many(BATCH, timeout=QUIET))


def run(
    nats: NatsServer,
    proxy: FaultProxy,
    suite: str,
    capacity: int,
    write: Write,
    read: Read,
    os_reader: bool,
    n: int = N,
    per_call: int = 1,
) -> None:
    """Moves ``n`` values, each writer's in calls of ``write`` with ``per_call`` values."""
    name = "x" + uuid.uuid4().hex[:12]
    conns = [
        net.connect(proxy.url, ack_timeout=ACK, reconnect_timeout=60)
        for _ in range(WRITERS + READERS)
    ]
    try:
        chans = [c.channel(name, capacity) for c in conns]
        other = (
            spawn(
                OS_READER,
                proxy.url,
                name,
                str(capacity),
                str(QUIET),
                str(BATCH if read is batch_read else 0),
            )
            if os_reader
            else None
        )
        if other is not None:
            assert other.stdout is not None
            assert other.stdout.readline().strip() == "ready"
        proxy.random = faults(SEED + capacity)
        ok: set[str] = set()
        raised: dict[str, BaseException] = {}
        got: list[list[Any]] = [[] for _ in range(READERS)]
        writers_done = threading.Event()
        lock = threading.Lock()

        def writer(w: int) -> None:
            ch = chans[w]
            mine = [f"{w}-{i}" for i in range(w, n, WRITERS)]
            for at in range(0, len(mine), per_call):
                vs = mine[at : at + per_call]
                try:
                    write(ch, vs)
                except Exception as e:  # noqa: BLE001 - accounted below
                    # A batch stored exactly its first `written` values.
                    k = getattr(e, "written", 0) if per_call > 1 else 0
                    with lock:
                        ok.update(vs[:k])
                        raised.update((v, e) for v in vs[k:])
                else:
                    with lock:
                        ok.update(vs)

        def reader(r: int) -> None:
            ch = chans[WRITERS + r]
            while True:
                try:
                    vs = read(ch)
                except TimeoutError:
                    if writers_done.is_set():
                        return
                    continue
                got[r].extend(vs)

        def progress() -> None:
            # The slow run takes a while: say how far it got, twice a minute.
            while not writers_done.wait(30):
                with lock:
                    print(
                        f"[exactly-once] {suite}: {len(ok) + len(raised)}/{n} written", flush=True
                    )

        if SLOW:
            threading.Thread(target=progress, daemon=True).start()
        ws = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
        rs = [threading.Thread(target=reader, args=(r,)) for r in range(READERS)]
        for t in ws + rs:
            t.start()
        for t in ws:
            t.join()
        writers_done.set()
        for t in rs:
            t.join()
        proxy.random = None
        read_all = [v for g in got for v in g]
        if other is not None:
            out, err = other.communicate("done\n", timeout=60)
            assert other.returncode == 0, err
            read_all += out.split()
        counts = Counter(read_all)
        written = ok | set(raised)
        twice = sorted(v for v, k in counts.items() if k > 1)
        lost = sorted(v for v in ok if counts[v] == 0)
        unknown = sorted(v for v in counts if v not in written)
        print(
            f"\n[exactly-once] {suite}: values={n} written_ok={len(ok)} raised={len(raised)} "
            f"read={len(read_all)} (os reader {len(read_all) - sum(map(len, got))}) "
            f"raised_and_read={sum(1 for v in raised if counts[v])} "
            f"faults={dict(sorted(proxy.counts.items()))} seed={SEED + capacity}"
        )
        assert len(written) == n
        assert not twice, f"read twice: {twice[:10]}"
        assert not lost, f"written, never read: {lost[:10]}"
        assert not unknown, f"read, never written: {unknown[:10]}"
        # A value whose write timed out was not stored (for a batch: one after `written`).
        stored_late = sorted(
            v for v, e in raised.items() if isinstance(e, TimeoutError) and counts[v]
        )
        assert not stored_late, f"reported unwritten, read: {stored_late[:10]}"
        assert not raised or all(
            isinstance(e, ConnectionError | TimeoutError) for e in raised.values()
        )
    finally:
        proxy.random = None
        for c in conns:
            c.close()


def test_rendezvous_exactly_once_under_faults(nats: NatsServer, proxy: FaultProxy) -> None:
    run(nats, proxy, "rendezvous", 0, plain_write, plain_read, os_reader=True)


def test_buffered_exactly_once_under_faults(nats: NatsServer, proxy: FaultProxy) -> None:
    run(nats, proxy, "buffered", 8, plain_write, plain_read, os_reader=True)


@pytest.mark.parametrize("capacity", [0, 8])
def test_alt_output_exactly_once_under_faults(
    nats: NatsServer, proxy: FaultProxy, capacity: int
) -> None:
    run(
        nats,
        proxy,
        f"alt/output cap={capacity}",
        capacity,
        alt_write,
        alt_read,
        os_reader=False,
        n=N_ALT,
    )


def test_batches_exactly_once_under_faults(nats: NatsServer, proxy: FaultProxy) -> None:
    # write_many by every writer, read_many by every reader (the other process's too).
    run(
        nats,
        proxy,
        "batches",
        BATCH,
        batch_write,
        batch_read,
        os_reader=True,
        n=N_BATCH,
        per_call=BATCH // 2,
    )


def test_batches_meet_single_operations_exactly_once_under_faults(
    nats: NatsServer, proxy: FaultProxy
) -> None:
    # Batch readers against single writes: every value its own call, claimed by a batch.
    run(nats, proxy, "single writes, batch reads", 8, plain_write, batch_read, os_reader=False)
