"""The awaitable operations' fast entries (crates/ferrocsp-py/src/fast_method.rs): `aread()` and
`awrite(v)` skip PyO3's argument parsing; every other call shape goes to PyO3's method, so the
checks, messages, docstrings and signatures are the same as before, on channels and ends."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

import pytest

import ferrocsp as csp

pytestmark = pytest.mark.timeout(30)


def ops() -> list[tuple[str, Callable[[csp.Channel], Any], str]]:
    """(label, what has the method, method name)."""
    return [
        ("channel.aread", lambda ch: ch, "aread"),
        ("channel.awrite", lambda ch: ch, "awrite"),
        ("reader.aread", lambda ch: ch.reader(), "aread"),
        ("writer.awrite", lambda ch: ch.writer(), "awrite"),
    ]


@pytest.mark.parametrize(("label", "get", "meth"), ops(), ids=[o[0] for o in ops()])
def test_signature_and_doc_are_pyo3s(label: str, get: Any, meth: str) -> None:
    m = getattr(type(get(csp.Channel())), meth)
    sig = str(inspect.signature(m))
    if meth == "awrite":
        assert sig == "(self, /, value, *, timeout=None)"
    else:
        assert sig == "(self, /, *, timeout=None)"
    doc = m.__doc__ or ""
    assert f".{meth}(" in doc
    assert "asyncio twin" in doc


def test_unusual_call_shapes_get_pyo3s_errors() -> None:
    ch = csp.Channel()
    w, r = ch.writer(), ch.reader()
    cases: list[tuple[Callable[[], Any], str]] = [
        (lambda: ch.awrite(), "missing 1 required positional argument: 'value'"),
        (lambda: w.awrite(), "missing 1 required positional argument: 'value'"),
        (lambda: ch.awrite(1, 2), "takes 1 positional arguments but 2 were given"),
        (lambda: ch.aread(1), "takes 0 positional arguments but 1 was given"),
        (lambda: r.aread(1), "takes 0 positional arguments but 1 was given"),
        (lambda: w.awrite(1, bogus=2), "unexpected keyword argument 'bogus'"),
        (lambda: ch.aread(bogus=2), "unexpected keyword argument 'bogus'"),
        (lambda: ch.aread(timeout="soon"), "timeout must be a number of seconds or None"),
        (lambda: w.awrite(1, timeout=True), "timeout must be a number of seconds or None"),
    ]
    for call, message in cases:
        with pytest.raises(TypeError, match=message):
            call()
    with pytest.raises(ValueError, match="timeout must be >= 0"):
        r.aread(timeout=-1)


@pytest.mark.parametrize("backend", ["asyncio", "coroutine"])
def test_every_shape_communicates(backend: str) -> None:
    # The fast shape and the shapes that go through PyO3's method, mixed on one channel.
    ch = csp.Channel()

    async def writer() -> None:
        w = ch.writer()
        await ch.awrite(1)
        await w.awrite(2)
        await ch.awrite(value=3)
        await w.awrite(4, timeout=5)
        await ch.awrite(5, timeout=None)

    async def reader() -> list[int]:
        r = ch.reader()
        got = [await ch.aread(), await r.aread(), await ch.aread(timeout=5)]
        got += [await r.aread(timeout=None), await ch.aread()]
        return got

    got = csp.Par(
        csp.process(writer, backend=backend)(), csp.process(reader, backend=backend)()
    ).run()
    assert got[1] == [1, 2, 3, 4, 5]


def test_a_timed_out_fast_read_and_a_retired_end() -> None:
    ch = csp.Channel()
    r = ch.reader()

    async def main() -> None:
        with pytest.raises(TimeoutError):
            await r.aread(timeout=0.01)
        r.retire()
        with pytest.raises(csp.ChannelRetired):
            await r.aread()

    asyncio.run(main())
