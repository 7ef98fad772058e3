"""The classic examples run as scripts with small sizes, exit 0 and print what they did."""

from __future__ import annotations

import re

import pytest

import _support
import ferrocsp._backends

BACKENDS = [b for b in ferrocsp._backends.AVAILABLE if b != "asyncio"]

pytestmark = pytest.mark.timeout(90)


def run_example(name: str, *args: str) -> str:
    return _support.run_example(name, *args, quiet=True)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("parallel", [False, True])
def test_commstime(backend: str, parallel: bool) -> None:
    args = ["--cycles", "300", "--backend", backend] + (["--parallel"] if parallel else [])
    out = run_example("commstime.py", *args)
    kind = "parallel" if parallel else "sequential"
    assert re.search(
        rf"commstime \({backend} backend, {kind} Delta\): 300 cycles, 1200 communications, "
        r"\d+\.\d\d µs per communication",
        out,
    ), out
    assert "commstime: ok" in out


def test_sieve() -> None:
    out = run_example("sieve.py", "--count", "30")
    assert "first primes: 2 3 5 7 11 13 17 19 23 29 31 37 41 43 47 53 59 61 67 71" in out
    assert "the 30th prime is 113" in out
    assert "30 filter processes spawned, one per prime, all ended by retire" in out
    assert "sieve: ok" in out


def test_sieve_default() -> None:
    out = run_example("sieve.py")
    assert "the 100th prime is 541" in out


@pytest.mark.parametrize("mode", [[], ["--ordered"]])
def test_dining_philosophers(mode: list[str]) -> None:
    out = run_example("dining_philosophers.py", "-n", "5", "--meals", "5", *mode)
    for i in range(5):
        assert f"philosopher {i} ate 5 meals" in out
    assert "no deadlock: every philosopher ate 5 meals, forks used 10 times" in out
    if not mode:
        assert "a butler seating at most 4" in out
        assert re.search(r"the butler seated at most [1-4] at once", out), out
    assert "dining philosophers: ok" in out


def test_dining_philosophers_deadlock_is_detected() -> None:
    out = run_example("dining_philosophers.py", "--deadlock", "-n", "4")
    assert "ferrocsp detected the deadlock:" in out
    assert "Deadlock: " in out
    assert "wait forever" in out
    assert "dining philosophers: ok" in out


def test_montecarlo_farm() -> None:
    out = run_example("montecarlo_farm.py", "--workers", "3", "--jobs", "12", "--samples", "4000")
    assert "3 workers did 12 jobs of 4000 points: 48000 points" in out
    match = re.search(r"pi ~ (\d\.\d+) \(error (\d\.\d+)\)", out)
    assert match, out
    assert abs(float(match[1]) - 3.14159) < 0.05
    jobs = [int(n) for n in re.findall(r"\d=(\d+)", out.split("jobs per worker: ")[1])]
    assert sum(jobs) == 12
    assert "montecarlo farm: ok" in out


def test_mobile_server() -> None:
    out = run_example("mobile_server.py", "--clients", "3", "--requests", "10")
    assert "an end sent over a channel arrives as the same object: True" in out
    for i in range(3):
        assert re.search(rf"client {i}: 10 answers checked on private session \d", out), out
    assert "server ran 3 private sessions, which served 30 requests" in out
    assert "mobile server: ok" in out


def test_poison_pipeline() -> None:
    out = run_example("poison_pipeline.py", "--take", "5")
    assert "consumer took [1, 9, 25, 49, 81]" in out
    assert "poisoned channels: a, b, c, d, e" in out
    assert "ValueError('cannot handle 7'), in process 'Map'" in out
    assert "Sink counted 5 values; retired channels: a, b, c" in out
    assert "poison pipeline: ok" in out


def test_asyncio_channels() -> None:
    out = run_example("asyncio_channels.py", "--lines", "300")
    assert "read 300 lines from a file with asyncio.to_thread" in out
    assert "tally (async def) counted 300 lines and 1497 words" in out
    assert re.search(r"the heartbeat \(async def\) beat \d+ times meanwhile", out), out
    assert "asyncio channels: ok" in out
