"""A real nats-server with JetStream for the networked-channel tests.

``NatsServer`` starts ``nats-server -js`` on 127.0.0.1 on a free port with its store in a
temporary directory, waits until it accepts connections, and stops it (SIGTERM, then SIGKILL)
afterwards; ``restart()`` keeps the port and the store (JetStream keeps buffered values).
Fixtures: ``nats`` (one server per test module) and ``nats_fresh`` (one per test); a test
module imports ``nats_fixture`` / ``nats_fresh_fixture`` to use them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from _support import need_tool

ROOT = Path(__file__).resolve().parents[1]

#: Timeout for a helper process / server start.
START = 10.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


#: The pids of the servers started here: test fixtures, not processes the code under test
#: left behind (``no_leaks`` in tests/_os_support.py does not count them).
SERVER_PIDS: set[int] = set()


class NatsServer:
    """One nats-server process with JetStream on 127.0.0.1."""

    def __init__(self, store: Path, extra: tuple[str, ...] = ()) -> None:
        """``extra``: more command-line arguments (e.g. ``--user``/``--pass``)."""
        exe = need_tool(
            "nats-server",
            "apt-get install nats-server (Debian/Ubuntu), or a release from "
            "https://github.com/nats-io/nats-server/releases; as root, scripts/nats.sh "
            "install does it",
        )
        self.exe = exe
        self.store = store
        self.extra = extra
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = open(self.store / "nats.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [
                self.exe,
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-sd",
                str(self.store / "js"),
                *self.extra,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        SERVER_PIDS.add(self.proc.pid)
        log.close()
        deadline = time.monotonic() + START
        while not _listening(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(
                    f"nats-server did not start: {(self.store / 'nats.log').read_text()[-2000:]}"
                )
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture(scope="module", name="nats")
def nats_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path_factory.mktemp("nats"))
    yield server
    server.stop()


@pytest.fixture(name="nats_fresh")
def nats_fresh_fixture(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path)
    yield server
    server.stop()


def spawn(code: str, *args: str) -> subprocess.Popen[str]:
    """Runs ``code`` in a new Python process (the venv's), text pipes, args in ``sys.argv``."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


def raw_request(url: str, subject: str, payload: bytes, timeout: float = START) -> bytes:
    """One request/reply in the NATS text protocol on a plain socket: lets a test act on the
    server (e.g. the JetStream API) the way a foreign client would, without ferrocsp."""
    host, port = url.removeprefix("nats://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        f = s.makefile("rb")
        f.readline()  # INFO
        inbox = "_INBOX.ferrocsp-test"
        s.sendall(
            b'CONNECT {"verbose":false,"pedantic":false}\r\n'
            + f"SUB {inbox} 1\r\nPUB {subject} {inbox} {len(payload)}\r\n".encode()
            + payload
            + b"\r\n"
        )
        while True:
            line = f.readline()
            if not line:
                raise ConnectionError(f"{url} closed the connection before replying")
            if line.startswith(b"PING"):
                s.sendall(b"PONG\r\n")
            elif line.startswith(b"MSG "):
                size = int(line.split()[-1])
                return f.read(size + 2)[:-2]
            elif line.startswith(b"-ERR"):
                raise ConnectionError(line.decode().strip())
