"""Likely slips of a newcomer raise a TypeError that says what to do, before anything runs,
instead of doing the wrong thing silently (``Par(tick)`` used to return ``[<Process 'tick'>]``
without running the body)."""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

import pytest

import ferrocsp as csp

ran: list[str] = []


@csp.process
def tick() -> str:
    ran.append("tick")
    return "tick"


async def atick() -> str:
    return "atick"


COMPOSERS: dict[str, Callable[[Any], object]] = {
    "Par": lambda p: csp.Par(p).run(),
    "Seq": lambda p: csp.Seq(p).run(),
    "Spawn": lambda p: csp.Spawn(p).join(),
}


@pytest.fixture(params=sorted(COMPOSERS))
def compose(request: pytest.FixtureRequest) -> Callable[[Any], object]:
    return COMPOSERS[request.param]


def test_a_process_factory_is_refused(compose: Callable[[Any], object]) -> None:
    ran.clear()
    with pytest.raises(TypeError, match=r"factory 'tick', not a process: call it .*tick\(\.\.\.\)"):
        compose(tick)
    assert ran == []  # nothing ran


def test_the_called_factory_runs(compose: Callable[[Any], object]) -> None:
    ran.clear()
    result = compose(tick())
    assert ran == ["tick"]
    assert result in (["tick"], "tick")


def test_a_list_of_processes_is_refused(compose: Callable[[Any], object]) -> None:
    for many in ([tick(), tick()], (tick(),), (tick() for _ in range(2))):
        with pytest.raises(TypeError, match=r"separate arguments, e\.g\. Par\(\*processes\)"):
            compose(many)


def test_a_coroutine_object_is_refused_and_closed(compose: Callable[[Any], object]) -> None:
    coro = atick()
    with pytest.raises(TypeError, match=r"coroutine object .* pass the function itself"):
        compose(coro)
    assert coro.cr_frame is None  # closed: no "never awaited" warning (warnings are errors)
    gc.collect()


def test_the_async_function_itself_runs(compose: Callable[[Any], object]) -> None:
    assert compose(atick) in (["atick"], "atick")


def test_a_class_is_refused(compose: Callable[[Any], object]) -> None:
    with pytest.raises(TypeError, match="the class Par, not a process"):
        compose(csp.Par)


def test_the_position_is_named() -> None:
    with pytest.raises(TypeError, match="Par argument 1 is the @process factory 'tick'"):
        csp.Par(tick(), tick)
