"""``ferrocsp.compat.pycsp``: run PyCSP 0.9 programs unchanged on ferrocsp's engine.

Change ``import pycsp`` to ``import ferrocsp.compat.pycsp as pycsp`` (or put a ``pycsp``
package that re-exports this one first on ``sys.path``). As in PyCSP, importing the package
imports the ``parallel`` implementation (threads); ``pycsp.greenlets`` selects greenlets and
``pycsp.common.toolkit`` / ``pycsp.common.plugNplay`` are the helper processes. See
``docs/compat.md`` for what differs and why.

Invariants:
- ``from ferrocsp.compat.pycsp import *`` gives exactly ``pycsp.parallel``'s names.
"""

from __future__ import annotations

from .parallel import *  # noqa: F403 - PyCSP's own package does this
from .parallel import __all__ as __all__
