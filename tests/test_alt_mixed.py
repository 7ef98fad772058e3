"""An ``Alt`` over a mix of channels shared with OS processes and in-process channels
(issue #15 item 3): exactly one guard fires, whichever side's counterpart comes, under every
policy and from every backend; nothing is lost, duplicated or left registered.

The in-process guards of such an Alt run in an engine selection linked to the Alt's cell in
shared memory (docs/design.md, "One Alt over any mix"). A plain thread drives the in-process
side's counterpart, so the Alt side can be any backend, an OS process included (its
in-process channel is then one it made itself).
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

import ferrocsp as csp
from _kit import SHARED_BACKENDS, Kit
from _os_support import backend_fixture, no_leaks
from _support import wait_until

pytestmark = pytest.mark.timeout(60)
backend = backend_fixture(SHARED_BACKENDS)
__all__ = ["no_leaks"]

N = 60


@csp.process(backend="os")
def os_write(out: csp.Writer, n: int) -> None:
    for i in range(n):
        out.write(("shared", i))


@csp.process(backend="os")
def os_read_until_none(inp: csp.Reader) -> list[Any]:
    return list(iter(inp.read, None))


@csp.process(backend="os")
def os_touch(inp: csp.Reader) -> None:
    """Takes a channel into an OS process (so it moves to shared memory), and does nothing."""


async def collect_mixed(k: Kit, shared: csp.Channel, n: int) -> list[Any]:
    """Reads ``2 n`` values through one Alt over ``shared`` and an in-process channel that a
    thread of this process writes ``n`` values to, cycling through the three policies."""
    local = csp.Channel(name="local")
    feeder = threading.Thread(target=lambda: [local.write(("local", i)) for i in range(n)])
    feeder.start()
    alt = csp.Alt(shared, local)
    choose = (k.select, k.pri_select, k.fair_select)
    got = []
    for j in range(2 * n):
        guard, value = await choose[j % 3](alt)
        assert guard is (local if value[0] == "local" else shared)
        got.append(value)
    feeder.join()
    st = local.stats()
    assert (st.readers_waiting, st.writers_waiting) == (0, 0)
    return got


async def offer_mixed(k: Kit, shared: csp.Channel, n: int) -> tuple[list[Any], list[int]]:
    """Offers each of ``n`` values on ``shared`` and on an in-process channel at once (a
    thread of this process reads that one); returns what the thread read, and which guard
    fired each time (0 shared, 1 local)."""
    local = csp.Channel(name="local")
    read: list[Any] = []
    reader = threading.Thread(target=lambda: read.extend(iter(local.read, None)))
    reader.start()
    fired = []
    for i in range(n):
        out_shared, out_local = csp.Output(shared, i), csp.Output(local, i)
        guard, _ = await k.select(csp.Alt(out_shared, out_local))
        fired.append(0 if guard is out_shared else 1)
    await k.write(shared, None)
    local.write(None)
    reader.join()
    return read, fired


def test_inputs_from_both_sides_each_arrive_once(k: Kit) -> None:
    shared = csp.Channel(name="shared")
    res = csp.Par(os_write(shared.writer(), N), k.process(collect_mixed)(shared, N)).run()
    got = res[1]
    expected = [("shared", i) for i in range(N)] + [("local", i) for i in range(N)]
    assert sorted(got) == sorted(expected)
    # Each side's values arrive in the order written.
    assert [v for v in got if v[0] == "local"] == [("local", i) for i in range(N)]
    assert [v for v in got if v[0] == "shared"] == [("shared", i) for i in range(N)]


def test_outputs_to_both_sides_each_sent_once(k: Kit) -> None:
    shared = csp.Channel(name="shared")
    res = csp.Par(os_read_until_none(shared.reader()), k.process(offer_mixed)(shared, N)).run()
    remote, (local, fired) = res
    assert sorted(remote + local) == list(range(N))
    assert len(remote) == fired.count(0)
    assert len(local) == fired.count(1)


def shared_channel(capacity: int = 0, name: str = "shared") -> csp.Channel:
    ch = csp.Channel(capacity, name=name)
    csp.Par(os_touch(ch.reader())).run()
    return ch


def test_priority_across_the_mix() -> None:
    shared, local = shared_channel(1), csp.Channel(1, name="local")
    shared.write("s")
    local.write("l")
    assert csp.Alt(shared, local).pri_select() == (shared, "s")
    shared.write("s")
    assert csp.Alt(local, shared).pri_select() == (local, "l")
    assert csp.Alt(local, shared).pri_select() == (shared, "s")


def test_timeout_and_skip_withdraw_both_sides() -> None:
    shared, local = shared_channel(), csp.Channel(name="local")
    t = csp.Timeout(0.05)
    assert csp.Alt(shared, csp.Output(local, 1), t).select() == (t, None)
    skip = csp.Skip()
    assert csp.Alt(csp.Output(shared, 1), local, skip).select() == (skip, None)
    for ch in (shared, local):
        st = ch.stats()
        assert (st.readers_waiting, st.writers_waiting, st.buffered) == (0, 0, 0)


def test_poisoned_in_process_channel_wakes_a_waiting_mixed_alt() -> None:
    shared, local = shared_channel(), csp.Channel(name="local")

    def poison() -> None:
        wait_until(lambda: local.stats().readers_waiting == 1, what="the Alt waits")
        local.poison()

    t = threading.Thread(target=poison)
    t.start()
    with pytest.raises(csp.ChannelPoisoned):
        csp.Alt(shared, local).select()
    t.join()
    assert shared.stats().readers_waiting == 0


def test_poisoned_shared_channel_wakes_a_waiting_mixed_alt() -> None:
    shared, local = shared_channel(), csp.Channel(name="local")

    def poison() -> None:
        wait_until(lambda: local.stats().readers_waiting == 1, what="the Alt waits")
        shared.poison()

    t = threading.Thread(target=poison)
    t.start()
    with pytest.raises(csp.ChannelPoisoned):
        csp.Alt(shared, local).select()
    t.join()
    assert local.stats().readers_waiting == 0


@csp.process(backend="os")
def os_write_one(out: csp.Writer, value: Any) -> None:
    out.write(value)


def test_in_process_channel_moving_under_a_waiting_mixed_alt() -> None:
    # The Alt's in-process channel is sent to an OS process while the Alt waits on it: the
    # Alt chooses again over it where it is now, and gets what that process writes.
    shared, local = shared_channel(), csp.Channel(name="local")
    h: list[csp.Handle[Any]] = []

    def send() -> None:
        wait_until(lambda: local.stats().readers_waiting == 1, what="the Alt waits")
        h.append(csp.Par(os_write_one(local.writer(), "moved")).start())

    t = threading.Thread(target=send)
    t.start()
    assert csp.Alt(shared, local).select() == (local, "moved")
    t.join()
    assert h[0].join(timeout=20) == [None]
