"""Compatibility layers: programs written for older Python CSP libraries, on ferrocsp's engine.

- ``ferrocsp.compat.pycsp`` mirrors PyCSP 0.9 (``pycsp``, ``pycsp.parallel``,
  ``pycsp.greenlets``, ``pycsp.common.toolkit``).
- ``ferrocsp.compat.python_csp.csp`` mirrors python-csp 0.1 (``csp.csp``, ``csp.guards``,
  ``csp.builtins``).

Both are built on ferrocsp's public API only; nothing here changes how ferrocsp itself
behaves. ``alias("pycsp")`` / ``alias("csp")`` make the old import names resolve to them, so
a program runs with its imports unchanged. ``docs/compat.md`` is the migration guide and lists
every remaining difference.

Invariants:
- Importing ``ferrocsp.compat`` imports neither layer (each is loaded on first use, or by
  ``alias``).
- Errors a layer raises for misuse are ``TypeError``/``ValueError`` whose message starts with
  the compat API the caller used (``"pycsp.Channel: ..."``, ``"csp.Alt: ..."``).
"""

from __future__ import annotations

from ._alias import alias as alias

__all__ = ["alias"]
