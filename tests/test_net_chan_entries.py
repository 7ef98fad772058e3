"""A connection's per-name entries stay bounded by its open channels: a long-lived process that
opens a fresh channel name per task (the soak's lane: one per round) must not grow with every
name it ever opened (it did, ~1.8 KB per round: each dropped channel kept its entry and, through
the entry's weak reference, the channel's whole allocation)."""

from __future__ import annotations

import gc
import uuid

import pytest

import ferrocsp.net as net
from _nats import NatsServer, nats_fixture  # noqa: F401 - nats_fixture is the fixture 'nats'

pytestmark = pytest.mark.timeout(120)

ROUNDS = 60


def one_round(c: net.Connection, number: int) -> None:
    ch = c.channel(f"t{uuid.uuid4().hex[:8]}-{number}", 1)
    with ch.writer() as w, ch.reader() as r:
        w.write(number)
        assert r.read() == number


def test_dropped_channels_leave_no_entry(nats: NatsServer) -> None:
    with net.connect(nats.url) as c:
        for i in range(ROUNDS):
            one_round(c, i)
        gc.collect()
        entries, live = c._native._chan_entries()
        # No channel is held any more; the last one's entry may wait for the next open.
        assert live == 0
        assert entries <= 1, f"{entries} entries for {ROUNDS} channels opened and dropped"


def test_open_channels_keep_their_entry(nats: NatsServer) -> None:
    with net.connect(nats.url) as c:
        kept = [c.channel(f"k{uuid.uuid4().hex[:8]}-{i}", 0) for i in range(5)]
        for i in range(ROUNDS // 4):
            one_round(c, i)
        gc.collect()
        entries, live = c._native._chan_entries()
        assert live == len(kept)
        assert entries <= len(kept) + 1
        # The kept channels are still the same channels (one per name): reopening finds them.
        assert c._native._chan_entries() == (entries, live)
        c.channel(kept[0].name, 0)
        assert c._native._chan_entries()[1] == len(kept)
