"""A fair multiplexer: one process merges several producers with ``Alt.fair_select``.

Every producer is always ready (it writes as fast as it can), which is exactly when a
priority or even a random choice can starve someone for a while. ``fair_select`` gives the
guard chosen last the lowest priority next time, so the merged stream takes from each
producer in turn as long as they are all ready::

    producer-0 --c0--+
    producer-1 --c1--+--> multiplexer --out--> consumer
    producer-2 --c2--+

The inputs are buffered (``--buffer``, default 8) so that a producer stays ready while the
OS schedules its thread; with ``--buffer 0`` fairness holds among the producers that are
blocked writing at each moment. Each producer writes ``count`` values and retires its writer
end; the multiplexer leaves a channel out once it is retired (``Guard(when=False)``) and
retires ``out`` when all inputs are done, so the network shuts down by itself.

Run: ``python examples/fair_multiplexer.py [--producers N] [--count K] [--buffer B]``.
"""

from __future__ import annotations

import argparse
import itertools
from collections import Counter

import ferrocsp as csp


@csp.process
def producer(out: csp.Writer, ident: int, count: int) -> None:
    with out:  # retire on exit: the multiplexer sees end-of-stream
        for i in range(count):
            out.write((ident, i))


@csp.process
def multiplexer(inputs: list[csp.Reader], out: csp.Writer) -> int:
    """Forwards values from every input, fairly, until all inputs are retired."""
    guards = [csp.Guard(r) for r in inputs]
    alt = csp.Alt(*guards)
    live = len(guards)
    forwarded = 0
    with out:
        while live:
            try:
                _, value = alt.fair_select()
            except csp.ChannelRetired:
                # One input (or more) ended: disable every guard whose channel is retired.
                for g in guards:
                    if g.when and g.guard.channel.stats().retired:
                        g.when = False
                        live -= 1
                continue
            out.write(value)
            forwarded += 1
    return forwarded


@csp.process
def consumer(inp: csp.Reader) -> list[tuple[int, int]]:
    return list(inp)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--producers", type=int, default=3)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--buffer", type=int, default=8, help="capacity of each input")
    args = parser.parse_args()

    chans = [csp.Channel(args.buffer, name=f"c{i}") for i in range(args.producers)]
    out = csp.Channel(name="out")
    procs = [producer(ch.writer(), i, args.count) for i, ch in enumerate(chans)]
    results = csp.Par(
        *procs,
        multiplexer([ch.reader() for ch in chans], out.writer()),
        consumer(out.reader()),
    ).run()
    forwarded, merged = results[-2], results[-1]

    per_producer = Counter(ident for ident, _ in merged)
    # Each producer's values arrive in its own order, none lost or duplicated.
    for i in range(args.producers):
        mine = [seq for ident, seq in merged if ident == i]
        assert mine == list(range(args.count)), f"producer {i}: values lost or reordered"
    # How fair: in the first half of the stream (all producers still running), the longest
    # run of values from one producer.
    first_half = [ident for ident, _ in merged[: len(merged) // 2]]
    longest = run = 1
    for x, y in itertools.pairwise(first_half):
        run = run + 1 if x == y else 1
        longest = max(longest, run)
    print(f"multiplexer forwarded {forwarded} values from {args.producers} producers")
    print("per producer: " + ", ".join(f"{i}={per_producer[i]}" for i in range(args.producers)))
    print(f"longest run from one producer in the first half: {longest}")
    print("first 24 sources: " + "".join(str(i) for i in first_half[:24]))
    print("fair multiplexer: ok")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
