"""A child made by ``fork`` starts afresh: no lock that another thread of its parent held at
the instant of the fork, no record of the parent's threads (futex watchers, the deadlock
watchdog), whatever the parent was doing (docs/design.md, "What a forked child starts with;
whose memory a reader may read").

Each test makes the parent busy the way a real network makes it (shared selections that took
cells, cooperative waits that started a watcher thread, a watchdog), holds a process-wide lock
from a helper thread (``_hold_lock_for_test``: the worst instant, made certain), forks with
``os.fork`` and lets the child use shared channels from a thread, greenlets and asyncio. The
child must finish within a generous bound; before the fix it blocked on the held lock forever.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import traceback
import warnings
from collections.abc import Callable

import pytest

import ferrocsp as csp
from ferrocsp import _native, _shm

pytestmark = pytest.mark.timeout(90)

#: How long the parent's helper thread holds a lock (the parent goes on afterwards; in the
#: child, which has no such thread, it was held forever).
HOLD = 3.0
#: The bound on the child's whole work (a few 50 ms timeouts), generous for a loaded machine.
CHILD_LIMIT = 30.0


def _shared(name: str) -> csp.Channel[object]:
    ch: csp.Channel[object] = csp.Channel(name=name)
    _shm.share(ch)
    return ch


def _in_child(work: Callable[[], None]) -> None:
    """Runs ``work`` in a child made by ``os.fork``; fails if it raises or does not finish
    within CHILD_LIMIT (the child is then killed)."""
    with warnings.catch_warnings():
        # Python warns that forking a process with threads may deadlock the child: the point.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        code = 1
        try:
            work()
            code = 0
        except BaseException:  # noqa: BLE001 - reported through the exit code
            traceback.print_exc()
        finally:
            os._exit(code)
    deadline = time.monotonic() + CHILD_LIMIT
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"the forked child hung (killed after {CHILD_LIMIT} s)")
        time.sleep(0.02)
    assert os.waitstatus_to_exitcode(status) == 0, "the forked child failed (see its stderr)"


@pytest.fixture
def busy_parent() -> csp.Channel[object]:
    """A shared channel in a parent that has taken selection cells and started a futex
    watcher thread on it."""
    ch = _shared("busy")
    guard, _ = csp.select(ch, csp.Timeout(0.01))  # a shared selection that waited: a cell
    assert isinstance(guard, csp.Timeout)

    @csp.process(backend="greenlet")
    def cooperative() -> None:
        with pytest.raises(TimeoutError):
            ch.read(timeout=0.01)  # a cooperative wait: a watcher thread

    csp.Par(cooperative()).run()
    return ch


def _child_uses_shared_channels(ch: csp.Channel[object]) -> None:
    """The child's work: a thread, a greenlet and an asyncio task each wait on shared channels
    (selections that take cells, cooperative waits that need a watcher of the child's own)."""
    other = _shared("child's own")
    guard, _ = csp.select(ch, other, csp.Timeout(0.05))
    assert isinstance(guard, csp.Timeout)

    @csp.process(backend="greenlet")
    def greenlet_side() -> None:
        with pytest.raises(TimeoutError):
            ch.read(timeout=0.05)
        g, _ = csp.select(other, csp.Timeout(0.05))
        assert isinstance(g, csp.Timeout)

    csp.Par(greenlet_side()).run()

    async def asyncio_side() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ch.aread(), 0.05)
        g, _ = await csp.Alt(other, csp.Timeout(0.05)).aselect()
        assert isinstance(g, csp.Timeout)

    asyncio.run(asyncio_side())


def test_child_forked_while_the_cells_registry_is_held(busy_parent: csp.Channel[object]) -> None:
    _native._hold_lock_for_test("cells", HOLD)
    _in_child(lambda: _child_uses_shared_channels(busy_parent))


def test_child_forked_while_the_parking_lot_is_held(busy_parent: csp.Channel[object]) -> None:
    _native._hold_lock_for_test("parked", HOLD)
    _in_child(lambda: _child_uses_shared_channels(busy_parent))


def test_deadlock_watchdog_reports_in_a_forked_child(busy_parent: csp.Channel[object]) -> None:
    # The parent's watchdog thread runs (this thread has used channels); the child has none.
    def work() -> None:
        lonely: csp.Channel[int] = csp.Channel(name="lonely")
        with pytest.raises(csp.Deadlock, match="lonely"):
            lonely.read()

    _in_child(work)
