"""``alias("pycsp")`` / ``alias("csp")``: make the old import names resolve to the compat
layers, so a program runs with its imports unchanged.

Invariants:
- After ``alias(name)``, ``import name`` and ``import name.sub`` give the very module objects
  of the compat layer (``sys.modules`` holds them under both names), so classes and state are
  shared, never loaded twice.
- It changes nothing for names other than ``name`` and its submodules, and calling it twice
  is harmless.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType

__all__ = ["TARGETS", "alias"]

#: The old top-level package names and the compat package each stands for.
TARGETS = {"pycsp": "ferrocsp.compat.pycsp", "csp": "ferrocsp.compat.python_csp.csp"}


class _AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, name: str, target: str) -> None:
        self.name = name
        self.target = target

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname == self.name or fullname.startswith(self.name + "."):
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(self.target + spec.name[len(self.name) :])

    def exec_module(self, module: ModuleType) -> None:
        """The module is the compat layer's, already executed."""


def alias(name: str) -> ModuleType:
    """Makes ``import <name>`` (``"pycsp"`` or ``"csp"``) import the compat layer; returns it.

    Call it before the program's imports (a ``sitecustomize.py``, or the first lines of the
    main script)."""
    if name not in TARGETS:
        raise ValueError(
            f"ferrocsp.compat.alias: unknown name {name!r}; expected one of {sorted(TARGETS)}"
        )
    if not any(isinstance(f, _AliasFinder) and f.name == name for f in sys.meta_path):
        sys.meta_path.insert(0, _AliasFinder(name, TARGETS[name]))
    module = importlib.import_module(TARGETS[name])
    sys.modules[name] = module
    return module
