"""A watchdog: ``Alt`` over a heartbeat channel and a ``Timeout`` guard.

A worker does its job in steps and sends a heartbeat after each one. The watchdog waits for
the next heartbeat with ``Alt(heartbeats, Timeout(limit))``: a heartbeat restarts the wait;
when none arrives within ``limit`` seconds, the Timeout fires, and the watchdog reports the
worker as stalled and poisons the network (the worker's channels), so everything stops::

    worker --heartbeat--> watchdog --report--> (printed)
      ^                      |
      +------ poison --------+  (through the shared ``control`` channel)

Here the worker runs ``healthy`` steps at a steady pace, then stalls (it waits on a channel
nobody writes), as a hung worker would. The watchdog notices, poisons ``heartbeat`` and
``control``; the stalled worker wakes with ``ChannelPoisoned`` and ends cleanly.

Run: ``python examples/timeout_watchdog.py [--healthy N] [--limit SECONDS] [--step SECONDS]``.
"""

from __future__ import annotations

import argparse
import time

import ferrocsp as csp


@csp.process
def worker(heartbeat: csp.Channel, control: csp.Channel, healthy: int, step: float) -> None:
    for i in range(healthy):
        # One step of work; its pace is well inside the watchdog's limit.
        time.sleep(step)
        heartbeat.write(i)
    # Stall: wait for an instruction that never comes (a hung worker). Only poison ends it.
    control.read()


@csp.process
def watchdog(heartbeat: csp.Channel, control: csp.Channel, limit: float) -> dict[str, object]:
    timeout = csp.Timeout(limit)
    alt = csp.Alt(heartbeat, timeout)
    beats = 0
    last = time.monotonic()
    while True:
        guard, value = alt.select()
        now = time.monotonic()
        if guard is timeout:
            silent = now - last
            print(
                f"watchdog: no heartbeat for {silent:.3f} s (limit {limit} s) after {beats} "
                "beats: worker stalled, poisoning"
            )
            heartbeat.poison()
            control.poison()
            return {"beats": beats, "silent": silent}
        beats += 1
        last = now
        print(f"watchdog: heartbeat {value}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--healthy", type=int, default=5, help="heartbeats before the stall")
    parser.add_argument("--limit", type=float, default=0.5, help="seconds without a heartbeat")
    parser.add_argument("--step", type=float, default=0.01, help="seconds per step of work")
    args = parser.parse_args()

    heartbeat = csp.Channel(name="heartbeat")
    control = csp.Channel(name="control")
    t0 = time.monotonic()
    worker_result, report = csp.Par(
        worker(heartbeat, control, args.healthy, args.step),
        watchdog(heartbeat, control, args.limit),
    ).run()
    elapsed = time.monotonic() - t0
    assert worker_result is None  # ended cleanly by poison
    assert report["beats"] == args.healthy
    assert report["silent"] >= args.limit
    assert heartbeat.stats().poisoned
    assert control.stats().poisoned
    print(
        f"watchdog saw {report['beats']} heartbeats, then a stall; network stopped "
        f"after {elapsed:.3f} s"
    )
    print("timeout watchdog: ok")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
