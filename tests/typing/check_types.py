"""Type-level tests of ferrocsp's public API, checked by mypy (tests/test_typing.py runs
``mypy --strict`` on this file; it is never executed). ``assert_type`` pins what a type checker
infers; a ``# type: ignore[code]`` pins an error, since mypy --strict reports an ignore that
no longer silences anything (warn_unused_ignores)."""

from __future__ import annotations

from typing import Any, assert_type

import ferrocsp as csp
from ferrocsp._backends import Backend

# --- Channel[T], Reader[T], Writer[T] -----------------------------------------------------
ch: csp.Channel[int] = csp.Channel()
assert_type(ch, csp.Channel[int])
assert_type(ch.read(), int)
assert_type(ch.read(timeout=1.0), int)
assert_type(ch.read_nowait(), int)
assert_type(ch.read_many(8, timeout=1.0), list[int])
assert_type(ch.write_many([1, 2, 3], timeout=1.0), None)
assert_type(ch.reader().read_many(2), list[int])
assert_type(ch.writer().write_many(iter([1])), None)
assert_type(ch.reader(), csp.Reader[int])
assert_type(ch.reader().read(), int)
assert_type(ch.writer(), csp.Writer[int])
assert_type(ch.writer().channel, csp.Channel[int])
assert_type(next(iter(ch.reader())), int)
for value in ch:
    assert_type(value, int)
ch.write(1)
ch.write("one")  # type: ignore[arg-type]
ch.writer().write("one")  # type: ignore[arg-type]

# Without a parameter a channel carries Any, so untyped code checks as before.
anything = csp.Channel(4, name="x")
assert_type(anything, csp.Channel[Any])
assert_type(anything.read(), Any)


async def coroutines(r: csp.Reader[str], w: csp.Writer[bytes]) -> None:
    assert_type(await r.aread(), str)
    assert_type(await w.awrite(b"x"), None)
    async for s in r:
        assert_type(s, str)


# --- Ends as context managers: __exit__ returns None, so a with block never swallows ----
def after_with(w: csp.Writer[int]) -> int:
    with w:
        raise ValueError("a with block over an end re-raises")
    # mypy knows this line is unreachable only because __exit__ returns None, not bool;
    # with `-> bool` it would demand a return statement here.


with ch.writer() as w:
    assert_type(w, csp.Writer[int])
with ch.reader() as r:
    assert_type(r, csp.Reader[int])


# --- Processes, Par, Seq, Spawn -------------------------------------------------------------
@csp.process
def produce(out: csp.Writer[int], n: int) -> int:
    for i in range(n):
        out.write(i)
    return n


@csp.process
def consume(inp: csp.Reader[int]) -> str:
    return ",".join(str(v) for v in inp)


@csp.process
async def aconsume(inp: csp.Reader[int]) -> float:
    return float(await inp.aread())


assert_type(produce(ch.writer(), 3), csp.Process[int])
assert_type(aconsume(ch.reader()), csp.Process[float])  # the coroutine's result, not it
produce(ch.reader(), 3)  # type: ignore[arg-type]
produce(ch.writer())  # type: ignore[call-arg]

assert_type(csp.Par(produce(ch.writer(), 3)).run(), list[int | None])
assert_type(csp.Par(produce(ch.writer(), 3), produce(ch.writer(), 4)).run(), list[int | None])
# Different results: their common supertype (a list cannot say more).
assert_type(csp.Par(produce(ch.writer(), 3), consume(ch.reader())).run(), list[object])
assert_type(csp.Seq(consume(ch.reader())).run(), list[str | None])
assert_type(csp.Spawn(consume(ch.reader())).join(), str | None)
assert_type(csp.Spawn(aconsume(ch.reader())).result, float | None)
assert_type(csp.Par(lambda: 1).run(), list[int | None])
# A Par is a process: nested, its result is its list.
assert_type(csp.Par(csp.Par(consume(ch.reader()))).run(), list[list[str | None] | None])

# backend is a Literal: a misspelt backend is a type error, not only a ValueError.
csp.Par(consume(ch.reader()), backend="greenlet")
csp.Par(consume(ch.reader()), backend="gevent")  # type: ignore[arg-type]
csp.Spawn(consume(ch.reader()), backend="os")
csp.process(backend="thread")
csp.process(backend="threads")  # type: ignore[call-overload]
csp.set_default_backend("greenlet")
csp.set_default_backend("fibers")  # type: ignore[arg-type]
good: Backend = "asyncio"
good_too: Backend = "coroutine"
bad: Backend = "fibers"  # type: ignore[assignment]
