"""Pickling a process function by reference when a decorator has taken its module-level name.

``@process def worker(...)`` binds ``worker`` to a factory, so pickle's by-name lookup finds
the factory and refuses the function. ``FnRef.of(fn)`` stands for such a function with its
module and qualified name; ``resolve()`` finds the factory again and returns the function it
wraps (its ``_fn``). Used to pickle processes for other OS processes (``_process``) and by
both compat layers.

Invariants:
- ``FnRef.of(fn)`` returns ``fn`` itself unless ``fn`` is wrapped by a factory bound to its own
  module-level name; ``FnRef.of(fn).resolve() is fn`` in any interpreter that imports the
  same module.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

__all__ = ["FnRef"]


class FnRef:
    """A module-level function by name, through the factory bound to that name."""

    __slots__ = ("module", "qualname")

    def __init__(self, module: str, qualname: str) -> None:
        self.module = module
        self.qualname = qualname

    @staticmethod
    def of(fn: Any) -> Any:
        """A reference to ``fn`` if a factory took its name, else ``fn``."""
        module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
        if module and qualname and "<" not in qualname:
            obj: Any = sys.modules.get(module)
            for part in qualname.split("."):
                obj = getattr(obj, part, None)
            if obj is not fn and getattr(obj, "_fn", None) is fn:
                return FnRef(module, qualname)
        return fn

    def resolve(self) -> Any:
        """The function, found through its factory."""
        obj: Any = importlib.import_module(self.module)
        for part in self.qualname.split("."):
            obj = getattr(obj, part)
        return getattr(obj, "_fn", obj)
