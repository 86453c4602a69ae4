"""Peak memory of a process and its children (gunicorn's master and its workers), from
`VmHWM` in /proc: the most resident memory each process has had since it started.

Summed RSS counts a page shared by several processes (the interpreter, libraries, and
with gunicorn's preload_app what the master imported before forking) once in each of
them. PSS (`/proc/PID/smaps_rollup`) divides each shared page among the processes that
map it, so summed PSS is what the processes really occupy together; Linux keeps no peak
of it, so it is read as it is at the time of the call.
"""

from __future__ import annotations

from pathlib import Path


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def tree(pid: int) -> list[int]:
    """`pid` and all its descendants still running."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        if Path(f"/proc/{current}").exists():
            found.append(current)
            pending += children(current)
    return found


def _kb(path: str, field: str) -> int:
    try:
        text = Path(path).read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def peak_rss_mb(pid: int) -> float:
    """Sum of VmHWM over `pid` and all its descendants, in MB (MiB)."""
    return sum(_kb(f"/proc/{p}/status", "VmHWM") for p in tree(pid)) / 1024


def pss_mb(pid: int) -> float:
    """Sum of the current PSS over `pid` and all its descendants, in MB (MiB)."""
    return sum(_kb(f"/proc/{p}/smaps_rollup", "Pss") for p in tree(pid)) / 1024
