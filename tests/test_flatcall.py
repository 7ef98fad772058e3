"""``ferrocsp._flatcall.call`` is ``fn(*args, **kwargs)``, for every arity it special-cases
and beyond, with keywords, and with exceptions."""

from __future__ import annotations

from typing import Any

import pytest

from ferrocsp._flatcall import call


def _echo(*args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    return args, kwargs


@pytest.mark.parametrize("n", range(10))
@pytest.mark.parametrize("kwargs", [{}, {"k": 1}, {"a": None, "b": [2]}])
def test_call_passes_the_same_arguments(n: int, kwargs: dict[str, Any]) -> None:
    args = tuple(f"a{i}" for i in range(n))
    assert call(_echo, args, kwargs) == _echo(*args, **kwargs)


def test_call_of_builtins_and_fixed_signatures() -> None:
    assert call(max, (3, 9, 4), {}) == 9
    assert call(sorted, ([3, 1, 2],), {"reverse": True}) == [3, 2, 1]

    def two(a: int, b: int) -> int:
        return a - b

    assert call(two, (5, 3), {}) == 2
    assert call(two, (), {"b": 3, "a": 5}) == 2
    with pytest.raises(TypeError, match="missing 1 required positional argument"):
        call(two, (1,), {})


def test_call_propagates_exceptions() -> None:
    def boom(x: int) -> None:
        raise ValueError(x)

    with pytest.raises(ValueError, match="7"):
        call(boom, (7,), {})
