"""Channels in an asyncio program: ``async def`` processes, a thread process, and a task that
reads a file with ``asyncio.to_thread``, all on one event loop.

::

    file --(to_thread)--> read_lines --lines--> Map(count_words) --counts--> tally
         (an asyncio task)                      (a builtin, on a thread)     (async def)
                                                                               | stop
                                                                               v
                                                                 heartbeat (async def)

- ``read_lines`` is a plain asyncio task, not a process: it reads the file line by line
  with ``await asyncio.to_thread(f.readline)`` (the blocking read happens on a worker
  thread; the loop keeps running) and writes each line with ``await lines.awrite(line)``.
  At the end of the file it retires its writer end.
- ``Map`` is a builtin on its own thread; ``Par.arun`` runs it next to the async processes.
  When ``lines`` reaches end-of-stream it retires its ends, so ``counts`` ends too.
- ``tally`` is an ``async def`` process: ``async for`` over the counts until end-of-stream.
  Then it poisons ``stop``, a channel nobody writes to, used as a broadcast signal.
- ``heartbeat`` is an ``async def`` process that beats every millisecond (an ``Alt`` of
  ``stop`` and a ``Timeout`` guard, awaited with ``apri_select``) until ``stop`` is
  poisoned; its beat count shows the loop stayed responsive while the file was read.

The file is a temporary one this example writes first (no network involved).

Run: ``python examples/asyncio_channels.py [--lines N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

import ferrocsp as csp
from ferrocsp.builtins import Map


async def read_lines(path: Path, lines: csp.Writer) -> int:
    """Reads ``path`` line by line in a worker thread; writes each line; retires at EOF."""
    n = 0
    with lines, path.open(encoding="utf-8") as f:
        while line := await asyncio.to_thread(f.readline):
            await lines.awrite(line)
            n += 1
    return n


@csp.process
async def tally(counts: csp.Reader, stop: csp.Channel) -> tuple[int, int]:
    """Sums word counts until end-of-stream, then poisons ``stop`` (the heartbeat's signal)."""
    lines = words = 0
    async for n in counts:
        lines += 1
        words += n
    stop.poison()  # poison as a broadcast: everybody holding ``stop`` hears it
    return lines, words


@csp.process
async def heartbeat(stop: csp.Channel, period: float) -> int:
    """Beats every ``period`` seconds until ``stop`` is poisoned; returns the beats.

    ``apri_select`` over ``stop`` and a ``Timeout``: nobody writes to ``stop``, so it fires
    only when poisoned (raising ``ChannelPoisoned``), and it is checked before the timeout.
    """
    alt = csp.Alt(stop, csp.Timeout(period))
    beats = 0
    try:
        while True:
            await alt.apri_select()
            beats += 1
    except csp.ChannelPoisoned:
        return beats


def count_words(line: str) -> int:
    return len(line.split())


async def main_async(n_lines: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "words.txt"
        text = "".join(f"line {i}: " + "word " * (i % 7) + "\n" for i in range(n_lines))
        await asyncio.to_thread(path.write_text, text, "utf-8")
        expected_words = sum(len(line.split()) for line in text.splitlines())

        lines, counts, stop = (csp.Channel(name=n) for n in ("lines", "counts", "stop"))
        reader = asyncio.create_task(read_lines(path, lines.writer()))
        results = await csp.Par(
            Map(lines.reader(), counts.writer(), count_words),
            tally(counts.reader(), stop),
            heartbeat(stop, 0.001),
        ).arun()
        read = await reader

    (n, words), seen_beats = results[1], results[2]
    print(f"read {read} lines from a file with asyncio.to_thread")
    print(f"tally (async def) counted {n} lines and {words} words")
    print(f"the heartbeat (async def) beat {seen_beats} times meanwhile")
    assert read == n == n_lines
    assert words == expected_words
    print("asyncio channels: ok")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=2000)
    args = parser.parse_args()
    return asyncio.run(main_async(args.lines))


if __name__ == "__main__":
    raise SystemExit(main())
