"""``ferrocsp.compat.python_csp``: run python-csp 0.1 programs unchanged on ferrocsp's engine.

python-csp programs import the package ``csp`` (``from csp.csp import *``, ``csp.guards``,
``csp.builtins``); here it is ``ferrocsp.compat.python_csp.csp``. Make it importable as
``csp`` by putting a package of that name that re-exports it first on ``sys.path`` (see
``docs/compat.md``), or change the imports to ``from ferrocsp.compat.python_csp.csp.csp import
*``.

Invariants:
- Importing this package imports nothing else (``csp`` is loaded on first use).
"""

from __future__ import annotations

__all__: list[str] = []
