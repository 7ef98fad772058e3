"""The newcomer's first command, tried: scripts/check-noroot.sh clones this checkout, hides
root rights, Graphviz and nats-server behind stand-ins on PATH, and runs ./scripts/demo.sh
(a release build: slow, so only with FERROCSP_SLOW=1 or -m slow)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_demo_runs_without_root_graphviz_or_nats(tmp_path: Path) -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and a git checkout to clone")
    proc = subprocess.run(
        [str(ROOT / "scripts" / "check-noroot.sh"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=1780,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok: the demo ran as uid 1000" in proc.stdout
    assert not (tmp_path / "ferrocsp" / ".venv" / "bin" / "pytest").exists()
