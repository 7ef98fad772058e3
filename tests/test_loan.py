"""Zero-copy loans (issue #20): ``w.loan(n)`` gives a writable buffer; writing it hands the
memory to the reader, who gets a read-only ``LoanBuffer`` over it: by reference in process,
by mapping the same memfd in another OS process (docs/design.md, "Zero-copy loans").

What is checked: the hand-over from thread, greenlet and asyncio processes to readers of each
kind, in process and across OS processes; the writer's loan is spent after ``write``; a view
alive at ``write`` is a ``BufferError`` and nothing is sent; every way a loan ends (dropped
unwritten, the reader's last reference dropped, the reader SIGKILLed, poison, a timeout)
leaves no mapping and no descriptor of it behind (counted in ``/proc/self/maps`` and
``/proc/self/fd``); a forged loan message never maps anything but that loan.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import signal
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import ferrocsp as csp
from _support import wait_until
from ferrocsp import _shm

pytestmark = pytest.mark.timeout(60)

#: A loan message's first word and its layout (shm_msg.rs): marker, pid, fd, rejected flag,
#: length, uuid.
LOAN = 0xFFFF_FFFD
#: Where the ring starts in a segment (a header page and the end table).
RING_AT = 4096 + 4096
MIB = 1 << 20
JOIN = 30.0


def loan_maps() -> int:
    """This process's mappings of loans."""
    with open("/proc/self/maps") as f:
        return sum("ferrocsp-loan-" in line for line in f)


def loan_fds() -> int:
    """This process's descriptors of loans."""
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed since listed
            n += "ferrocsp-loan-" in os.readlink(f"/proc/self/fd/{fd}")
    return n


def settle(what: Callable[[], int], want: int = 0) -> int:
    """``what()`` once it is ``want`` (a writer's mapping after the hand-over, and a mapping a
    reader made, are unmapped by a background thread just after), or its last value after
    10 s."""
    deadline = time.monotonic() + 10
    while (n := what()) != want and time.monotonic() < deadline:
        time.sleep(0.01)
    return n


@pytest.fixture(autouse=True)
def no_loan_left() -> Any:
    yield
    assert settle(loan_fds) == 0, "a loan's descriptor was left open"
    assert settle(loan_maps) == 0, "a loan's mapping was left behind"


def fill(loan: csp.Loan, tag: int) -> None:
    mv = memoryview(loan)
    mv[:8] = struct.pack("<Q", tag)
    mv[-1:] = b"\xee"
    mv.release()


def check(buf: object, n: int, tag: int) -> None:
    assert isinstance(buf, csp.LoanBuffer), type(buf)
    mv = memoryview(buf)
    assert mv.readonly
    assert mv.nbytes == n == len(buf)
    assert struct.unpack("<Q", mv[:8])[0] == tag
    assert mv[-1] == 0xEE
    with pytest.raises(TypeError):
        mv[0] = 1
    mv.release()


# -- in process ------------------------------------------------------------------------------


def test_a_loan_is_written_in_place_and_read_by_reference() -> None:
    ch: csp.Channel[Any] = csp.Channel(1)
    loan = ch.loan(3 * MIB)
    assert (len(loan), loan.nbytes, loan.spent) == (3 * MIB, 3 * MIB, False)
    fill(loan, 7)
    ch.write(loan)
    assert loan.spent
    with pytest.raises(ValueError, match="already written"):
        memoryview(loan)
    with pytest.raises(ValueError, match="already written"):
        ch.write(loan)
    got = ch.read()
    check(got, 3 * MIB, 7)
    assert loan_maps() == 1  # one mapping, moved from the writer to the reader: no copy
    del got
    assert loan_maps() == 0


def test_a_view_alive_at_write_is_a_buffer_error_and_nothing_is_sent() -> None:
    ch: csp.Channel[Any] = csp.Channel(1)
    w = ch.writer()
    loan = w.loan(4096)
    mv = memoryview(loan)
    with pytest.raises(BufferError, match="nothing was sent"):
        w.write(loan)
    with pytest.raises(csp.WouldBlock):
        ch.read_nowait()
    assert not loan.spent
    mv.release()
    w.write_nowait(loan)
    assert isinstance(ch.read_nowait(), csp.LoanBuffer)


def test_a_loan_never_written_frees_its_memory() -> None:
    loan = csp.Channel().loan(MIB)
    memoryview(loan)[:] = b"x" * MIB
    assert (loan_maps(), loan_fds()) == (1, 1)
    del loan
    assert (loan_maps(), loan_fds()) == (0, 0)
    other = csp.Channel().loan(10)
    other.release()
    assert other.spent
    assert loan_maps() == 0


@pytest.mark.parametrize("shared", [False, True], ids=["in-process", "shared"])
def test_the_readers_memory_lives_until_its_last_view_goes(shared: bool) -> None:
    np = pytest.importorskip("numpy")
    ch: csp.Channel[Any] = csp.Channel(0 if shared else 1, name="views")
    if shared:
        _shm.share(ch)  # the reader maps the loan itself, as another process would
    loan = ch.loan(8 * 1000)
    np.frombuffer(loan, dtype=np.int64)[:] = np.arange(1000)  # a writable numpy view
    got: Any = None
    if shared:
        box: list[object] = []
        t = threading.Thread(target=lambda: box.append(ch.read(timeout=JOIN)))
        t.start()
        ch.write(loan, timeout=JOIN)
        t.join(JOIN)
        got = box.pop()
        assert settle(loan_maps, 1) == 1  # the writer's own mapping is gone
    else:
        ch.write(loan)
        got = ch.read()
    arr = np.frombuffer(got, dtype=np.int64)
    assert not arr.flags.writeable
    assert int(arr.sum()) == sum(range(1000))
    with pytest.raises(BufferError):
        got.release()  # the array still uses it
    del got
    assert loan_maps() == 1  # the array keeps the memory
    assert int(arr[999]) == 999
    del arr
    # A reader's mapping, maybe the file's last, is unmapped off its thread, just after.
    assert settle(loan_maps) == 0


def test_bad_sizes_are_refused_at_the_call() -> None:
    ch: csp.Channel[Any] = csp.Channel()
    with pytest.raises(ValueError, match="0 <= nbytes"):
        ch.loan(-1)
    with pytest.raises(TypeError, match="not float"):
        ch.loan(1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not a bool"):
        ch.loan(True)
    with pytest.raises(ValueError, match="too large"):
        ch.loan(1 << 200)
    empty = ch.loan(0)
    assert len(memoryview(empty)) == 0


def test_an_output_guard_refuses_a_loan() -> None:
    ch: csp.Channel[Any] = csp.Channel()
    with pytest.raises(TypeError, match="Output guard cannot offer a Loan"):
        csp.Output(ch, ch.loan(16))


def test_a_retired_writer_cannot_loan() -> None:
    w = csp.Channel().writer()
    w.retire()
    with pytest.raises(csp.ChannelRetired):
        w.loan(16)


def test_a_loan_does_not_pickle_and_a_loan_buffer_pickles_as_bytes() -> None:
    import pickle

    ch: csp.Channel[Any] = csp.Channel(1)
    loan = ch.loan(5)
    memoryview(loan)[:] = b"hello"
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(loan)
    ch.write(loan)
    assert pickle.loads(pickle.dumps(ch.read())) == b"hello"


# -- every backend, in process ----------------------------------------------------------------


def _writer_thread(w: csp.Writer, n: int, tag: int) -> None:
    loan = w.loan(n)
    fill(loan, tag)
    w.write(loan)


async def _writer_async(w: csp.Writer, n: int, tag: int) -> None:
    loan = w.loan(n)
    fill(loan, tag)
    await w.awrite(loan)


def _reader_thread(r: csp.Reader, n: int, tag: int) -> bool:
    check(r.read(), n, tag)
    return True


async def _reader_async(r: csp.Reader, n: int, tag: int) -> bool:
    check(await r.aread(), n, tag)
    return True


def _side(kind: str, write: bool) -> tuple[Callable[..., Any], str]:
    if kind == "asyncio":
        return (_writer_async if write else _reader_async), "asyncio"
    return (_writer_thread if write else _reader_thread), kind


@pytest.mark.parametrize("wkind", ["thread", "greenlet", "asyncio"])
@pytest.mark.parametrize("rkind", ["thread", "greenlet", "asyncio"])
def test_every_backend_hands_a_loan_over_in_process(wkind: str, rkind: str) -> None:
    ch: csp.Channel[Any] = csp.Channel(name="inproc")
    wf, wb = _side(wkind, True)
    rf, rb = _side(rkind, False)
    w = csp.process(backend=wb)(wf)(ch.writer(), MIB, 11)
    r = csp.process(backend=rb)(rf)(ch.reader(), MIB, 11)
    assert csp.Par(w, r).run() == [None, True]


# -- across OS processes ----------------------------------------------------------------------


def os_reader(r: csp.Reader, n: int, tag: int, kind: str) -> bool:
    """In a child: reads one loan with a process of ``kind``."""
    f, b = _side(kind, False)
    return bool(csp.Par(csp.process(backend=b)(f)(r, n, tag)).run()[0])


def os_writer(w: csp.Writer, n: int, tag: int, kind: str) -> None:
    """In a child: writes one loan from a process of ``kind``."""
    f, b = _side(kind, True)
    csp.Par(csp.process(backend=b)(f)(w, n, tag)).run()


@pytest.mark.parametrize("kind", ["thread", "greenlet", "asyncio"])
def test_a_loan_crosses_to_an_os_process(kind: str) -> None:
    ch: csp.Channel[Any] = csp.Channel(name="to-child")
    r = csp.process(backend="os")(os_reader)(ch.reader(), 3 * MIB, 5, kind)
    wf, wb = _side(kind, True)
    w = csp.process(backend=wb)(wf)(ch.writer(), 3 * MIB, 5)
    assert csp.Par(w, r).run() == [None, True]


@pytest.mark.parametrize("kind", ["thread", "greenlet", "asyncio"])
def test_a_loan_crosses_from_an_os_process(kind: str) -> None:
    ch: csp.Channel[Any] = csp.Channel(name="from-child")
    w = csp.process(backend="os")(os_writer)(ch.writer(), 2 * MIB, 9, kind)
    rf, rb = _side(kind, False)
    r = csp.process(backend=rb)(rf)(ch.reader(), 2 * MIB, 9)
    assert csp.Par(w, r).run() == [None, True]


def os_hold_and_die(r: csp.Reader, ready: csp.Writer) -> None:
    """In a child: takes a loan, looks at it, says so, and is SIGKILLed holding it."""
    got = r.read()
    assert bytes(memoryview(got)[:4]) == b"kill"
    ready.write(os.getpid())
    time.sleep(60)


def test_a_reader_killed_holding_a_loan_leaves_nothing_behind() -> None:
    ch: csp.Channel[Any] = csp.Channel(name="killed")
    ready: csp.Channel[int] = csp.Channel(name="ready")
    h = csp.Spawn(csp.process(backend="os")(os_hold_and_die)(ch.reader(), ready.writer()))
    loan = ch.loan(16 * MIB)
    memoryview(loan)[:] = b"kill" * (4 * MIB)
    ch.write(loan)
    pid = ready.read(timeout=JOIN)
    # The writer let go at once (its descriptor closed, its mapping unmapped off the path).
    assert settle(loan_fds) == 0
    assert settle(loan_maps) == 0
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(ExceptionGroup) as info:
        h.join(JOIN)
    assert any(isinstance(e, csp.ProcessCrashed) for e in info.value.exceptions)
    # The child held the only mapping: nothing of the loan is left in any process.
    assert not os.path.exists(f"/proc/{pid}/maps")


def test_the_writer_lets_go_once_a_reader_in_another_process_has_it() -> None:
    ch: csp.Channel[Any] = csp.Channel(name="let-go")
    r = csp.process(backend="os")(os_reader)(ch.reader(), 64 * MIB, 3, "thread")
    h = csp.Spawn(r)
    loan = ch.loan(64 * MIB)
    fill(loan, 3)
    ch.write(loan, timeout=JOIN)
    assert loan.spent
    assert h.join(JOIN) is True


@pytest.mark.parametrize("shared", [False, True], ids=["in-process", "shared"])
def test_an_alt_input_guard_takes_a_loan(shared: bool) -> None:
    ch: csp.Channel[Any] = csp.Channel(name="alt-in")
    other: csp.Channel[Any] = csp.Channel(name="alt-other")
    if shared:
        _shm.share(ch)
    box: list[Any] = []
    t = threading.Thread(target=lambda: box.append(csp.Alt(other, ch).select()))
    t.start()
    loan = ch.loan(MIB)
    fill(loan, 21)
    ch.write(loan, timeout=JOIN)
    t.join(JOIN)
    guard, got = box.pop()
    assert guard is ch
    check(got, MIB, 21)
    del got


@pytest.mark.parametrize("shared", [False, True], ids=["in-process", "shared"])
def test_poison_frees_a_loan_in_flight(shared: bool) -> None:
    ch: csp.Channel[Any] = csp.Channel(name="poisoned")
    if shared:
        _shm.share(ch)
    loan = ch.loan(MIB)
    memoryview(loan)[:] = b"p" * MIB
    threading.Timer(0.2, ch.poison).start()
    with pytest.raises(csp.ChannelPoisoned):
        ch.write(loan, timeout=JOIN)
    assert loan.spent
    assert (loan_maps(), loan_fds()) == (0, 0)


@pytest.mark.parametrize("shared", [False, True], ids=["in-process", "shared"])
def test_a_write_that_sent_nothing_gives_the_loan_back(shared: bool) -> None:
    # TimeoutError and WouldBlock: nothing was sent, so the loan is still the writer's.
    ch: csp.Channel[Any] = csp.Channel(name="late")
    if shared:
        _shm.share(ch)
    loan = ch.loan(MIB)
    memoryview(loan)[:4] = b"back"
    with pytest.raises(TimeoutError):
        ch.write(loan, timeout=0.1)
    assert not loan.spent
    w = ch.writer()
    with pytest.raises(csp.WouldBlock):
        w.write_nowait(loan)
    assert not loan.spent
    assert bytes(memoryview(loan)[:4]) == b"back"
    with pytest.raises(csp.WouldBlock):
        ch.read_nowait()
    box: list[object] = []
    t = threading.Thread(target=lambda: box.append(ch.read(timeout=JOIN)))
    t.start()
    w.write(loan, timeout=JOIN)
    t.join(JOIN)
    assert loan.spent
    got = box.pop()
    assert isinstance(got, csp.LoanBuffer)
    assert bytes(memoryview(got)[:4]) == b"back"


@pytest.mark.parametrize("shared", [False, True], ids=["in-process", "shared"])
def test_an_invalid_timeout_is_refused_before_the_loan_is_spent(shared: bool) -> None:
    # awrite spent the loan first and then refused the timeout (write checked it first).
    ch: csp.Channel[Any] = csp.Channel(name="bad-timeout")
    if shared:
        _shm.share(ch)
    loan = ch.loan(16)
    for target in (ch, ch.writer()):
        for call in (target.write, target.awrite):
            with pytest.raises(TypeError, match="timeout must be a number"):
                call(loan, timeout="soon")
            with pytest.raises(ValueError, match="timeout must be >= 0"):
                call(loan, timeout=-1)
            assert not loan.spent


@pytest.mark.parametrize("shared", [False, True], ids=["in-process", "shared"])
def test_a_write_to_a_retired_channel_frees_its_loan(shared: bool) -> None:
    ch: csp.Channel[Any] = csp.Channel(name="gone")
    if shared:
        _shm.share(ch)
    ch.reader().retire()
    loan = ch.loan(MIB)
    with pytest.raises(csp.ChannelRetired):
        ch.write(loan, timeout=JOIN)
    assert loan.spent
    assert (loan_maps(), loan_fds()) == (0, 0)


def test_a_buffered_shared_channel_copies_the_loan() -> None:
    # Nobody is sure to hold the loan until a reader takes a buffered message (its writer may
    # have ended): its bytes go through the ring, and arrive as read-only bytes.
    ch: csp.Channel[Any] = csp.Channel(2, name="buffered")
    _shm.share(ch)
    loan = ch.loan(MIB)
    memoryview(loan)[:2] = b"ok"
    ch.write(loan)
    assert (loan_maps(), loan_fds()) == (0, 0)
    got = ch.read()
    assert isinstance(got, bytes)
    assert got[:2] == b"ok"
    assert len(got) == MIB


def os_digest(r: csp.Reader) -> tuple[str, int, bytes]:
    """In a child: what arrived (type, length, first bytes)."""
    v = r.read()
    return type(v).__name__, len(v), bytes(memoryview(v)[:4])


def test_a_reader_that_may_not_open_the_writers_loan_gets_a_copy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Ptrace rules may forbid reopening another process's descriptors: the reader marks the
    # message rejected and the writer sends the bytes through the ring. Here the child is told
    # so by its environment (spawned, it gets this one).
    ch: csp.Channel[Any] = csp.Channel(name="rejected")
    h = csp.Spawn(csp.process(backend="os")(os_digest)(ch.reader()))
    loan = ch.loan(2 * MIB)
    memoryview(loan)[:4] = b"zero"
    ch.write(loan, timeout=JOIN)  # the parent decides, once, to use loans
    assert h.join(JOIN) == ("LoanBuffer", 2 * MIB, b"zero")
    monkeypatch.setenv("FERROCSP_START_METHOD", "spawn")
    monkeypatch.setenv("FERROCSP_SHM_VM_READV", "0")
    ch2: csp.Channel[Any] = csp.Channel(name="rejected2")
    h = csp.Spawn(csp.process(backend="os")(os_digest)(ch2.reader()))
    loan = ch2.loan(2 * MIB)
    memoryview(loan)[:4] = b"copy"
    ch2.write(loan, timeout=JOIN)
    assert h.join(JOIN) == ("bytes", 2 * MIB, b"copy")


# -- forged loan messages ---------------------------------------------------------------------


def _forged(edit: Callable[[mmap.mmap, int], None], n: int = MIB) -> tuple[object, list[object]]:
    """Writes a loan of ``n`` bytes from a thread on a new shared rendezvous channel, lets
    ``edit(mapping, message offset)`` rewrite its published message, then reads once: what the
    read returned or raised, and what the write did ([exception] or [None])."""
    ch: csp.Channel[Any] = csp.Channel(name="forged")
    side = _shm.share(ch)
    wrote: list[object] = []
    loan = ch.loan(n)
    memoryview(loan)[:6] = b"honest"

    def write() -> None:
        try:
            ch.write(loan, timeout=20)
            wrote.append(None)
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            wrote.append(exc)

    t = threading.Thread(target=write)
    t.start()
    fd = side.native.fd
    with mmap.mmap(fd, os.fstat(fd).st_size) as m:
        wait_until(lambda: ch.stats().writers_waiting > 0, what="the writer's published message")
        at = m.find(struct.pack("<II", LOAN, os.getpid()), RING_AT, RING_AT + 4096)
        assert at >= 0, "no loan message in the ring"
        edit(m, at)
        got: object
        try:
            got = ch.read(timeout=10)
        except BaseException as exc:  # noqa: BLE001 - inspected by the test
            got = exc
    t.join(30)
    assert not t.is_alive(), "the writer still waits for its forged message"
    return got, wrote


def _assert_corrupt(got: object, wrote: list[object]) -> None:
    assert isinstance(got, csp.ChannelPoisoned), repr(got)[:200]
    assert "corrupt" in str(got)
    assert len(wrote) == 1, wrote
    assert isinstance(wrote[0], csp.ChannelPoisoned), wrote


def test_the_writers_own_loan_message_arrives() -> None:
    got, wrote = _forged(lambda m, at: None)
    assert isinstance(got, csp.LoanBuffer)
    assert bytes(memoryview(got)[:6]) == b"honest"
    assert wrote == [None]
    del got


@pytest.mark.parametrize("what", ["a file", "a memfd that is not the loan"])
def test_a_loan_message_naming_another_file_maps_nothing(what: str) -> None:
    other = open("/proc/self/stat", "rb") if what == "a file" else None  # noqa: SIM115
    memfd = os.memfd_create("not-a-loan") if other is None else -1
    fd = other.fileno() if other is not None else memfd
    try:
        got, wrote = _forged(
            lambda m, at: m.__setitem__(slice(at + 8, at + 12), struct.pack("<i", fd))
        )
    finally:
        if other is not None:
            other.close()
        else:
            os.close(memfd)
    _assert_corrupt(got, wrote)


def test_a_loan_message_with_another_uuid_maps_nothing() -> None:
    got, wrote = _forged(lambda m, at: m.__setitem__(slice(at + 24, at + 40), b"\0" * 16))
    _assert_corrupt(got, wrote)


@pytest.mark.parametrize("length", [1 << 40, MIB + 4096, 0])
def test_a_loan_message_with_another_length_maps_nothing(length: int) -> None:
    got, wrote = _forged(
        lambda m, at: m.__setitem__(slice(at + 16, at + 24), struct.pack("<Q", length))
    )
    _assert_corrupt(got, wrote)


def test_a_loan_message_naming_another_process_is_corrupt() -> None:
    got, wrote = _forged(lambda m, at: m.__setitem__(slice(at + 4, at + 8), struct.pack("<I", 1)))
    _assert_corrupt(got, wrote)
