"""The dining philosophers: the correct versions, and the classic deadlock, detected.

N philosophers sit at a round table with one fork between each pair of neighbours; a
philosopher needs both of its forks to eat. Forks are processes: a fork serves one of its
two philosophers at a time (an ``Alt`` over their two channels: "pick" up, then "put"
down by the same philosopher). Everything is a rendezvous channel.

Modes:

- default, with a **butler**: a philosopher asks the butler for a seat before taking forks;
  the butler seats at most N - 1 at a time (an ``Alt`` whose "sit" guard is enabled only
  while a seat is free: ``Guard(sit, when=seated < N - 1)``), so at least one seated
  philosopher can always get both forks. No deadlock.
- ``--ordered``: no butler; every philosopher picks up the lower-numbered of its two forks
  first. The cycle of waiting is broken, so no deadlock either.
- ``--deadlock``: no butler; every philosopher picks up the left fork, then the right one.
  A table-wide barrier after the left fork makes the fatal interleaving certain: each
  philosopher holds one fork and waits forever for its neighbour's. ferrocsp's deadlock
  detection sees that every participant waits forever and makes each blocked operation raise
  ``Deadlock``, naming who waits on which channel; the example prints that report.

Every philosopher eats ``--meals`` times (in the correct modes), then retires its ends;
forks and butler end when all their clients have retired, so the network shuts down by
itself.

Run: ``python examples/dining_philosophers.py [-n N] [--meals M] [--ordered | --deadlock]``.
"""

from __future__ import annotations

import argparse
import random
from typing import Any

import ferrocsp as csp


def pause(seconds: float) -> None:
    """Thinks or eats for ``seconds``: a Timeout guard waits the way the backend waits."""
    csp.select(csp.Timeout(seconds))


@csp.process
def fork(left_user: csp.Reader, right_user: csp.Reader) -> int:
    """Serves one philosopher at a time: reads "pick" from one of its two philosophers, then
    "put" from the same one. Ends when both have retired; returns how often it was used."""
    alt = csp.Alt(left_user, right_user)
    uses = 0
    while True:
        try:
            user, _ = alt.fair_select()  # "pick"
        except csp.ChannelRetired:
            return uses  # both philosophers have left the table
        user.read()  # "put", by the same philosopher
        uses += 1


@csp.process
def butler(sit: csp.Reader, stand: csp.Reader, seats: int) -> int:
    """Lets at most ``seats`` philosophers sit at once; returns the most seated at once."""
    sit_guard = csp.Guard(sit)
    alt = csp.Alt(sit_guard, stand)
    seated = most = 0
    while True:
        sit_guard.when = seated < seats
        try:
            guard, _ = alt.pri_select()
        except csp.ChannelRetired:
            return most  # every philosopher has left
        seated += 1 if guard is sit_guard else -1
        most = max(most, seated)


@csp.process
def philosopher(
    ident: int,
    first: csp.Writer,
    second: csp.Writer,
    butler_ends: tuple[csp.Writer, csp.Writer] | None,
    meals: int,
) -> int:
    """Eats ``meals`` times, picking up fork ``first`` then ``second``; returns meals eaten."""
    rng = random.Random(ident)
    for _ in range(meals):
        pause(rng.uniform(0, 0.002))  # think
        if butler_ends:
            butler_ends[0].write(ident)  # sit down
        first.write("pick")
        second.write("pick")
        pause(rng.uniform(0, 0.002))  # eat
        second.write("put")
        first.write("put")
        if butler_ends:
            butler_ends[1].write(ident)  # stand up
    for end in (first, second, *(butler_ends or ())):
        end.retire()
    return meals


@csp.process
def naive_philosopher(
    ident: int, left: csp.Writer, right: csp.Writer, arrive: csp.Writer, go: csp.Reader
) -> None:
    """Left fork, wait until everybody holds theirs, then right fork: deadlocks for sure."""
    left.write("pick")
    arrive.write(ident)
    go.read()
    right.write("pick")  # the neighbour holds it and is waiting too
    right.write("put")
    left.write("put")


@csp.process
def table_barrier(arrive: csp.Reader, go: list[csp.Writer]) -> None:
    """Lets the philosophers go on once all of them hold their left fork."""
    for _ in go:
        arrive.read()
    for g in go:
        g.write("go")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=5, help="philosophers (and forks)")
    parser.add_argument("--meals", type=int, default=20)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--ordered", action="store_true", help="lower-numbered fork first")
    mode.add_argument("--deadlock", action="store_true", help="the classic deadlock, detected")
    args = parser.parse_args()
    n = args.n

    # Fork i lies between philosopher i (it is their left fork) and philosopher i - 1 (their
    # right fork); each philosopher has its own channel to each of its two forks.
    as_left = [csp.Channel(name=f"p{i}-fork{i}") for i in range(n)]
    as_right = [csp.Channel(name=f"p{(i - 1) % n}-fork{i}") for i in range(n)]
    forks = [fork(as_left[i].reader(), as_right[i].reader()) for i in range(n)]
    left_of = [as_left[i].writer() for i in range(n)]
    right_of = [as_right[(i + 1) % n].writer() for i in range(n)]

    if args.deadlock:
        arrive = csp.Channel(name="arrive")
        go = [csp.Channel(name=f"go{i}") for i in range(n)]
        print(f"{n} philosophers: left fork, then (all at once) right fork")
        try:
            csp.Par(
                *forks,
                *(
                    naive_philosopher(i, left_of[i], right_of[i], arrive.writer(), go[i].reader())
                    for i in range(n)
                ),
                table_barrier(arrive.reader(), [g.writer() for g in go]),
            ).run()
        except ExceptionGroup as eg:
            deadlocks = [e for e in eg.exceptions if isinstance(e, csp.Deadlock)]
            if not deadlocks:
                raise
            print("ferrocsp detected the deadlock:")
            print(f"  {deadlocks[0]}")
            print("avoid it with a butler or ordered forks")
            print("dining philosophers: ok")
            return 0
        raise AssertionError("the naive philosophers should have deadlocked")

    if args.ordered:
        mode_name = "ordered forks"
        firsts = [left_of[i] if i < (i + 1) % n else right_of[i] for i in range(n)]
        seconds = [right_of[i] if i < (i + 1) % n else left_of[i] for i in range(n)]
        extra: list[csp.Process[Any]] = []
        butler_of: list[tuple[csp.Writer, csp.Writer] | None] = [None] * n
    else:
        mode_name = f"a butler seating at most {n - 1}"
        firsts, seconds = left_of, right_of
        sit, stand = csp.Channel(name="sit"), csp.Channel(name="stand")
        extra = [butler(sit.reader(), stand.reader(), n - 1)]
        butler_of = [(sit.writer(), stand.writer()) for _ in range(n)]

    results = csp.Par(
        *forks,
        *(philosopher(i, firsts[i], seconds[i], butler_of[i], args.meals) for i in range(n)),
        *extra,
    ).run()
    uses, meals = results[:n], results[n : 2 * n]
    print(f"{n} philosophers with {mode_name}")
    for i, m in enumerate(meals):
        print(f"  philosopher {i} ate {m} meals")
    assert all(u == 2 * args.meals for u in uses), uses  # each fork served both neighbours
    if extra:
        print(f"  the butler seated at most {results[-1]} at once")
        assert results[-1] <= n - 1
    print(f"no deadlock: every philosopher ate {args.meals} meals, forks used {uses[0]} times")
    print("dining philosophers: ok")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
