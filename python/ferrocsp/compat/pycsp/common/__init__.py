"""``pycsp.common``: PyCSP 0.9's helper modules (``toolkit``, ``plugNplay``), on the current
implementation (``pycsp.current``: ``parallel`` unless ``greenlets`` was imported last).

Invariants:
- Importing this package imports no helper module (each is loaded on first use).
"""

from __future__ import annotations

__all__: list[str] = []
