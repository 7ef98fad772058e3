"""docs/wire.md is enough to take part: a Rust program that follows only its rules
(crates/ferrocsp-net/examples/read_from_python.rs: raw async-nats, its own decoder of the value
codec) reads what Python writes, on a rendezvous and on a buffered channel, in the default
namespace and in another one, and prints each value as a Python literal that reads back equal
(types included). The reader claims each value before it takes it (docs/wire.md, "Claims of
values"), and leaves a value whose claim another reader holds."""

from __future__ import annotations

import ast
import base64
import json
import queue
import re
import shutil
import subprocess
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

import ferrocsp.net as net
from _nats import NatsServer, nats_fixture, raw_request  # noqa: F401 - nats_fixture is 'nats'

ROOT = Path(__file__).resolve().parents[1]

# The first build of the example compiles async-nats (minutes on a small machine); in
# scripts/test.sh `cargo test` has built it already and this build is a no-op.
pytestmark = pytest.mark.timeout(900)

#: Values of every type the safe codec carries, at the top level (the scalar fast path) and
#: nested, with the edges of each form: 64-bit bounds, big integers of both signs, strings
#: and bytes that need escaping.
VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    2**63 - 1,
    -(2**63),
    2**100,
    -(2**70) - 3,
    2.5,
    -0.1,
    1e300,
    "",
    "héllo ✓\n'\\\"",
    b"\x00\xff'\\ab",
    [1, "a", None, 2**64],
    (1,),
    (1, (2.0, [])),
    {"k": [1.5, None], 3: b"x", (1, 2): False},
    [[[]]],
]


def _same(a: Any, b: Any) -> bool:
    """Equal, with the same types all the way down (``1 == 1.0 == True`` is not enough)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            _same(ka, kb) and _same(va, vb)
            for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True)
        )
    return bool(a == b)


@pytest.fixture(scope="module", name="reader_exe")
def reader_exe_fixture() -> str:
    """The example, built with cargo (skipped where there is no Rust toolchain)."""
    cargo = shutil.which("cargo")
    if cargo is None:
        pytest.skip("cargo not found: the Rust example reading Python's values needs it")
    out = subprocess.run(
        [
            cargo,
            "build",
            "--quiet",
            "-p",
            "ferrocsp-net",
            "--example",
            "read_from_python",
            "--message-format=json-render-diagnostics",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=850,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    for line in out.stdout.splitlines():
        msg = json.loads(line)
        if (
            msg.get("reason") == "compiler-artifact"
            and msg.get("executable")
            and msg["target"]["name"] == "read_from_python"
        ):
            exe: str = msg["executable"]
            return exe
    raise AssertionError(f"cargo built no read_from_python executable:\n{out.stdout[-2000:]}")


class Reader:
    """The example as a child process (a context manager: killed if still running, its pipes
    closed); its stdout lines arrive on a queue, so no read blocks without a timeout."""

    def __init__(self, exe: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [exe, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            encoding="utf-8",
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.pump = threading.Thread(target=self._pump, daemon=True)
        self.pump.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _stderr(self) -> str:
        self.proc.wait(timeout=30)
        return self.proc.stderr.read() if self.proc.stderr else ""

    def line(self, timeout: float = 30) -> str:
        got = self.lines.get(timeout=timeout)
        if got is None:
            raise AssertionError(f"the reader ended early: {self._stderr()}")
        return got

    def finish(self) -> None:
        """Waits for the reader to exit by itself, successfully."""
        assert self.proc.wait(timeout=30) == 0, self._stderr()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self.pump.join(timeout=10)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


def name() -> str:
    return "w" + uuid.uuid4().hex[:12]


def js_api(url: str, subject: str, body: dict[str, Any]) -> dict[str, Any]:
    """A JetStream API request as a foreign client makes it; an error reply fails the test."""
    reply: dict[str, Any] = json.loads(raw_request(url, subject, json.dumps(body).encode()))
    assert "error" not in reply, reply
    return reply


def claimed(url: str, stream: str, root: str, channel: str) -> int:
    """How many values of `channel` have a claim in the claims stream `stream`."""
    info = js_api(
        url, f"$JS.API.STREAM.INFO.{stream}", {"subjects_filter": f"{root}.{channel}.c.*"}
    )
    return len(info["state"].get("subjects") or {})


def check(lines: list[str], expected: list[Any], other: str) -> None:
    """Each printed line reads back as the value written (the end as its description)."""
    assert len(lines) == len(expected) + 1, lines
    for line, want in zip(lines, expected, strict=False):
        got = ast.literal_eval(line)
        assert _same(got, want), f"{line!r} is not {want!r}"
    end = ast.literal_eval(lines[len(expected)])
    assert (end["end"], end["capacity"], end["channel"]) == ("reader", 0, other), end
    assert re.fullmatch(r"[0-9a-f]{32}", end["ticket"]), end


def test_a_rust_reader_takes_python_writes_on_a_rendezvous_channel(
    nats: NatsServer, reader_exe: str
) -> None:
    n, other = name(), name()
    with net.connect(nats.url) as conn:
        ch = conn.channel(n, 0)
        end = conn.channel(other, 0).reader()
        with Reader(reader_exe, nats.url, n, str(len(VALUES) + 1)) as reader:
            assert reader.line() == "ready"
            # Each write returns only once the Rust reader answered `+`.
            for v in VALUES:
                ch.write(v, timeout=20)
            ch.write([end], timeout=20)
            lines = [reader.line() for _ in range(len(VALUES) + 1)]
            reader.finish()
        # Each value was claimed (by its Csp-Id) before the reader took it.
        assert claimed(nats.url, "CLAIMS_FERROCSP", "ferrocsp", n) == len(VALUES) + 1
    lines[-1] = lines[-1].removeprefix("[").removesuffix("]")
    check(lines, VALUES, other)


def test_a_rust_reader_drains_a_buffered_channel_in_a_namespace(
    nats: NatsServer, reader_exe: str
) -> None:
    n, other = name(), name()
    with net.connect(nats.url, namespace="wire-t", pickle_key=b"k" * 32) as conn:
        ch = conn.channel(n, len(VALUES) + 2)
        end = conn.channel(other, 0).reader()
        # Written and stored before the reader exists: the values wait on the server.
        for v in VALUES:
            ch.write(v, timeout=20)
        ch.write({"e": end}, timeout=20)
        ch.write({1, 2}, timeout=20)  # no safe encoding: a signed pickle
        with Reader(reader_exe, nats.url, n, str(len(VALUES) + 2), "wire-t") as reader:
            assert reader.line() == "ready"
            lines = [reader.line() for _ in range(len(VALUES) + 2)]
            reader.finish()
        assert ch.stats().buffered == 0  # every value was taken (acknowledged) by the reader
    assert lines[-1] == "! a signed pickle (format 2): only Python can load it"
    end_line = lines[-2]
    assert end_line.startswith("{'e': ")
    assert end_line.endswith("}")
    check([*lines[:-2], end_line[len("{'e': ") : -1]], VALUES, other)


def test_a_rust_reader_leaves_a_value_another_reader_claimed(
    nats: NatsServer, reader_exe: str
) -> None:
    """A value whose id is claimed already (as after a redelivery: another reader has it) is
    acknowledged and dropped, and the next value is read."""
    n, ns = name(), "wire-c"
    root, bucket = f"ferrocsp-{ns}", f"FERROCSP-{ns}"
    claims = f"CLAIMS_{bucket}"
    with net.connect(nats.url, namespace=ns) as conn:
        ch = conn.channel(n, 4)
        ch.write("taken elsewhere", timeout=20)
        ch.write("mine", timeout=20)
        # The claims stream as docs/wire.md configures it (nobody of this namespace read yet).
        js_api(
            nats.url,
            f"$JS.API.STREAM.CREATE.{claims}",
            {
                "name": claims,
                "subjects": [f"{root}.*.c.*"],
                "max_msgs_per_subject": 1,
                "max_age": 120 * 10**9,
                "duplicate_window": 120 * 10**9,
                "retention": "limits",
                "discard": "old",
                "storage": "file",
                "num_replicas": 1,
            },
        )
        # The first value's id is its Nats-Msg-Id; claim it as another reader would.
        first = js_api(nats.url, f"$JS.API.STREAM.MSG.GET.FERROCSP-{ns}_{n}", {"seq": 1})
        headers = base64.b64decode(first["message"]["hdrs"]).decode()
        found = re.search(r"^Nats-Msg-Id: *(\S+)\r$", headers, re.MULTILINE)
        assert found is not None, headers
        ack = json.loads(raw_request(nats.url, f"{root}.{n}.c.{found.group(1)}", b""))
        assert ack.get("stream") == claims, ack
        with Reader(reader_exe, nats.url, n, "1", ns) as reader:
            assert reader.line() == "ready"
            assert reader.line() == "'mine'"
            reader.finish()
        assert ch.stats().buffered == 0  # the claimed-away value was acknowledged too
        assert claimed(nats.url, claims, root, n) == 2
