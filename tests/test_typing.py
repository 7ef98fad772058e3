"""Typing: the public API's types are pinned by tests/typing/check_types.py, which mypy
--strict must accept (every ``assert_type`` holds, every pinned error still happens); and the
run-time side of that typing: ``Channel[int]`` subscripts, ``__exit__`` returns None."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

import ferrocsp as csp

ROOT = Path(__file__).resolve().parents[1]
CHECKS = ROOT / "tests" / "typing" / "check_types.py"


@pytest.mark.timeout(300)
def test_mypy_accepts_the_pinned_types(tmp_path: Path) -> None:
    pytest.importorskip("mypy", reason="mypy is a dev tool: pip install 'ferrocsp[dev]'")
    env = dict(os.environ, MYPYPATH=str(ROOT / "python"))
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path), str(CHECKS)],
        capture_output=True,
        text=True,
        timeout=280,
        cwd=ROOT,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Success" in proc.stdout


@pytest.mark.parametrize("cls", [csp.Channel, csp.Reader, csp.Writer])
def test_channel_types_subscript_at_run_time(cls: type) -> None:
    alias = cls[int]  # type: ignore[index]
    assert isinstance(alias, types.GenericAlias)
    assert alias.__origin__ is cls
    assert alias.__args__ == (int,)
    assert cls[int] == cls[int]  # type: ignore[index]


def test_a_subscripted_channel_makes_a_channel() -> None:
    ch = csp.Channel[int](1, name="typed")
    assert type(ch) is csp.Channel
    ch.write(7)
    assert ch.read() == 7


def test_end_exit_returns_none_and_never_swallows() -> None:
    ch: csp.Channel[int] = csp.Channel(1)
    w = ch.writer()
    assert w.__exit__(None, None, None) is None
    assert w.retired
    r = ch.reader()
    with pytest.raises(ValueError, match="inside"), r:
        raise ValueError("inside")
    assert r.retired
