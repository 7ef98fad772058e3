"""The hand-written nats-py peer of bench/net (runs in bench/net/.venv-natspy).

``python natspy_peer.py URL N`` prints JSON lines:
- ``natspy_rr_us``: a request/reply round trip (a responder on another connection);
- ``natspy_js_per_s``: a buffered channel done by hand: JetStream work-queue stream with
  ``max_msgs`` 1000 and discard new, a producer publishing and awaiting each ack (retrying
  when full), a consumer pulling one message at a time and acknowledging it.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import nats
from nats.js.api import DiscardPolicy, RetentionPolicy, StreamConfig
from nats.js.errors import APIError


async def main(url: str, n: int) -> None:
    srv = await nats.connect(url)
    cli = await nats.connect(url)

    async def respond(msg: nats.aio.msg.Msg) -> None:
        await msg.respond(b"+")

    await srv.subscribe("natspy.rr", cb=respond)
    await srv.flush()
    for _ in range(200):
        await cli.request("natspy.rr", b"x", timeout=5)
    lat = []
    for _ in range(n):
        t = time.perf_counter()
        await cli.request("natspy.rr", b"x", timeout=5)
        lat.append((time.perf_counter() - t) * 1e6)
    lat.sort()
    print(json.dumps({"name": "natspy_rr_us", "median": lat[len(lat) // 2], "mean": sum(lat) / n}))

    js = cli.jetstream()
    name = f"NATSPY_{int(time.time() * 1000)}"
    await js.add_stream(
        StreamConfig(
            name=name,
            subjects=[f"natspy.{name}"],
            retention=RetentionPolicy.WORK_QUEUE,
            max_msgs=1000,
            discard=DiscardPolicy.NEW,
        )
    )
    sub = await js.pull_subscribe(f"natspy.{name}", durable="r")
    m = min(n, 5000)

    async def produce() -> None:
        for i in range(m):
            while True:
                try:
                    await js.publish(f"natspy.{name}", b"x", headers={"Nats-Msg-Id": str(i)})
                    break
                except APIError:  # full: wait for the consumer
                    await asyncio.sleep(0.001)

    async def consume() -> None:
        got = 0
        while got < m:
            try:
                msgs = await sub.fetch(1, timeout=1)
            except nats.errors.TimeoutError:
                continue
            for msg in msgs:
                await msg.ack_sync()
                got += 1

    t0 = time.perf_counter()
    await asyncio.gather(produce(), consume())
    print(json.dumps({"name": "natspy_js_per_s", "value": m / (time.perf_counter() - t0)}))
    await js.delete_stream(name)
    await cli.close()
    await srv.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
