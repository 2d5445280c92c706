"""Handing memory the daemon freed back to the operating system, and keeping less of it (issue 20).

glibc's malloc keeps what Python and SQLite free in its arenas for reuse; after the rules' memory drops a
few thousand views the arenas hold many free pages RSS still counts (~17 MiB of free heap after a burst
of 100,000 transactions, bench/resources.py). ``malloc_trim(0)`` returns the free pages.

glibc also gives threads that allocate at the same moment arenas of their own (up to eight per core), and
each keeps its own free heap: the daemon's threads (pipeline, delivery, readers, the till page) with SQLite
allocating outside the GIL. ``limit_arenas`` caps them at two, as MALLOC_ARENA_MAX=2 would: 4-5 MiB less
after a paced burst of 100,000 sales (BENCHMARKS.md 9k); the threads mostly wait on the GIL or the wire,
so there is little contention to lose to. Other C libraries (musl, macOS) have neither: there both do nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable

_trim: Callable[[int], int] | None = None
_looked = False
M_ARENA_MAX = -8     # glibc's malloc.h
ARENAS = 2


def _malloc_trim() -> Callable[[int], int] | None:
    global _trim, _looked
    if not _looked:
        _looked = True
        import ctypes  # only when first needed: the CLI's start-up does not pay for it

        try:
            # The process's own symbols (the C library is linked in): no ldconfig or compiler run to find it.
            _trim = ctypes.CDLL(None).malloc_trim   # AttributeError: not glibc
        except (OSError, AttributeError):
            _trim = None
        if _trim is not None:
            _trim.argtypes = [ctypes.c_size_t]
            _trim.restype = ctypes.c_int
    return _trim


def release_freed() -> bool:
    """Return the C heap's free pages to the OS; False where the C library cannot (nothing happened)."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def limit_arenas(count: int = ARENAS) -> bool:
    """At most ``count`` malloc arenas from now on (glibc's mallopt); False where the C library cannot, or where
    the operator chose (MALLOC_ARENA_MAX, or glibc.malloc.arena_max in GLIBC_TUNABLES, e.g. in a unit drop-in):
    theirs stays. Called before the daemon starts its threads: arenas already made stay."""
    if "MALLOC_ARENA_MAX" in os.environ or "glibc.malloc.arena_max" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, count))
