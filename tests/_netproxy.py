"""A fault-injecting TCP proxy between NATS clients and a nats-server, for the tests.

``FaultProxy(upstream_port)`` listens on 127.0.0.1 (``proxy.url``) and forwards every client
connection to the server. It reads the NATS text protocol in both directions frame by frame:
a control line (``INFO``, ``CONNECT``, ``PING``, ``PONG``, ``+OK``, ``-ERR``, ``SUB``,
``UNSUB``), or a message with its payload (``PUB``/``HPUB`` from a client, ``MSG``/``HMSG``
from the server, sized by the lengths on their line). Each frame can be passed, **dropped**,
**delayed** (sent later, after frames that follow it), **duplicated**, or the connection
**cut** (both sockets closed: the client reconnects through the proxy), or passed and counted.

What happens to a frame is decided by, in order: the one-shot or counted ``rule``s a test
adds (a predicate on the ``Frame``), then the seeded ``RandomFaults`` if set. A reply frame
(a ``MSG`` to an inbox) knows the subject of the request it answers (``Frame.about``), so a
test can drop "the reply to an acknowledgement" or "the answer to a rendezvous write".

Invariants:
- Frames are forwarded whole and, unless delayed, in order; a frame that does not parse ends
  the connection (the proxy never forwards a partial frame).
- Everything applied is counted (``counts``: action -> number), so a test can report the
  faults it injected and check that its rules fired.
- Random decisions come from one ``random.Random(seed)`` under a lock: the same seed and the
  same frames give the same faults (thread scheduling may still change the frames).
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

#: Longest control line accepted (the server's INFO is the longest, a few KiB).
MAX_LINE = 1 << 16
#: Largest payload accepted (NATS's own ceiling is 64 MiB; tests send small values).
MAX_PAYLOAD = 64 << 20


@dataclass(frozen=True)
class Frame:
    """One protocol frame. ``way``: ``"up"`` (client to server) or ``"down"``."""

    way: str
    op: str
    subject: str
    reply: str
    headers: bytes
    payload: bytes
    raw: bytes
    #: For a message to an inbox, the subject of the request it answers (else ``subject``).
    about: str


@dataclass
class Rule:
    """Applies ``action`` to the next ``times`` frames that ``match``."""

    match: Callable[[Frame], bool]
    action: str
    times: int = 1
    delay: float = 0.0
    hits: int = 0


@dataclass
class RandomFaults:
    """Seeded random faults on the frames ``eligible`` accepts: each such frame is dropped,
    delayed (uniformly up to ``max_delay`` s), duplicated, or its connection cut, with these
    probabilities."""

    seed: int
    eligible: Callable[[Frame], bool]
    drop: float = 0.0
    delay: float = 0.0
    dup: float = 0.0
    cut: float = 0.0
    max_delay: float = 0.2
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def decide(self, f: Frame) -> tuple[str, float]:
        if not self.eligible(f):
            return "pass", 0.0
        x = self.rng.random()
        for action, p in (("drop", self.drop), ("dup", self.dup), ("cut", self.cut)):
            if x < p:
                return action, 0.0
            x -= p
        if x < self.delay:
            return "delay", self.rng.uniform(0.0, self.max_delay)
        return "pass", 0.0


class _Link:
    """One client connection and its server connection."""

    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.socks = {"up": server, "down": client}
        self.locks = {"up": threading.Lock(), "down": threading.Lock()}
        self.closed = False

    def send(self, way: str, data: bytes) -> None:
        with self.locks[way]:
            if self.closed:
                return
            try:
                self.socks[way].sendall(data)
            except OSError:
                self.close()

    def close(self) -> None:
        self.closed = True
        for s in self.socks.values():
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


class FaultProxy:
    """See the module doc. Use as a context manager (stops and cuts everything on exit)."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.rules: list[Rule] = []
        self.random: RandomFaults | None = None
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._replies: OrderedDict[str, str] = OrderedDict()
        self._links: list[_Link] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._stopped = False
        self._accept = threading.Thread(target=self._accept_loop, daemon=True, name="netproxy")
        self._accept.start()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def rule(
        self, match: Callable[[Frame], bool], action: str, times: int = 1, delay: float = 0.0
    ) -> Rule:
        """Applies ``action`` (``drop``, ``delay``, ``dup``, ``cut``, or ``pass``: only
        counted in the rule's ``hits``) to the next ``times`` frames that ``match``."""
        assert action in ("pass", "drop", "delay", "dup", "cut"), action
        r = Rule(match, action, times, delay)
        with self._lock:
            self.rules.append(r)
        return r

    def cut_all(self) -> None:
        """Cuts every open connection (the clients reconnect)."""
        with self._lock:
            links = [x for x in self._links if not x.closed]
            self._links = []
            self.counts["cut"] += len(links)
        for link in links:
            link.close()

    def stop(self) -> None:
        self._stopped = True
        # close() alone does not wake a thread blocked in accept() on Linux: the accept thread
        # then lives on, and a later test's deadlock detection (which waits while any thread
        # might still act) never concludes.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._accept.join(5)
        self.cut_all()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- forwarding -----------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = _Link(client, server)
            with self._lock:
                self._links = [x for x in self._links if not x.closed]
                self._links.append(link)
            for way, src in (("up", client), ("down", server)):
                threading.Thread(
                    target=self._pump, args=(link, way, src), daemon=True, name=f"netproxy-{way}"
                ).start()

    def _pump(self, link: _Link, way: str, src: socket.socket) -> None:
        stream = src.makefile("rb")
        try:
            while not link.closed:
                frame = self._next_frame(stream, way)
                if frame is None:
                    break
                self._apply(link, frame)
        except (OSError, ValueError):
            pass
        finally:
            link.close()

    def _next_frame(self, stream: object, way: str) -> Frame | None:
        readline = stream.readline  # type: ignore[attr-defined]
        read = stream.read  # type: ignore[attr-defined]
        line: bytes = readline(MAX_LINE)
        if not line:
            return None
        if not line.endswith(b"\r\n"):
            raise ValueError(f"unterminated or overlong line {line[:80]!r}")
        parts = line[:-2].split()
        op = parts[0].upper().decode() if parts else ""
        subject = reply = ""
        headers = payload = b""
        raw = line
        if op in ("PUB", "HPUB", "MSG", "HMSG"):
            args = [p.decode() for p in parts[1:]]
            # PUB subj [reply] n; HPUB subj [reply] hn n; MSG subj sid [reply] n; HMSG ... hn n
            fixed = {"PUB": 2, "HPUB": 3, "MSG": 3, "HMSG": 4}[op]
            if len(args) not in (fixed, fixed + 1):
                raise ValueError(f"bad {op} line {line!r}")
            subject = args[0]
            if len(args) == fixed + 1:
                reply = args[2] if op in ("MSG", "HMSG") else args[1]
            with_headers = op in ("HPUB", "HMSG")
            hn, n = (int(args[-2]), int(args[-1])) if with_headers else (0, int(args[-1]))
            if not 0 <= hn <= n <= MAX_PAYLOAD:
                raise ValueError(f"bad sizes in {line!r}")
            body = read(n + 2)
            if len(body) != n + 2 or body[-2:] != b"\r\n":
                raise ValueError("short or unterminated payload")
            headers, payload = body[:hn], body[hn:n]
            raw = line + body
        about = subject
        with self._lock:
            if way == "up" and reply and op in ("PUB", "HPUB"):
                self._replies[reply] = subject
                if len(self._replies) > 100_000:
                    self._replies.popitem(last=False)
            elif way == "down" and op in ("MSG", "HMSG"):
                about = self._replies.get(subject, subject)
        return Frame(way, op, subject, reply, headers, payload, raw, about)

    def _decide(self, f: Frame) -> tuple[str, float]:
        with self._lock:
            for r in self.rules:
                if r.times > 0 and r.match(f):
                    r.times -= 1
                    r.hits += 1
                    return r.action, r.delay
            if self.random is not None:
                return self.random.decide(f)
        return "pass", 0.0

    def _apply(self, link: _Link, f: Frame) -> None:
        action, delay = self._decide(f)
        if action != "pass":
            with self._lock:
                self.counts[action] += 1
        if action == "pass":
            link.send(f.way, f.raw)
        elif action == "dup":
            link.send(f.way, f.raw + f.raw)
        elif action == "delay":
            t = threading.Timer(delay, link.send, (f.way, f.raw))
            t.daemon = True
            t.start()
        elif action == "cut":
            link.close()
        # "drop": nothing


def value_traffic(root: str = "ferrocsp") -> Callable[[Frame], bool]:
    """The frames that carry values and their acknowledgements (what the random faults hit):
    rendezvous requests and their answers, commits, claims, buffered publishes and their
    acknowledgements, deliveries of buffered values, and acks. Not the channel state (KV),
    stream and consumer management, subscriptions or pings: those are not what a lost
    acknowledgement is about, and async-nats does not retry them by itself."""

    def subject_ok(s: str) -> bool:
        if s.startswith("$JS.ACK."):
            return True
        if s.startswith(root + "."):
            kind = s.split(".")[2] if s.count(".") >= 2 else ""
            return kind in ("w", "d", "b", "c")
        return False

    def eligible(f: Frame) -> bool:
        if f.op not in ("PUB", "HPUB", "MSG", "HMSG"):
            return False
        return subject_ok(f.subject) or subject_ok(f.about)

    return eligible
