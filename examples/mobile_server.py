"""A server that gives each client a private session, over channel ends sent on channels.

Channel ends are values: they can be written to a channel and used by whoever reads them
(mobility, as in occam-pi and the pi-calculus). Within one interpreter an end travels by
reference, so the end that arrives *is* the end that was sent. Here:

1. A client makes a reply channel and sends the *writer* end of it to the server, over the
   one shared ``connect`` channel.
2. The server makes a private session channel, starts a session process for this client
   (``Spawn``), and sends the client the session's *writer* end over the client's reply
   end: a private channel end sent over a channel.
3. The client sends its requests on its private session channel and gets the answers on its
   reply channel. Nobody else holds those ends, so no client can see another's traffic.
4. The client retires its session end; its session process sees end-of-stream, ends, and
   retires the reply end, so the client sees end-of-stream too.

::

    client 0 --connect--+                 session 0 <--private--> client 0
    client 1 --connect--+--> server --->  session 1 <--private--> client 1
    client 2 --connect--+   (spawns)      session 2 <--private--> client 2

The server ends when every client has retired its ``connect`` end.

Run: ``python examples/mobile_server.py [--clients N] [--requests K]``.
"""

from __future__ import annotations

import argparse

import ferrocsp as csp


@csp.process
def session(requests: csp.Reader, replies: csp.Writer, number: int) -> int:
    """Answers ``x -> x * x`` for one client until it leaves; returns requests served.

    When the client retires its end, ``requests`` reaches end-of-stream and the loop ends;
    ``with replies`` then retires the reply end, so the client sees end-of-stream too."""
    served = 0
    with replies:
        for x in requests:
            replies.write((number, x * x))
            served += 1
    return served


@csp.process
def server(connect: csp.Reader) -> list[int]:
    """Opens one private session per connection; returns what each session served."""
    sessions: list[csp.Handle[int]] = []
    for number, reply_to in enumerate(connect):  # each value is a client's Writer end
        private = csp.Channel(name=f"session-{number}")
        reply_to.write(private.writer())  # a channel end, sent over a channel
        sessions.append(csp.Spawn(session(private.reader(), reply_to, number)))
    return [s.join() for s in sessions]


@csp.process
def client(connect: csp.Writer, ident: int, count: int) -> str:
    """Connects, uses its private session ``count`` times, leaves; returns a summary."""
    reply = csp.Channel(name=f"reply-{ident}")
    replies = reply.reader()
    reply_end = reply.writer()
    with connect:  # one connection, then this client's connect end retires
        connect.write(reply_end)
    my_session: csp.Writer = replies.read()  # the private end the server sent
    assert isinstance(my_session, csp.Writer)
    number = -1
    for k in range(count):
        x = 10 * ident + k
        my_session.write(x)
        number, answer = replies.read()
        assert answer == x * x, (x, answer)
    my_session.retire()  # leave: the session ends and retires our reply channel
    assert list(replies) == []  # end-of-stream
    return f"client {ident}: {count} answers checked on private session {number}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=25)
    args = parser.parse_args()

    # Ends travel by reference within one interpreter: what is read is what was written.
    probe, carrier = csp.Channel(), csp.Channel(1)
    end = probe.writer()
    carrier.write(end)
    print(f"an end sent over a channel arrives as the same object: {carrier.read() is end}")
    end.retire()

    connect = csp.Channel(name="connect")
    results = csp.Par(
        server(connect.reader()),
        *(client(connect.writer(), i, args.requests) for i in range(args.clients)),
    ).run()
    served = results[0]
    for line in results[1:]:
        print(line)
    print(f"server ran {len(served)} private sessions, which served {sum(served)} requests")
    assert sorted(served) == [args.requests] * args.clients
    print("mobile server: ok")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
