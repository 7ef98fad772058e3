"""Tracing: ``ferrocsp.trace`` / ``FERROCSP_TRACE`` record what the network did, and
``ferrocsp trace`` plots it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import ferrocsp as csp
from _kit import Kit
from ferrocsp import _trace
from ferrocsp._bench import have_matplotlib
from ferrocsp._cli import main

ROOT = Path(__file__).resolve().parents[1]
N = 25


def _events(path: Path) -> list[dict[str, Any]]:
    lines = [json.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines()]
    assert lines[0]["ev"] == "trace"
    assert isinstance(lines[0]["pid"], int)
    assert all(isinstance(e["t"], float) for e in lines)
    return lines[1:]


async def numbers(k: Kit, out: csp.Writer, n: int) -> None:
    with out:
        for i in range(n):
            await k.write(out, i)


async def total(k: Kit, inp: csp.Reader) -> int:
    return sum([v async for v in k.iter(inp)])


async def merge(k: Kit, a: csp.Reader, b: csp.Reader, out: csp.Writer) -> None:
    alt = csp.Alt(a, b)
    with out:
        for _ in range(2 * N):
            _, v = await k.select(alt)
            await k.write(out, v)


@csp.process
async def asum(inp: csp.Reader) -> int:
    s = 0
    async for v in inp:
        s += v
    return s


def _count(events: list[dict[str, Any]], **match: Any) -> int:
    return sum(1 for e in events if all(e.get(k) == v for k, v in match.items()))


@pytest.mark.timeout(30)
def test_trace_records_process_lives_and_every_communication(tmp_path: Path, k: Kit) -> None:
    backend = k.backend
    path = tmp_path / "trace.jsonl"
    a, b, c = (csp.Channel(name=f"t-{x}") for x in "abc")
    with csp.trace(path) as tr:
        assert _trace.ENABLED
        assert tr.active
        result = k.Par(
            k.process(numbers)(a.writer(), N),
            k.process(numbers)(b.writer(), N),
            k.process(merge)(a.reader(), b.reader(), c.writer()),
            k.process(total)(c.reader()),
        ).run()
    assert not tr.active
    assert not _trace.ENABLED
    assert result[3] == 2 * sum(range(N))
    events = _events(path)
    starts = Counter(e["proc"] for e in events if e["ev"] == "start")
    ends = Counter(e["proc"] for e in events if e["ev"] == "end")
    assert starts == ends == Counter({"numbers": 2, "merge": 1, "total": 1})
    assert all(e["backend"] == backend for e in events if e["ev"] in ("start", "end"))
    assert all(e["status"] == "ok" for e in events if e["ev"] == "end")
    for ch in ("t-a", "t-b"):
        assert _count(events, ev="write", chan=ch, proc="numbers") == N
        assert _count(events, ev="read", chan=ch, proc="merge", op="alt") == N
        assert _count(events, ev="retire", chan=ch, op="writer", proc="numbers") == 1
    assert _count(events, ev="write", chan="t-c", proc="merge") == 2 * N
    # 2N values, then end-of-stream (a failed read, not traced as a read).
    assert _count(events, ev="read", chan="t-c", proc="total") == 2 * N
    assert _count(events, ev="read") == 4 * N
    assert _count(events, ev="write") == 4 * N
    # Time goes forward in each thread, and each process starts before it communicates.
    by_tid: dict[Any, list[float]] = {}
    for e in events:
        by_tid.setdefault(e["tid"], []).append(e["t"])
    assert all(ts == sorted(ts) for ts in by_tid.values())
    first = {}
    for e in events:
        first.setdefault(e["proc"], e["ev"])
    assert first == {"numbers": "start", "merge": "start", "total": "start"}


@pytest.mark.timeout(30)
def test_trace_blocking_poison_and_asyncio(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    a, stop = csp.Channel(name="t-async"), csp.Channel(name="t-stop")
    kit = Kit("thread")
    with csp.trace(path):
        res = csp.Par(kit.process(numbers)(a.writer(), N), asum(a.reader())).run()
        assert res == [None, sum(range(N))]
        h = csp.Spawn(kit.process(total)(stop.reader()))
        stop.poison()
        assert h.join(10) is None  # ended by poison
    events = _events(path)
    assert _count(events, ev="start", proc="asum", backend="asyncio") == 1
    assert _count(events, ev="read", chan="t-async", proc="asum") == N
    assert _count(events, ev="write", chan="t-async", proc="numbers") == N
    assert _count(events, ev="poison", chan="t-stop", proc=None, thread="MainThread") == 1
    blocked = [e for e in events if e["ev"] == "block"]
    assert blocked
    assert all(e["op"] in ("read", "write", "alt") for e in blocked)


@pytest.mark.timeout(30)
def test_one_trace_at_a_time_and_nothing_after_stop(tmp_path: Path) -> None:
    first = csp.trace(tmp_path / "one.jsonl")
    try:
        with pytest.raises(RuntimeError, match="already being recorded"):
            csp.trace(tmp_path / "two.jsonl")
    finally:
        first.stop()
    first.stop()  # idempotent
    ch = csp.Channel(1, name="t-after")
    ch.write(1)
    ch.read()
    assert _events(tmp_path / "one.jsonl") == []
    assert not (tmp_path / "two.jsonl").exists()


@pytest.mark.timeout(60)
def test_env_var_traces_a_program_and_the_cli_plots_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "env.jsonl"
    code = (
        "import ferrocsp as csp\n"
        "from ferrocsp.builtins import Count, Sink\n"
        "ch = csp.Channel(name='env-chan')\n"
        "csp.Par(Count(ch.writer(), stop=10), Sink(ch.reader())).run()\n"
    )
    env = dict(os.environ, FERROCSP_TRACE=str(path))
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    events = _events(path)
    assert _count(events, ev="write", chan="env-chan", proc="Count") == 10
    assert _count(events, ev="read", chan="env-chan", proc="Sink") == 10
    assert {e["proc"] for e in events if e["ev"] == "end"} == {"Count", "Sink"}

    png = tmp_path / "timeline.png"
    if not have_matplotlib():  # an interpreter without the plot extra (free-threaded 3.13t)
        assert main(["trace", str(path), "-o", str(png)]) == 1
        assert "plotting needs matplotlib" in capsys.readouterr().err
        return
    assert main(["trace", str(path), "-o", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 5000


@pytest.mark.timeout(30)
def test_cli_rejects_what_is_not_a_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n", encoding="utf-8")
    assert main(["trace", str(bad), "-o", str(tmp_path / "x.png")]) == 1
    assert "bad.jsonl:1: not a JSON line" in capsys.readouterr().err


def _check_chrome(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The structure Perfetto and chrome://tracing need; returns the events."""
    assert set(doc) >= {"traceEvents"}
    events = doc["traceEvents"]
    assert isinstance(events, list)
    assert events
    tracks: dict[int, str] = {}
    depth: Counter[int] = Counter()
    last: dict[int, float] = {}
    for e in events:
        assert e["ph"] in ("M", "B", "E", "i"), e
        assert isinstance(e["pid"], int)
        assert isinstance(e["tid"], int)
        assert isinstance(e["ts"], int | float)
        if e["ph"] == "M":
            assert e["name"] == "thread_name"
            tracks[e["tid"]] = e["args"]["name"]
            continue
        assert e["tid"] in tracks  # every track is named before its first event
        assert e["ts"] >= last.get(e["tid"], 0.0)  # in time order per track
        last[e["tid"]] = e["ts"]
        if e["ph"] == "B":
            assert isinstance(e["name"], str)
            depth[e["tid"]] += 1
        elif e["ph"] == "E":
            depth[e["tid"]] -= 1
            assert depth[e["tid"]] >= 0, "an E without its B"
        else:
            assert e["s"] == "t"
            assert isinstance(e["name"], str)
    assert all(d == 0 for d in depth.values()), "a B without its E"
    return events


@pytest.mark.timeout(30)
def test_chrome_trace_event_format(tmp_path: Path) -> None:
    path = tmp_path / "trace.json"
    a = csp.Channel(name="c-nums")
    kit = Kit("thread")
    with csp.trace(path, format="chrome") as tr:
        assert tr.format == "chrome"
        res = csp.Par(kit.process(numbers)(a.writer(), N), asum(a.reader())).run()
        assert res == [None, sum(range(N))]
    events = _check_chrome(json.loads(path.read_text(encoding="utf-8")))
    names = {e["args"]["name"] for e in events if e["ph"] == "M"}
    assert {"numbers", "asum"} <= names
    lives = [e for e in events if e["ph"] == "B" and e.get("cat") == "process"]
    assert {e["name"] for e in lives} >= {"numbers", "asum"}
    assert next(e for e in lives if e["name"] == "asum")["args"]["backend"] == "asyncio"
    reads = [e for e in events if e["ph"] == "i" and e["name"] == "read c-nums"]
    writes = [e for e in events if e["ph"] == "i" and e["name"] == "write c-nums"]
    assert len(reads) == len(writes) == N
    blocked = [e for e in events if e["ph"] == "B" and e.get("cat") == "block"]
    assert all(e["name"].startswith("blocked ") for e in blocked)


def test_chrome_closes_what_the_trace_left_open() -> None:
    from ferrocsp._chrome import to_chrome

    events = [
        {"ev": "start", "t": 0.0, "proc": "p", "tid": 1, "backend": "thread"},
        {"ev": "block", "t": 0.5, "proc": "p", "tid": 1, "op": "read", "chan": "c"},
    ]
    doc = to_chrome(events, pid=42)
    out = _check_chrome(doc)
    assert [(e["ph"], e["ts"]) for e in out] == [
        ("M", 0),
        ("B", 0.0),
        ("B", 500000.0),
        ("E", 500000.0),
        ("E", 500000.0),
    ]
    assert {e["pid"] for e in out} == {42}


@pytest.mark.timeout(60)
def test_env_var_and_cli_write_chrome_traces(tmp_path: Path) -> None:
    code = (
        "import ferrocsp as csp\n"
        "from ferrocsp.builtins import Count, Sink\n"
        "ch = csp.Channel(name='env-chan')\n"
        "csp.Par(Count(ch.writer(), stop=10), Sink(ch.reader())).run()\n"
    )
    direct, lines = tmp_path / "direct.json", tmp_path / "lines.jsonl"
    for path, fmt in ((direct, "chrome"), (lines, "")):
        env = dict(os.environ, FERROCSP_TRACE=str(path), FERROCSP_TRACE_FORMAT=fmt)
        proc = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30
        )
        assert proc.returncode == 0, proc.stderr
    converted = tmp_path / "converted.json"
    assert main(["trace", str(lines), "-o", str(converted)]) == 0
    for path in (direct, converted):
        events = _check_chrome(json.loads(path.read_text(encoding="utf-8")))
        assert sum(1 for e in events if e.get("name") == "write env-chan") == 10
        assert sum(1 for e in events if e.get("name") == "read env-chan") == 10


def test_unknown_trace_format(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown trace format 'perfetto'"):
        csp.trace(tmp_path / "x.json", format="perfetto")  # type: ignore[arg-type]
    assert _trace._active is None
