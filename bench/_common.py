"""What every ``bench/*/run.py`` shares: running under the project's ``.venv``, and the JSON
report.

Invariant: the benchmark scripts stay runnable as plain files (``python bench/x/run.py``);
they import this module by putting ``bench/`` first on ``sys.path``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"


def reexec_in_venv(script: str) -> None:
    """Re-runs ``script`` under the project's .venv when this Python lacks ferrocsp."""
    try:
        import ferrocsp  # noqa: F401
    except ImportError:
        in_venv = Path(sys.prefix).resolve() == VENV_PYTHON.parents[1].resolve()
        if VENV_PYTHON.exists() and not in_venv:
            os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), script, *sys.argv[1:]])


def write_json(path: Path, doc: dict[str, Any]) -> None:
    """Writes a benchmark's report (``--json PATH``) and says where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nwrote {path}")
