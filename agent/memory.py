"""Handing memory the daemon freed back to the operating system (issue 20).

glibc's malloc keeps what Python and SQLite free in its arenas for reuse; after the rules' memory drops a
few thousand views the arenas hold many free pages RSS still counts (~17 MiB of free heap after a burst
of 100,000 transactions, bench/resources.py). ``malloc_trim(0)`` returns the free pages. Other C
libraries (musl, macOS) do not have it: there it does nothing.
"""

from __future__ import annotations

from collections.abc import Callable

_trim: Callable[[int], int] | None = None
_looked = False


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
