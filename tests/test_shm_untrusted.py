"""A large rendezvous value on a shared channel is read straight out of its writer's memory
(``process_vm_readv``); the message that says where lies in a segment every peer can write.

These tests play the hostile peer: a thread writes a large value, and once its message is
published the test rewrites it through its own mapping of the segment (docs/design.md, "What a
forked child starts with; whose memory a reader may read"). The reader must read only from the
entry's recorded writer, never more than the channel's largest message, and treat a message
that breaks these rules as a corrupt channel.
"""

from __future__ import annotations

import mmap
import os
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

import ferrocsp as csp
from ferrocsp import _shm

pytestmark = pytest.mark.timeout(60)

#: The first word of a remote message, and where its parts' records start (shm_msg.rs).
REMOTE = 0xFFFF_FFFE
PART_RECORDS = 16
PART_RECORD = 17
#: Where the ring starts in a segment (a header page and the end table).
RING_AT = 4096 + 4096
#: A value large enough to travel by ``process_vm_readv``.
LARGE = b"v" * (1 << 20)

SECRET = b"the secret of another process"

#: Holds b"B" + SECRET in its memory (a bytes value's two parts: its tag, its bytes) and
#: prints where, then waits for its stdin to close.
HOLDER = f"""
import ctypes, sys
secret = ctypes.create_string_buffer({b"B" + SECRET!r}, {1 + len(SECRET)})
print(ctypes.addressof(secret), flush=True)
sys.stdin.read()
"""


@pytest.fixture
def holder() -> Iterator[tuple[int, int]]:
    """Another process (a child of this one, so ptrace rules let us read it) with SECRET at a
    known address: its (pid, address)."""
    p = subprocess.Popen(
        [sys.executable, "-c", HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert p.stdout is not None
        addr = int(p.stdout.readline())
        yield p.pid, addr
    finally:
        assert p.stdin is not None
        p.stdin.close()
        p.wait(timeout=10)
        assert p.stdout is not None
        p.stdout.close()


def _forged(edit: Callable[[mmap.mmap, int], None]) -> tuple[BaseException | object, list[object]]:
    """Writes LARGE from a thread on a new shared rendezvous channel, lets ``edit(mapping,
    message offset)`` rewrite its published message, then reads once: what the read returned
    or raised, and what the write did ([exception] or [None])."""
    ch: csp.Channel[bytes] = csp.Channel(name="forged")
    side = _shm.share(ch)
    wrote: list[object] = []

    def write() -> None:
        try:
            ch.write(LARGE, timeout=20)
            wrote.append(None)
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            wrote.append(exc)

    t = threading.Thread(target=write)
    t.start()
    fd = side.native.fd
    with mmap.mmap(fd, os.fstat(fd).st_size) as m:
        # Published (READY) once it counts as a waiting writer: no longer being filled in.
        deadline = time.monotonic() + 10
        while ch.stats().writers_waiting == 0:
            assert time.monotonic() < deadline, "the writer never published its message"
            time.sleep(0.005)
        marker = struct.pack("<II", REMOTE, os.getpid())
        at = m.find(marker, RING_AT, RING_AT + 4096)
        assert at >= 0, "no remote message in the ring"
        edit(m, at)
        got: BaseException | object
        try:
            got = ch.read(timeout=10)
        except BaseException as exc:  # noqa: BLE001 - inspected by the test
            got = exc
    t.join(30)
    assert not t.is_alive(), "the writer still waits for its forged message"
    return got, wrote


def _set_part(m: mmap.mmap, at: int, i: int, length: int, addr: int | None = None) -> None:
    rec = at + PART_RECORDS + i * PART_RECORD
    m[rec + 1 : rec + 9] = struct.pack("<Q", length)
    if addr is not None:
        m[rec + 9 : rec + 17] = struct.pack("<Q", addr)


def _short(x: object) -> str:
    return f"{type(x).__name__} {repr(x)[:80]}"


def _assert_corrupt(got: object, wrote: list[object]) -> None:
    assert isinstance(got, csp.ChannelPoisoned), f"the read gave {_short(got)}"
    assert "'forged'" in str(got)
    assert "corrupt" in str(got)
    assert len(wrote) == 1, [_short(w) for w in wrote]
    assert isinstance(wrote[0], csp.ChannelPoisoned), _short(wrote[0])


def test_a_message_naming_another_process_is_not_read_from_it(holder: tuple[int, int]) -> None:
    pid, addr = holder

    def edit(m: mmap.mmap, at: int) -> None:
        m[at + 4 : at + 8] = struct.pack("<I", pid)
        _set_part(m, at, 0, 1, addr)
        _set_part(m, at, 1, len(SECRET), addr + 1)

    got, wrote = _forged(edit)
    assert got != SECRET, "read another process's memory"
    assert not (isinstance(got, bytes) and SECRET in got)
    _assert_corrupt(got, wrote)


@pytest.mark.parametrize("size", [1 << 40, (1 << 30) + 1])
def test_a_forged_part_size_fails_without_allocating(size: int) -> None:
    # 1 TiB: more than any channel carries; 1 GiB + 1: just more than the default ring's.
    got, wrote = _forged(lambda m, at: _set_part(m, at, 1, size))
    _assert_corrupt(got, wrote)


def test_a_forged_part_count_poisons_the_channel() -> None:
    got, wrote = _forged(lambda m, at: m.__setitem__(slice(at + 8, at + 12), b"\xff" * 4))
    _assert_corrupt(got, wrote)


def test_a_forged_part_kind_poisons_the_channel() -> None:
    def edit(m: mmap.mmap, at: int) -> None:
        m[at + PART_RECORDS + PART_RECORD] = 7  # part 1's kind: neither bytes nor bytearray

    got, wrote = _forged(edit)
    _assert_corrupt(got, wrote)


def test_the_writers_own_message_still_arrives_whole() -> None:
    got, wrote = _forged(lambda m, at: None)
    assert got == LARGE, _short(got)
    assert wrote == [None], [_short(w) for w in wrote]


def test_a_value_larger_than_the_ring_is_refused_by_the_writer() -> None:
    # The rule a reader enforces is the writer's: a remote message carries no more than the
    # same value sent inline could (a reader the kernel refuses gets it inline).
    ch: csp.Channel[bytes] = csp.Channel(name="small")
    ch._share(1 << 20)
    got: list[object] = []

    def read() -> None:
        try:
            got.append(ch.read(timeout=3))
        except TimeoutError as exc:
            got.append(exc)

    t = threading.Thread(target=read)
    t.start()
    with pytest.raises(ValueError, match="larger than the channel can carry"):
        ch.write(b"x" * (2 << 20), timeout=10)
    t.join(30)
    assert len(got) == 1
    assert isinstance(got[0], TimeoutError), _short(got[0])
