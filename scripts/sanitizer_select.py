"""pytest plugin for scripts/sanitizers.sh: the Python suite's runs under a sanitizer.

Invariant: it only deselects, never skips or changes a test, and says how many it left out
and why (the session's header and pytest's "deselected" count). Left out:

- the greenlet backend and every test named for greenlets: greenlet switches stacks without
  telling the sanitizer (no fiber annotations), so ThreadSanitizer and AddressSanitizer see one
  stack's accesses on another's shadow (false reports, or the runtime's own crash);
- the OS-process backends (``os``, ``os-asyncio``): each child interpreter loads the sanitizer
  runtime, too slow for the suite's bounds on 2 cores; the shared-memory engine runs under the
  sanitizers in the Rust tests (scripts/sanitizers.sh's Rust half) instead.

Matching is on the ``backend`` parameter's value, not on ``-k``'s substrings (``os`` is in
``close``).
"""

from __future__ import annotations

import pytest

EXCLUDED_BACKENDS = frozenset({"greenlet", "os", "os-asyncio"})


def _excluded(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    params = callspec.params if callspec is not None else {}
    if params.get("backend") in EXCLUDED_BACKENDS:
        return True
    return "greenlet" in item.nodeid.lower()


def pytest_report_header(config: pytest.Config) -> str:
    return (
        "sanitizer run: deselected the greenlet backend, greenlet tests and the OS-process "
        "backends (scripts/sanitizer_select.py says why)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    kept = [item for item in items if not _excluded(item)]
    dropped = [item for item in items if _excluded(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
