"""PyCSP 0.9.2's and python-csp 0.1's own scripts, unchanged, on the compat layers: every
script that passes on the real library passes on the compat layer (bench/compat/upstream.py).

Slow (minutes) and needs the network once (pip fetches the sdists into a cache outside the
repository): runs only with FERROCSP_SLOW=1 or ``-m slow``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_upstream_scripts_pass_on_compat_wherever_they_pass_on_the_original(
    tmp_path: Path,
) -> None:
    report = tmp_path / "upstream.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "compat" / "upstream.py"), "--json", str(report)],
        capture_output=True,
        text=True,
        check=False,
    )
    rows = json.loads(report.read_text())
    regressions = [
        f"{r['lib']} {r['script']}: original {r['original']}, compat {r['compat']}"
        for r in rows
        if r["original"].startswith("pass") and not r["compat"].startswith("pass")
    ]
    assert not regressions, "\n".join(regressions) + "\n" + proc.stdout
    assert proc.returncode == 0, proc.stderr
    assert sum(r["compat"].startswith("pass") for r in rows) >= 40  # the table is not empty
