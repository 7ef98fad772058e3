"""A server that answers several clients, choosing with ``Alt`` among their requests.

Each client has its own request channel and its own reply channel::

    client-0 --req0--> +--------+ --rep0--> client-0
    client-1 --req1--> | server | --rep1--> client-1
    client-2 --req2--> +--------+ --rep2--> client-2

The server ``fair_select``s over every request channel, so it serves whichever client asks
first and no busy client can starve the others; it answers on the reply channel of the client
whose request it took. A client sends ``requests`` numbers, checks each answer (the square),
then retires its request end; when every request channel is retired the server's Alt raises
``ChannelRetired`` and the server ends, so the network stops by itself.

Run: ``python examples/alt_server.py [--clients N] [--requests K]``.
"""

from __future__ import annotations

import argparse

import ferrocsp as csp


@csp.process
def client(ident: int, requests: csp.Writer, replies: csp.Reader, count: int) -> int:
    """Asks ``count`` questions and checks every answer; returns how many were right."""
    right = 0
    with requests:
        for i in range(count):
            x = ident * 1000 + i
            requests.write(x)
            answer = replies.read()
            if answer != (x, x * x):
                raise RuntimeError(f"client {ident}: asked {x}, got {answer}")
            right += 1
    return right


@csp.process
def server(requests: list[csp.Reader], replies: list[csp.Writer]) -> dict[int, int]:
    """Serves until every client has retired its request end; returns requests per client."""
    guards = [csp.Guard(r) for r in requests]
    client_of = {id(g): i for i, g in enumerate(guards)}
    alt = csp.Alt(*guards)
    served = dict.fromkeys(range(len(requests)), 0)
    live = len(guards)
    while live:
        try:
            guard, x = alt.fair_select()
        except csp.ChannelRetired:
            for g in guards:  # leave out the clients that have gone
                if g.when and g.guard.channel.stats().retired:
                    g.when = False
                    live -= 1
            continue
        i = client_of[id(guard)]
        replies[i].write((x, x * x))
        served[i] += 1
    for w in replies:
        w.retire()
    return served


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=100)
    args = parser.parse_args()

    req = [csp.Channel(name=f"req{i}") for i in range(args.clients)]
    rep = [csp.Channel(name=f"rep{i}") for i in range(args.clients)]
    clients = [
        client(i, req[i].writer(), rep[i].reader(), args.requests) for i in range(args.clients)
    ]
    results = csp.Par(server([c.reader() for c in req], [c.writer() for c in rep]), *clients).run()
    served, answered = results[0], results[1:]
    for i in range(args.clients):
        print(f"client {i}: {answered[i]} answers checked, server served {served[i]}")
    total = sum(served.values())
    assert total == args.clients * args.requests
    assert answered == [args.requests] * args.clients
    print(f"server answered {total} requests from {args.clients} clients")
    print("alt server: ok")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
