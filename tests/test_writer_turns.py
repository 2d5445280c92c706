"""The daemon's two writers take the journal's write lock in turn (agent/store/turns.py): a pipeline that is
never idle cannot starve the delivery thread's outbox writes (alerts unsent while the till is busiest)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

from agent.store.journal import Journal
from agent.store.outbox import Outbox, insert_message
from agent.store.turns import WriterTurns

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def test_first_come_first_served_and_a_holder_may_take_it_again() -> None:
    turns = WriterTurns()
    order: list[str] = []
    b_waiting = threading.Event()

    def b() -> None:
        b_waiting.set()
        with turns.turn():
            order.append("b")

    with turns.turn():
        order.append("a1")
        with turns.turn():          # nested on the same thread: no deadlock
            order.append("a1-nested")
        worker = threading.Thread(target=b)
        worker.start()
        b_waiting.wait(5)
        while turns._next < 2:     # b has drawn its ticket (it blocks right after)
            threading.Event().wait(0.001)
    with turns.turn():             # a comes back at once, as a busy pipeline does: b was first
        order.append("a2")
    worker.join(5)
    assert order == ["a1", "a1-nested", "b", "a2"]


def test_outbox_writes_wait_at_most_one_pipeline_transaction(tmp_path: Path) -> None:
    """A writer thread runs journal transactions back to back (each holds the lock a few ms, as the pipeline
    does); the outbox's claims, on their own connection, each get in after at most the transaction ahead."""
    path = tmp_path / "settleguard.sqlite3"
    turns = WriterTurns()
    journal = Journal(path, turns=turns)
    with journal.transaction() as conn:
        for i in range(40):
            insert_message(conn, message_id=f"m{i}", channel="hook", kind="alert.opened", alert_id=None,
                           revision=None, payload={"n": i}, next_at=NOW, deadline=None, created=NOW, updated=NOW)
    outbox = Outbox(path, turns=turns)
    committed = 0
    stop = threading.Event()

    def pipeline() -> None:
        nonlocal committed
        while not stop.is_set():
            with journal.transaction() as conn:
                conn.execute("INSERT INTO meta(k, v) VALUES('busy', ?) ON CONFLICT(k) DO UPDATE SET v=excluded.v",
                             (str(committed),))
                threading.Event().wait(0.003)
            committed += 1

    writer = threading.Thread(target=pipeline)
    writer.start()
    try:
        waited = []
        for row in outbox.pending("hook"):
            before = committed
            outbox.claim([row.id], NOW)
            outbox.mark_sent([row.id], NOW)
            waited.append(committed - before)
    finally:
        stop.set()
        writer.join(10)
    assert len(waited) == 40
    # Each of the two writes waits for at most the transaction holding the lock and one that drew its ticket
    # first; without turns SQLite's busy handler (sleeps of up to 100 ms) lets dozens pass.
    assert max(waited) <= 4, waited
    assert outbox.conn.execute("SELECT COUNT(*) FROM outbox WHERE state='sent'").fetchone()[0] == 40
    outbox.close()
    journal.close()


def test_a_waiter_interrupted_by_an_exception_gives_its_place_up() -> None:
    """A signal handler raising in the main thread while it waits for a turn: the writers after it still get theirs."""
    import signal

    turns = WriterTurns()
    holding, release = threading.Event(), threading.Event()
    order: list[str] = []

    def holder() -> None:
        with turns.turn():
            holding.set()
            release.wait(5)

    def later() -> None:
        with turns.turn():
            order.append("later")

    first = threading.Thread(target=holder)
    first.start()
    holding.wait(5)

    def interrupt(signum: int, frame: object) -> None:
        raise TimeoutError("interrupted while waiting")

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.05)
    try:
        with turns.turn():
            order.append("interrupted one")   # never: the alarm comes while it waits
    except TimeoutError:
        order.append("gave up")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    second = threading.Thread(target=later)
    second.start()
    release.set()
    first.join(5)
    second.join(5)
    assert not second.is_alive()
    assert order == ["gave up", "later"]
