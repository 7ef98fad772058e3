"""The shared-test kit (tests/_kit.py) itself: a body written once really runs on the backend
it is parametrized with, keeps its name and arguments, and cannot silently stop being tested
(a body that suspends outside asyncio fails loudly)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import ferrocsp as csp
from _kit import SHARED_BACKENDS, Kit, current_backend
from _os_support import backend_fixture
from _support import all_exceptions, notes

pytestmark = pytest.mark.timeout(30)

backend = backend_fixture(SHARED_BACKENDS)  # the kit's os flavour too


async def where(k: Kit) -> str:
    return current_backend()


def test_body_runs_on_its_backend(k: Kit) -> None:
    assert k.run(where) == k.backend
    assert k.Par(k.process(where)(), k.callable(where)).run() == [k.backend, k.backend]
    assert k.Spawn(k.process(where)()).join(timeout=10) == k.backend


async def on_a_loop(k: Kit) -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def test_async_flavours_run_bodies_on_an_event_loop(k: Kit) -> None:
    """asyncio and os-asyncio bodies run as coroutines on a loop (in the child for
    os-asyncio), the others are driven without one: the coroutine backend's by its native
    scheduler, thread and greenlet ones by the kit."""
    on_loop = k.is_async and k.backend != "coroutine"
    assert k.run(on_a_loop) is on_loop
    assert k.Par(k.process(on_a_loop)()).run() == [on_loop]


async def worker(k: Kit, a: csp.Channel, *, b: csp.Channel) -> None:
    raise ValueError("x")


def test_process_name_and_arguments_are_the_bodys(k: Kit) -> None:
    a, b = csp.Channel(name="a"), csp.Channel(name="b")
    p = k.process(worker)(a, b=b)
    assert p.name == "worker"
    assert p.args == (a,)
    assert p.kwargs == {"b": b}
    assert p.endpoints() == [a, b]
    assert p.backend == k.backend
    assert k.process(worker, name="other")(a, b=b).name == "other"
    with pytest.raises(ExceptionGroup) as info:
        k.Par(p).run()
    (exc,) = all_exceptions(info.value)
    assert isinstance(exc, ValueError)
    assert "in process 'worker'" in notes(exc)
    assert a.stats().poisoned
    assert b.stats().poisoned


async def reads(k: Kit, c: csp.Channel) -> Any:
    return await k.read(c)


def test_spawned_body_keeps_its_raw_exception(k: Kit) -> None:
    ch = csp.Channel(name="raw")
    ch.poison()
    exc = k.spawn(reads, ch).exception()
    assert isinstance(exc, csp.ChannelPoisoned)
    with pytest.raises(csp.ChannelPoisoned):
        k.run(reads, ch)


async def sleeps(k: Kit) -> None:
    await asyncio.sleep(0)


# Through the fixture (indirect), so the os case runs under no_leaks.
@pytest.mark.parametrize("backend", ["thread", "greenlet", "os"], indirect=True)
def test_body_that_suspends_outside_asyncio_fails(k: Kit) -> None:
    with pytest.raises(RuntimeError, match="suspended outside asyncio"):
        k.run(sleeps)
