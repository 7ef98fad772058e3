"""python-csp's ``csp.builtins``: ready-made server processes over python-csp channels.

Where ``ferrocsp.builtins`` has the same process (``Id``, ``Succ``, ``Prefix``, ``Delta2``/
``Splitter``, ``Plus``/``Pairs``, ``Mult``, ``Generate``, ``Printer``, ``Blackhole``), the
python-csp process runs it on the channel's ferrocsp channel; the others (``Pred``, ``Mux2``,
``Clock``, ``Zeroes``, ``GenerateFloats``, ``FixedDelay``, ``Fibonacci``, ``Sign`` and the
operator processes ``Sub`` ... ``Is_Not``) are small loops here. Every one is a python-csp
``@forever`` process of ``csp.csp``'s implementation: arguments are channels first, then
parameters, as in python-csp.

Invariants:
- Each runs until a channel it uses is poisoned, then ends cleanly and poisons its channels.
- Binary operator processes read their first input, then their second, then write
  ``op(a, b)``; unary ones write ``op(x)`` for each ``x``.
"""

from __future__ import annotations

import math
import operator
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

import ferrocsp as csp
from ferrocsp import builtins as fb

from . import csp as _api
from ._channel import Channel, misuse

__all__ = [
    "And",
    "Blackhole",
    "Clock",
    "Cos",
    "Delta2",
    "Div",
    "Eq",
    "Fibonacci",
    "FixedDelay",
    "FloorDiv",
    "Generate",
    "GenerateFloats",
    "Geq",
    "Gt",
    "Id",
    "Is",
    "Is_Not",
    "LShift",
    "Land",
    "Leq",
    "Lnand",
    "Lnor",
    "Lnot",
    "Lor",
    "Lt",
    "Lxor",
    "Mod",
    "Mul",
    "Mult",
    "Multiply",
    "Mux2",
    "Nand",
    "Ne",
    "Neg",
    "Nor",
    "Not",
    "Or",
    "Pairs",
    "Plus",
    "Pow",
    "Pred",
    "Prefix",
    "Printer",
    "RShift",
    "Sign",
    "Sin",
    "Splitter",
    "Sub",
    "Succ",
    "Xor",
    "Zeroes",
]  # fmt: skip

_forever: Any = _api.forever


def _ch(api: str, c: Any) -> csp.Channel:
    if not isinstance(c, Channel):
        raise misuse(f"builtins.{api}", f"expected a csp Channel, got {c!r}")
    return c._ch


def _engine(name: str, *args: Any, **kwargs: Any) -> Iterator[None]:
    """Runs ``ferrocsp.builtins.<name>`` on the channels' engine channels (a generator, so a
    python-csp server can step it: the whole run is one step)."""
    chans = [_ch(name, a) if isinstance(a, Channel) else a for a in args]
    getattr(fb, name)(*chans, **kwargs).run()
    yield


def _id(cin: Any, cout: Any) -> Iterator[None]:
    return _engine("Id", cin, cout)


def _succ(cin: Any, cout: Any) -> Iterator[None]:
    return _engine("Succ", cin, cout)


def _prefix(cin: Any, cout: Any, prefix_item: Any = None) -> Iterator[None]:
    return _engine("Prefix", cin, cout, prefix_item)


def _splitter(cin: Any, cout1: Any, cout2: Any) -> Iterator[None]:
    return _engine("Delta", cin, cout1, cout2)


def _plus(cin1: Any, cin2: Any, cout: Any) -> Iterator[None]:
    return _engine("Plus", cin1, cin2, cout)


def _mult(cin: Any, cout: Any, scale: Any) -> Iterator[None]:
    return _engine("Mult", cin, cout, scale)


def _generate(cout: Any) -> Iterator[None]:
    return _engine("Generate", cout)


def _printer(cin: Any, out: TextIO | None = None) -> Iterator[None]:
    # None: sys.stdout of the process that prints (a stream object cannot move to another
    # OS process; python-csp's default was its parent's sys.stdout).
    return _engine("Printer", cin, file=out)


def _blackhole(cin: Any) -> Iterator[None]:
    return _engine("Sink", cin)


def _count_from(cout: Any, step: float) -> Iterator[None]:
    n = 0
    while True:
        cout.write(n * step)
        n += 1
        yield


def _generate_floats(outchan: Any, increment: float = 0.1) -> Iterator[None]:
    return _count_from(outchan, increment)


def _zeroes(cout: Any) -> Iterator[None]:
    while True:
        cout.write(0)
        yield


def _pred(cin: Any, cout: Any) -> Iterator[None]:
    while True:
        cout.write(cin.read() - 1)
        yield


def _mux2(cin1: Any, cin2: Any, cout: Any) -> Iterator[None]:
    while True:
        cout.write(cin1.read())
        cout.write(cin2.read())
        yield


def _clock(cout: Any, resolution: float = 1) -> Iterator[None]:
    while True:
        csp.io(time.sleep, resolution)
        cout.write(None)
        yield


def _fixed_delay(cin: Any, cout: Any, delay: float) -> Iterator[None]:
    while True:
        value = cin.read()
        csp.io(time.sleep, delay)
        cout.write(value)
        yield


def _fibonacci(cout: Any) -> Iterator[None]:
    a, b = 1, 1
    while True:
        cout.write(a)
        a, b = b, a + b
        yield


def _sign(cin: Any, cout: Any, prefix: str) -> Iterator[None]:
    while True:
        cout.write(prefix + str(cin.read()))
        yield


def _unop(name: str, fn: Callable[[Any], Any]) -> Any:
    def body(cin: Any, cout: Any) -> Iterator[None]:
        while True:
            cout.write(fn(cin.read()))
            yield

    body.__name__ = body.__qualname__ = f"_{name}"
    body.__doc__ = f"Writes the {name} of each value read."
    globals()[body.__name__] = body  # module-level, so OS processes find it by name
    return _forever(body)


def _binop(name: str, fn: Callable[[Any, Any], Any]) -> Any:
    def body(cin1: Any, cin2: Any, cout: Any) -> Iterator[None]:
        while True:
            a = cin1.read()
            b = cin2.read()
            cout.write(fn(a, b))
            yield

    body.__name__ = body.__qualname__ = f"_{name}"
    body.__doc__ = f"Writes the {name} of each pair of values read (first input first)."
    globals()[body.__name__] = body
    return _forever(body)


def _checked(name: str, body: Callable[..., Iterator[None]], nchans: int) -> Any:
    """The ``@forever`` factory of ``body``, checking at the call that its first ``nchans``
    arguments are channels (so misuse fails where it is written, naming the builtin)."""
    factory = _forever(body)

    def make(*args: Any, **kwargs: Any) -> Any:
        for a in args[:nchans]:
            _ch(name, a)
        return factory(*args, **kwargs)

    make.__name__ = make.__qualname__ = name
    make.__doc__ = body.__doc__
    return make


Id = _checked("Id", _id, 2)
Succ = _checked("Succ", _succ, 2)
Pred = _forever(_pred)
Prefix = _checked("Prefix", _prefix, 2)
Splitter = _checked("Splitter", _splitter, 3)
Delta2 = Splitter
Mux2 = _forever(_mux2)
Clock = _forever(_clock)
Printer = _checked("Printer", _printer, 1)
Mult = _checked("Mult", _mult, 2)
Generate = _checked("Generate", _generate, 1)
GenerateFloats = _forever(_generate_floats)
Zeroes = _forever(_zeroes)
FixedDelay = _forever(_fixed_delay)
Fibonacci = _forever(_fibonacci)
Blackhole = _checked("Blackhole", _blackhole, 1)
Sign = _forever(_sign)
Plus = _checked("Plus", _plus, 3)
Sub = _binop("Sub", operator.sub)
Mul = _binop("Mul", operator.mul)
Div = _binop("Div", operator.truediv)
FloorDiv = _binop("FloorDiv", operator.floordiv)
Mod = _binop("Mod", operator.mod)
Pow = _binop("Pow", operator.pow)
Neg = _unop("Neg", operator.neg)
Sin = _unop("Sin", math.sin)
Cos = _unop("Cos", math.cos)
Pairs = Plus
Multiply = Mul
Not = _unop("Not", operator.invert)
And = _binop("And", operator.and_)
Or = _binop("Or", operator.or_)
Nand = _binop("Nand", lambda x, y: ~(x & y))
Nor = _binop("Nor", lambda x, y: ~(x | y))
Xor = _binop("Xor", operator.xor)
LShift = _binop("LShift", operator.lshift)
RShift = _binop("RShift", operator.rshift)
Land = _binop("Land", lambda x, y: x and y)
Lor = _binop("Lor", lambda x, y: x or y)
Lnot = _unop("Lnot", operator.not_)
Lnand = _binop("Lnand", lambda x, y: not (x and y))
Lnor = _binop("Lnor", lambda x, y: not (x or y))
Lxor = _binop("Lxor", lambda x, y: bool(x) != bool(y))
Eq = _binop("Eq", operator.eq)
Ne = _binop("Ne", operator.ne)
Geq = _binop("Geq", operator.ge)
Leq = _binop("Leq", operator.le)
Gt = _binop("Gt", operator.gt)
Lt = _binop("Lt", operator.lt)
Is = _binop("Is", operator.is_)
Is_Not = _binop("Is_Not", operator.is_not)
