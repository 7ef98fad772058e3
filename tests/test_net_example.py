"""examples/net_farm.py: producer, workers and collector as separate OS processes that meet
only through the server (here the test fixture's nats-server)."""

from __future__ import annotations

import re

import pytest

import _support
from _nats import NatsServer, nats_fixture  # noqa: F401 - nats_fixture is the fixture 'nats'

pytestmark = pytest.mark.timeout(120)


def test_net_farm(nats: NatsServer) -> None:
    out = _support.run_example("net_farm.py", "--url", nats.url, "--workers", "3", "--jobs", "12")
    assert "producer: dealt 12 jobs" in out
    assert "collector: 12 results, each job exactly once, sum of squares 506" in out
    done = [int(n) for n in re.findall(r"worker \d: (\d+) jobs", out)]
    assert len(done) == 3
    assert sum(done) == 12
    assert "net_farm: ok (3 workers, 12 jobs, 5 OS processes)" in out
