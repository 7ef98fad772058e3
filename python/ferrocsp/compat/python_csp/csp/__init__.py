"""python-csp's ``csp`` package on ferrocsp: ``csp.csp`` (the API, with the implementation the
``CSP`` environment variable chooses), ``csp.os_thread`` and ``csp.os_process`` (threads and
OS processes explicitly), ``csp.guards`` (``Timer``) and ``csp.builtins``.

Invariants:
- Like python-csp's, importing the package itself exports nothing.
"""

from __future__ import annotations

__all__: list[str] = []
