"""Whether greenlets can run on this interpreter: the condition of tests/conftest.py's skip.

Invariant: ``greenlet_unusable()`` is None on every GIL build and on a free-threaded build with
greenlet >= 3.3 (the first release with free-threading support, for CPython 3.14t), so the
skip never applies there. On a free-threaded build with an older greenlet (3.2.2 is the last
with 3.13t wheels; 3.3 and later do not compile for 3.13t) it says why: such a greenlet leaves
the thread's critical sections (``tstate->critical_section``) in place across a switch, and the
interpreter crashes once greenlets end theirs out of order. tests/test_free_threading.py
checks that premise with a greenlet-only program.
"""

from __future__ import annotations

import sys
import sysconfig


def greenlet_unusable() -> str | None:
    """Why greenlets cannot run on this interpreter, or None where they can."""
    if not sysconfig.get_config_var("Py_GIL_DISABLED"):
        return None
    import greenlet

    version = tuple(int(x) for x in greenlet.__version__.split(".")[:2])
    if version >= (3, 3):
        return None
    v = sys.version_info
    return (
        f"greenlet {greenlet.__version__} has no free-threading support (greenlet >= 3.3, for "
        f"3.14t only): on free-threaded CPython {v.major}.{v.minor} it keeps a greenlet's "
        "critical sections across a switch and the interpreter crashes"
    )
