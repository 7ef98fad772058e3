"""A nats-server with JetStream for one benchmark run (scripts/nats.sh: 127.0.0.1, a free
port, its store in a temporary directory that is removed afterwards)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

NATS_SH = str(Path(__file__).resolve().parents[2] / "scripts" / "nats.sh")


@contextmanager
def nats_server() -> Iterator[str]:
    """Starts the server; yields its URL; stops it."""
    store = Path(tempfile.mkdtemp(prefix="ferrocsp-bench-net-"))
    try:
        url = subprocess.run(
            [NATS_SH, "start", str(store)], check=True, capture_output=True, text=True
        ).stdout.strip()
        yield url
    finally:
        subprocess.run([NATS_SH, "stop", str(store)], check=False)
        shutil.rmtree(store, ignore_errors=True)
