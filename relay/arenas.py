"""At most two glibc malloc arenas per process.

glibc gives each thread that allocates its own arena (up to 8 per core), and an arena
keeps the memory its thread used at its busiest. The relay's threads (gunicorn's 8 per
web process, the dispatcher's senders) take turns on the GIL, so per-thread arenas buy
them no speed, only resident memory. MALLOC_ARENA_MAX=2 is Heroku's advice for threaded
processes; set here, from inside, it holds however the process is started (the
Procfile, `relay serve`, `relay worker`), as long as it runs before the threads do.
"""

from __future__ import annotations

import ctypes
import os

M_ARENA_MAX = -8  # glibc's malloc.h


def limit_malloc_arenas(count: int = 2) -> bool:
    """Whether the limit was set: not when MALLOC_ARENA_MAX is in the environment (glibc
    read it at start, and it wins), nor on a C library without `mallopt` (not glibc)."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return mallopt(M_ARENA_MAX, count) == 1
