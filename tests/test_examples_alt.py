"""The Alt examples run as scripts, exit 0 and print what they did."""

from __future__ import annotations

import pytest

from _support import run_example

pytestmark = pytest.mark.timeout(90)


def test_fair_multiplexer() -> None:
    out = run_example("fair_multiplexer.py")
    assert "multiplexer forwarded 600 values from 3 producers" in out
    assert "per producer: 0=200, 1=200, 2=200" in out
    assert "fair multiplexer: ok" in out


def test_fair_multiplexer_rendezvous_inputs() -> None:
    out = run_example("fair_multiplexer.py", "--producers", "5", "--count", "50", "--buffer", "0")
    assert "multiplexer forwarded 250 values from 5 producers" in out
    assert "fair multiplexer: ok" in out


def test_alt_server() -> None:
    out = run_example("alt_server.py")
    for i in range(4):
        assert f"client {i}: 100 answers checked, server served 100" in out
    assert "server answered 400 requests from 4 clients" in out
    assert "alt server: ok" in out


def test_timeout_watchdog() -> None:
    out = run_example("timeout_watchdog.py")
    assert out.count("watchdog: heartbeat ") == 5
    assert "no heartbeat for" in out
    assert "after 5 beats: worker stalled, poisoning" in out
    assert "timeout watchdog: ok" in out
