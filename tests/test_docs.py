"""Every Python example in the documentation runs, and prints what the page says it prints.

The pages listed in ``EXECUTED`` are scanned for fenced ```` ```python ```` blocks; each one
is a complete program, run in a fresh interpreter (so examples cannot lean on each other)
with a timeout. Conventions, in the markdown source:

- a ```` ```text ```` block right after a Python block (nothing but blank lines between) is
  its expected standard output, compared line by line;
- ``<!-- test: deadlock -->`` on the line before a block marks an example that deadlocks
  (the broken-shutdown examples): it must end, well within the timeout, with ferrocsp's
  ``Deadlock`` report on standard error (after printing what the ``text`` block says);

The other pages (comparison, performance) hold code for other libraries and generated
content: they are not executed, but the site's build (``mkdocs build --strict`` in
scripts/test.sh) checks their links.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
EXECUTED = [DOCS / "index.md", DOCS / "tutorial.md", DOCS / "semantics.md", ROOT / "README.md"]
RUN_TIMEOUT = 30.0

_FENCE = re.compile(r"^```(\w*)\s*$")
_MARK = re.compile(r"^<!--\s*test:\s*(\w+).*-->\s*$")


@dataclass
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    code: str
    mark: str | None = None  # "deadlock"
    expected: str | None = None

    @property
    def id(self) -> str:
        return f"{self.page.name}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The Python blocks of a markdown page, with their marks and expected output."""
    lines = page.read_text(encoding="utf-8").splitlines()
    fenced: list[tuple[int, str, str, str | None, int]] = []  # start, lang, body, mark, end
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        start, lang = i, m.group(1)
        j = i + 1
        while j < len(lines) and lines[j].strip() != "```":
            j += 1
        mark = None
        k = start - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        if k >= 0 and (mm := _MARK.match(lines[k].strip())):
            mark = mm.group(1)
        fenced.append((start, lang, "\n".join(lines[start + 1 : j]) + "\n", mark, j))
        i = j + 1
    out: list[Block] = []
    for n, (start, lang, body, mark, end) in enumerate(fenced):
        if lang != "python":
            continue
        block = Block(page, start + 1, body, mark)
        if n + 1 < len(fenced):
            nstart, nlang, nbody, _, _ = fenced[n + 1]
            between = lines[end + 1 : nstart]
            if nlang == "text" and all(not s.strip() for s in between):
                block.expected = nbody
        out.append(block)
    return out


ALL = [b for page in EXECUTED for b in blocks(page)]


def _run(block: Block, timeout: float) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, "-c", block.code],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
        check=False,
    )


def _lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.strip().splitlines()]


def test_pages_have_examples() -> None:
    for page in (DOCS / "tutorial.md", DOCS / "semantics.md"):
        assert len(blocks(page)) >= 5, f"{page.name}: expected runnable examples"
    assert any(b.mark == "deadlock" for b in ALL), "the broken-shutdown example is missing"


@pytest.mark.timeout(RUN_TIMEOUT + 10)
@pytest.mark.parametrize("block", [b for b in ALL if b.mark != "deadlock"], ids=lambda b: b.id)
def test_example_runs(block: Block) -> None:
    proc = _run(block, RUN_TIMEOUT)
    assert proc.returncode == 0, f"{block.id} failed:\n{proc.stdout}\n{proc.stderr}"
    if block.expected is not None:
        assert _lines(proc.stdout) == _lines(block.expected), f"{block.id}: output differs"


@pytest.mark.timeout(RUN_TIMEOUT + 10)
@pytest.mark.parametrize("block", [b for b in ALL if b.mark == "deadlock"], ids=lambda b: b.id)
def test_example_deadlocks(block: Block) -> None:
    """The examples that the docs say deadlock are reported as such (instead of hanging)."""
    proc = _run(block, RUN_TIMEOUT)
    assert proc.returncode != 0, f"{block.id} is marked as deadlocking but succeeded"
    assert "Deadlock: " in proc.stderr, f"{block.id}: no Deadlock report:\n{proc.stderr}"
    if block.expected is not None:  # what it printed before it deadlocked
        assert _lines(proc.stdout) == _lines(block.expected), f"{block.id}: output differs"


def test_performance_page_is_committed() -> None:
    page = DOCS / "performance" / "index.md"
    assert page.is_file(), "run `ferrocsp bench` to generate docs/performance/"
    text = page.read_text(encoding="utf-8")
    assert "Generated by `ferrocsp bench`" in text
    assert "µs/communication" in text
    for png in re.findall(r"\]\(([\w.-]+\.png)\)", text):
        assert (DOCS / "performance" / png).is_file(), f"missing plot {png}"


def test_nav_lists_every_page() -> None:
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for page in DOCS.rglob("*.md"):
        rel = page.relative_to(DOCS).as_posix()
        assert rel in nav, f"docs/{rel} is not in mkdocs.yml's nav"


def test_api_page_lists_every_public_name() -> None:
    import ferrocsp

    api = (DOCS / "api.md").read_text(encoding="utf-8")
    missing = [n for n in ferrocsp.__all__ if f"::: ferrocsp.{n}\n" not in api]
    assert not missing, f"add to docs/api.md: {', '.join(f'::: ferrocsp.{n}' for n in missing)}"
