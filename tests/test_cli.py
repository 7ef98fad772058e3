"""The ``ferrocsp`` command: ``demo`` and ``bench --quick`` run end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ferrocsp import _backends
from ferrocsp._bench import have_matplotlib, parse_alt

ROOT = Path(__file__).resolve().parents[1]


def _ferrocsp(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ferrocsp", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )


@pytest.mark.timeout(60)
def test_demo() -> None:
    proc = _ferrocsp("demo", "--cycles", "2000", timeout=50)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for backend in _backends.AVAILABLE:
        if backend != "os":
            assert f"   {backend} " in out, f"no {backend} row in:\n{out}"
    assert out.count("us per communication") >= 2
    assert "stopped by poison" in out
    assert "where to go next" in out


@pytest.mark.timeout(150)
def test_bench_quick(tmp_path: Path) -> None:
    out = tmp_path / "perf"
    proc = _ferrocsp("bench", "--quick", "--out", str(out), timeout=140)
    assert proc.returncode == 0, proc.stderr
    assert "(3/3)" in proc.stderr  # progress
    page = (out / "index.md").read_text(encoding="utf-8")
    assert "| python: ferrocsp" in page
    assert "Alt.select()" in page
    assert "N = 100" in page
    assert "OS-process backend" in page  # says why that plot is missing
    data = json.loads((out / "results.json").read_text())
    ferro = next(r for r in data["commstime"]["results"] if r["key"] == "py-ferrocsp")
    assert ferro["us_per_comm"] > 0
    assert not any(r["key"].startswith("rust-") for r in data["commstime"]["results"])
    assert data["alt"]["python"]["select"] > 0
    if have_matplotlib():
        for png in ("commstime.png", "alt.png", "spawn.png"):
            assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
            assert f"]({png})" in page
    else:
        assert "matplotlib" in proc.stderr


def test_bench_outside_a_checkout(tmp_path: Path) -> None:
    proc = _ferrocsp("bench", "--quick", "--bench-dir", str(tmp_path), timeout=30)
    assert proc.returncode == 2
    assert "source tree" in proc.stderr


def test_parse_alt_lines() -> None:
    text = "machine: x\nalt impl=python-select us_per_op=7.5000 n=10 runs=1 min=1 max=2\n"
    text += "alt impl=engine-read us_per_op=1.25 n=100 runs=1\n"
    assert parse_alt(text) == {"python-select": 7.5, "engine-read": 1.25}
