"""Turns at the journal's write lock for the daemon's two writers: the pipeline (agent/store/journal.py) and
the delivery thread's outbox (agent/store/outbox.py), each on its own SQLite connection to the one file.

SQLite has one write lock and no queue for it: a connection that finds it taken sleeps in its busy handler
(1, 2, 5, 10 ... 100 ms) and tries again. A pipeline that is never idle — a backlog being caught up, a burst
of 100,000 transactions — begins its next transaction the moment it commits, so the delivery thread, waking
from its sleep, nearly always finds the lock taken again: in a paced 1M-sale benchmark (bench/resources.py)
it marked ~2 messages a second as sent while alerts came faster, 4,700 waited in the outbox, and each step
held all of them in memory (~100 MiB of RSS). So alerts reached no phone exactly while the till was busiest.
With turns, first come first served, a writer waits at most for the transaction ahead of it.

Only this process's writers take turns (a CLI command writing the same journal still meets SQLite's busy
handler). A thread already holding the turn may take it again (nested use does not deadlock); a waiter
interrupted by an exception gives its place up. A wait has no timeout: the turn ahead is one transaction of
this process, and a writer stuck inside one shows as a stuck thread in the daemon's health.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext


class WriterTurns:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._next = 0          # the ticket the next writer draws
        self._serving = 0       # the ticket whose holder may write
        self._owner: int | None = None
        self._depth = 0
        self._abandoned: set[int] = set()   # tickets whose waiter left (an exception while waiting)

    @contextmanager
    def turn(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._cond:
            if self._owner == me:     # nested: already ours
                self._depth += 1
                nested = True
            else:
                nested = False
                ticket = self._next
                self._next += 1
                try:
                    while ticket != self._serving:
                        self._cond.wait()
                except BaseException:
                    # Interrupted while waiting (a signal handler raising, KeyboardInterrupt): the ticket must not
                    # stay in the queue, or every writer after it would wait forever.
                    if ticket == self._serving:
                        self._serving += 1
                    else:
                        self._abandoned.add(ticket)
                    self._skip_abandoned()
                    raise
                self._owner, self._depth = me, 1
        try:
            yield
        finally:
            with self._cond:
                self._depth -= 1
                if not nested and self._depth == 0:
                    self._owner = None
                    self._serving += 1
                    self._skip_abandoned()

    def _skip_abandoned(self) -> None:
        """Past the tickets nobody waits for any more; wake the waiters (called holding the condition)."""
        while self._serving in self._abandoned:
            self._abandoned.discard(self._serving)
            self._serving += 1
        self._cond.notify_all()


def taking(turns: WriterTurns | None) -> AbstractContextManager[None]:
    """A turn of ``turns``; nothing to wait for without them (tests, the CLI, replay: one writer each)."""
    return turns.turn() if turns is not None else nullcontext()
