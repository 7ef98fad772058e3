"""The ``ferrocsp`` command: ``demo`` and ``bench --quick`` run end to end."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import ferrocsp
from ferrocsp import _backends, _bench
from ferrocsp._bench import PACKAGED, BenchOptions, Progress, have_matplotlib, parse_alt
from ferrocsp._cli import main

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
    assert "(3/3)" in proc.stderr  # progress: the three parts, and a bar over every step
    assert "[bench] [########################] 100% " in proc.stderr
    for section in ("python", "asyncio", "coroutine", "greenlet"):  # markers reach the bar
        assert re.search(rf"\] +\d+% \d+/\d+ commstime: {section} \(", proc.stderr), section
    assert len(re.findall(r"\d+/\d+ spawn: ", proc.stderr)) == 3 * len(_bench._spawn_ways())
    assert "still running" not in proc.stderr
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


def test_version() -> None:
    proc = _ferrocsp("--version", timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"ferrocsp {ferrocsp.__version__}"


def test_bench_writes_to_a_new_temporary_folder_by_default(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[BenchOptions] = []
    monkeypatch.setattr(_bench, "run", seen.append)
    assert main(["bench", "--quick"]) == 0
    (opts,) = seen
    try:
        assert opts.out.is_dir()
        assert not any(opts.out.iterdir())  # new and empty
        assert opts.out.name.startswith("ferrocsp-bench-")
        assert not opts.out.resolve().is_relative_to(ROOT)  # never into the checkout
        assert str(opts.out) in capsys.readouterr().err
    finally:
        opts.out.rmdir()


def test_installed_scripts_run_the_python_rows_only() -> None:
    assert (PACKAGED / "commstime" / "run.py").is_file()
    assert (PACKAGED / "alt" / "run.py").is_file()
    opts = BenchOptions(out=Path("unused"), bench_dir=PACKAGED)
    assert not opts.with_rust
    assert not opts.with_pycsp
    full = BenchOptions(out=Path("unused"), bench_dir=ROOT / "bench")
    assert full.with_rust
    assert full.with_pycsp


def test_rust_rows_need_a_source_tree(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--quick", "--rust", "--bench-dir", str(PACKAGED), "--out", "x"])
    assert exc.value.code == 2
    assert "--rust needs ferrocsp's source tree" in capsys.readouterr().err


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal_redraws_one_line() -> None:
    out = _Tty()
    bar = Progress(4, stream=out, width=8)
    for what in ("a", "b", "c", "d"):
        bar.step(what)
    bar.log("a message")
    bar.close()
    text = out.getvalue()
    assert "\r\033[K[bench] [##......]  25% 1/4 b" in text
    assert "\r\033[Ka message\n" in text  # above the bar, which is redrawn after it
    assert text.endswith("[bench] [########] 100% 4/4 done (0 s)\n")
    assert text.count("\n") == 2  # the message and the final bar; the rest is redrawn


def test_progress_bar_in_a_log_prints_a_line_per_step() -> None:
    out = io.StringIO()
    bar = Progress(2, stream=out, width=4)
    bar.step("first")
    bar.step("second")
    bar.close()
    lines = out.getvalue().splitlines()
    assert [line.split(" (")[0] for line in lines] == [
        "[bench] [....]   0% 0/2 first",
        "[bench] [##..]  50% 1/2 second",
        "[bench] [####] 100% 2/2 done",
    ]


def test_parse_alt_lines() -> None:
    text = "machine: x\nalt impl=python-select us_per_op=7.5000 n=10 runs=1 min=1 max=2\n"
    text += "alt impl=engine-read us_per_op=1.25 n=100 runs=1\n"
    assert parse_alt(text) == {"python-select": 7.5, "engine-read": 1.25}
