"""Resource counts of a process, read from ``/proc`` (Linux): what the soak samples.

Each count is of the process itself at the instant of the sample: open descriptors, threads,
memory mappings, resident memory, descriptors and mappings of ferrocsp's shared-memory
segments (memfds named ``ferrocsp-<uuid>``; ``/dev/shm`` files mapped, should any appear),
and live or zombie child processes other than the long-lived helpers named by the caller.
A process that is gone reads as ``None``.
"""

from __future__ import annotations

import os
from pathlib import Path

FIELDS = ["fds", "threads", "children", "maps", "memfd_fds", "shm_maps", "rss_kb"]


def children(pid: int, skip: set[int]) -> list[int]:
    """Children of ``pid`` (any state, zombies included), helpers in ``skip`` left out."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid: comm may hold spaces and parentheses.
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if ppid == pid and int(d.name) not in skip:
            out.append(int(d.name))
    return out


def sample(pid: int, skip: set[int] | None = None) -> dict[str, int] | None:
    """The counts of ``FIELDS`` for ``pid``."""
    base = Path(f"/proc/{pid}")
    try:
        fds = 0
        memfd_fds = 0
        for fd in os.listdir(base / "fd"):
            fds += 1
            try:
                if os.readlink(base / "fd" / fd).startswith("/memfd:ferrocsp-"):
                    memfd_fds += 1
            except OSError:
                pass  # closed meanwhile
        threads = len(os.listdir(base / "task"))
        maps = (base / "maps").read_text().splitlines()
        rss = 0
        for line in (base / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return {
        "fds": fds,
        "threads": threads,
        "children": len(children(pid, skip or set())),
        "maps": len(maps),
        "memfd_fds": memfd_fds,
        "shm_maps": sum(1 for m in maps if "memfd:ferrocsp-" in m or "/dev/shm/" in m),
        "rss_kb": rss,
    }
