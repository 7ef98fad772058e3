"""The sieve of Eratosthenes as a growing chain of filter processes.

``Count`` writes 2, 3, 4, ... into the chain. The ``sieve`` process sits at the end of the
chain: the first number that reaches it is a prime ``p``; it reports ``p``, then spawns a new
``Filter`` process that drops the multiples of ``p``, links it into the chain, and moves on
to read from the new end. Each new prime spawns a new filter process::

    Count --> Filter(%2) --> Filter(%3) --> Filter(%5) --> ... --> sieve --> primes

After ``--count`` primes the sieve retires its reader end. The last filter's next write then
fails with ``ChannelRetired``, so it ends and retires its own ends, the filter before it sees
the same at its next write, and so on back to ``Count``: the chain shuts itself down, from
the end to the start, with no poison.

Run: ``python examples/sieve.py [--count N]``.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

import ferrocsp as csp
from ferrocsp.builtins import Count, Filter


def not_multiple_of(p: int) -> Callable[[int], bool]:
    def keep(n: int) -> bool:
        return n % p != 0

    return keep


@csp.process
def sieve(numbers: csp.Reader, primes: csp.Writer, count: int) -> int:
    """Reports ``count`` primes, growing the chain by one Filter per prime; returns how many
    filter processes it spawned (after they have all ended)."""
    stages: list[csp.Handle[object]] = []
    cin = numbers
    with primes:  # retire on the way out: the reader of the primes sees end-of-stream
        for _ in range(count):
            p = cin.read()
            primes.write(p)
            link = csp.Channel(name=f"after-{p}")
            stages.append(csp.Spawn(Filter(cin, link.writer(), not_multiple_of(p))))
            cin = link.reader()
    cin.retire()  # nobody reads the end of the chain any more: it shuts down from here
    for stage in stages:
        stage.join()
    return len(stages)


def first_primes(count: int) -> list[int]:
    """The first ``count`` primes, the sequential way (to check the network's answer)."""
    bound = max(16, int(count * (math.log(count + 2) + math.log(math.log(count + 2)))) + 10)
    composite = bytearray(bound)
    primes = []
    for n in range(2, bound):
        if not composite[n]:
            primes.append(n)
            composite[n * n :: n] = b"\x01" * len(range(n * n, bound, n))
    return primes[:count]


@csp.process
def collect(cin: csp.Reader) -> list[int]:
    return list(cin)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100, help="how many primes")
    args = parser.parse_args()

    numbers, primes = csp.Channel(name="numbers"), csp.Channel(name="primes")
    _, spawned, found = csp.Par(
        Count(numbers.writer(), start=2),
        sieve(numbers.reader(), primes.writer(), args.count),
        collect(primes.reader()),
    ).run()

    assert found == first_primes(args.count), "the sieve is wrong"
    print("first primes: " + " ".join(map(str, found[:20])))
    print(f"the {args.count}th prime is {found[-1]}")
    print(f"{spawned} filter processes spawned, one per prime, all ended by retire")
    print("sieve: ok")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
