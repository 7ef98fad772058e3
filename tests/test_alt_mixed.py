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


# -- the policy's order across the mix ---------------------------------------------------------
# Each Alt below runs with its guards' readiness fixed before it starts (values buffered, room
# or none), so which guard the policy must choose is known, whatever the timing.


def drain(ch: csp.Channel) -> Any:
    """What ``ch`` holds (None if nothing)."""
    try:
        return ch.read_nowait()
    except csp.WouldBlock:
        return None


async def interleaved_choices(k: Kit, a: csp.Channel, c: csp.Channel) -> list[Any]:
    """Priority and fair choices over guards whose transports alternate: ``a`` and ``c`` are
    shared (capacity 1), ``b`` and ``d`` in-process channels this body makes (capacity 1).
    Returns what each selection chose."""
    b, d = csp.Channel(1, name="b"), csp.Channel(1, name="d")
    got: list[Any] = []
    # [local b, shared a, local d], a and d ready: a (a local guard comes first, yet a
    # shared one of higher priority than the other local one is ready).
    await k.write(a, "a")
    d.write_nowait("d")
    got.append((await k.pri_select(csp.Alt(b, a, d)))[1])
    # [shared a, local b, shared c], b and c ready (d still holds "d"): b.
    b.write_nowait("b")
    await k.write(c, "c")
    got.append((await k.pri_select(csp.Alt(a, b, c)))[1])
    # Output guards too: [Output to full local d, Output to shared a (room), Output to local
    # b (room)]: the shared one.
    out_d, out_a, out_b = csp.Output(d, 1), csp.Output(a, 2), csp.Output(b, 3)
    guard, _ = await k.pri_select(csp.Alt(out_d, out_a, out_b))
    got.append("out a" if guard is out_a else "out b" if guard is out_b else "out d")
    got.append(tuple(map(drain, (a, b, c, d))))
    # Fair rotation over [shared a, local b, shared c, local d]: a first; then, with c and d
    # ready, the rotation starts after a at b (not ready): c; then d.
    fair = csp.Alt(a, b, c, d)
    await k.write(a, "a")
    got.append((await k.fair_select(fair))[1])
    await k.write(c, "c")
    d.write_nowait("d")
    got.append((await k.fair_select(fair))[1])
    got.append((await k.fair_select(fair))[1])
    for ch in (a, b, c, d):
        st = ch.stats()
        got.append((st.readers_waiting, st.writers_waiting, st.buffered))
    return got


def test_policy_order_is_exact_across_interleaved_transports(k: Kit) -> None:
    a, c = shared_channel(1, "a"), shared_channel(1, "c")
    got = csp.Par(k.process(interleaved_choices)(a, c)).run()[0]
    assert got[:7] == ["a", "b", "out a", (2, None, "c", "d"), "a", "c", "d"]
    assert got[7:] == [(0, 0, 0)] * 4


def test_random_choice_is_uniform_over_the_merged_order() -> None:
    # [local b (never ready), shared a, local d], a and d ready: each is the first ready guard
    # of half the random orders. (Trying the guards group by group chose a in 1/3 of them.)
    a = shared_channel(1, "a")
    b, d = csp.Channel(1, name="b"), csp.Channel(1, name="d")
    alt = csp.Alt(b, a, d)
    a.write("a")
    d.write("d")
    n = 1000
    chose_a = 0
    for _ in range(n):
        guard, value = alt.select()
        if guard is a:
            chose_a += 1
            a.write("a")
        else:
            assert (guard, value) == (d, "d")
            d.write("d")
    # Binomial(1000, 1/2): 6 standard deviations either side.
    assert 405 <= chose_a <= 595, chose_a


def test_an_offer_to_a_blocked_reader_comes_before_a_later_local_guard() -> None:
    # A shared rendezvous Output whose reader is blocked in read() counts as ready: a ready
    # in-process guard after it does not fire.
    shared, local = shared_channel(), csp.Channel(1, name="local")
    local.write("l")
    got: list[Any] = []
    reader = threading.Thread(target=lambda: got.append(shared.read()), daemon=True)
    reader.start()
    wait_until(lambda: shared.stats().readers_waiting == 1, what="the reader waits")
    out = csp.Output(shared, "offer")
    assert csp.Alt(out, local).pri_select() == (out, None)
    reader.join(timeout=20)
    assert got == ["offer"]
    assert local.read_nowait() == "l"
