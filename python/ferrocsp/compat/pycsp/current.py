"""``pycsp.current``: the PyCSP implementation module imported last (``parallel`` or
``greenlets``), whose names ``pycsp.common`` modules use, as in PyCSP 0.9.

Invariants:
- After ``install``, this module has every public name of the implementation that called it,
  plus ``version`` and ``trace`` (always False: PyCSP's tracing is not provided).
"""

from __future__ import annotations

from typing import Any

__all__ = ["install"]

version: tuple[Any, ...] = ()
trace = False


def install(namespace: dict[str, Any], impl_version: tuple[Any, ...]) -> None:
    """Makes the names of an implementation module (its ``__all__``) current."""
    g = globals()
    for name in namespace["__all__"]:
        g[name] = namespace[name]
    g["version"] = impl_version
    g["trace"] = False
