"""The journal's file: schema, numbered migrations, connections and the timestamp format.

One SQLite file holds transactions, sightings, receipts, settlements, alerts
and the outbox. WAL with ``synchronous=FULL``: a committed alert and its
outbox row survive a power cut together. Schema changes are numbered
migrations (``PRAGMA user_version``); a migration never rewrites what an
existing till has already written.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

JOURNAL_FILE = "settleguard.sqlite3"

log = logging.getLogger("settleguard.store")


def journal_path(state_dir: Path) -> Path:
    """Where a state directory keeps its journal (the WAL and SHM files sit beside it)."""
    return state_dir / JOURNAL_FILE


SCHEMA_VERSION = 6

MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE transactions(
        id INTEGER PRIMARY KEY,
        key TEXT NOT NULL UNIQUE,
        terminal_id TEXT, batch_no TEXT, voucher_no TEXT, receipt_no TEXT, trace_no TEXT, rrn TEXT,
        kind TEXT NOT NULL, result TEXT NOT NULL, amount_minor INTEGER NOT NULL, currency TEXT,
        card TEXT, time_utc TEXT NOT NULL,
        data TEXT NOT NULL,
        first_seen TEXT NOT NULL, last_seen TEXT NOT NULL,
        sightings INTEGER NOT NULL DEFAULT 1,
        reprints INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX transactions_card ON transactions(card, time_utc);
    CREATE INDEX transactions_time ON transactions(time_utc);
    CREATE INDEX transactions_batch ON transactions(terminal_id, batch_no);
    CREATE TABLE txn_keys(key TEXT PRIMARY KEY, txn_id INTEGER NOT NULL REFERENCES transactions(id));
    CREATE TABLE sightings(
        id INTEGER PRIMARY KEY,
        txn_id INTEGER NOT NULL REFERENCES transactions(id),
        source TEXT NOT NULL, received TEXT NOT NULL, data TEXT NOT NULL, reprint INTEGER NOT NULL
    );
    CREATE INDEX sightings_txn ON sightings(txn_id);
    CREATE TABLE receipts(
        id INTEGER PRIMARY KEY,
        txn_id INTEGER REFERENCES transactions(id),
        source TEXT NOT NULL, received TEXT NOT NULL, terminal_id TEXT, data TEXT NOT NULL
    );
    CREATE INDEX receipts_txn ON receipts(txn_id);
    CREATE TABLE settlements(
        id INTEGER PRIMARY KEY,
        terminal_id TEXT, batch_no TEXT, time_utc TEXT, received TEXT NOT NULL, source TEXT NOT NULL,
        data TEXT NOT NULL
    );
    CREATE TABLE alerts(
        id TEXT PRIMARY KEY,
        rule TEXT NOT NULL, key TEXT NOT NULL,
        revision INTEGER NOT NULL, state TEXT NOT NULL, severity TEXT NOT NULL,
        subject_terminal TEXT, subject_voucher TEXT, subject_receipt TEXT, subject_trace TEXT,
        subject_rrn TEXT, subject_batch TEXT,
        deadline TEXT,
        data TEXT NOT NULL,
        created TEXT NOT NULL, updated TEXT NOT NULL,
        last_notice TEXT,
        UNIQUE(rule, key)
    );
    CREATE INDEX alerts_state ON alerts(state);
    CREATE TABLE alert_log(
        id INTEGER PRIMARY KEY,
        alert_id TEXT NOT NULL REFERENCES alerts(id),
        revision INTEGER NOT NULL, state TEXT NOT NULL, at TEXT NOT NULL,
        actor TEXT NOT NULL, note TEXT
    );
    CREATE TABLE outbox(
        id INTEGER PRIMARY KEY,
        message_id TEXT NOT NULL,
        channel TEXT NOT NULL,
        kind TEXT NOT NULL,
        alert_id TEXT, revision INTEGER,
        payload TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at TEXT NOT NULL,
        deadline TEXT,
        created TEXT NOT NULL, updated TEXT NOT NULL,
        last_error TEXT,
        UNIQUE(channel, message_id)
    );
    CREATE INDEX outbox_due ON outbox(state, next_at);
    CREATE TABLE batches(
        terminal_id TEXT NOT NULL, batch_no TEXT NOT NULL,
        opened TEXT NOT NULL, closed TEXT,
        PRIMARY KEY(terminal_id, batch_no)
    );
    CREATE TABLE meta(k TEXT PRIMARY KEY, v TEXT NOT NULL);
    """,
    # Inputs that did not become events (drivers/boundary.py): a line or frame that failed to decode, an
    # event outside the model's limits, an item the pipeline could not handle. Kept for a person to look
    # at; raw and reason are card-scrubbed before they get here. The row count is capped (the oldest go),
    # meta 'quarantine_total' counts every row ever written.
    # The card-tail index: sales_for_card (REF-001's look-back) matches a 6+4 and a last-4 mask by their
    # last four digits; without it every refund scanned the whole table (found by bench/pipeline_fuzz.py).
    2: """
    CREATE TABLE quarantine(
        id INTEGER PRIMARY KEY,
        received TEXT NOT NULL,
        source TEXT NOT NULL,
        stage TEXT NOT NULL,
        reason TEXT NOT NULL,
        raw TEXT NOT NULL
    );
    CREATE INDEX quarantine_received ON quarantine(received);
    CREATE INDEX transactions_card_tail ON transactions(substr(card, -4), time_utc);
    """,
    # Short codes (agent/model.py CODE_ALPHABET): what people type on the till page and in ``ack``. Unique
    # among active alerts only (a code is reused once its alert is over), so no UNIQUE constraint; alerts
    # from before this migration have none and are found by id.
    3: """
    ALTER TABLE alerts ADD COLUMN code TEXT;
    CREATE INDEX alerts_code ON alerts(code);
    """,
    # The till's side (issue 17): its orders (a printed 小票 or a till's JSON line), one row per order
    # number per source (a reprint is a second sighting), and what matching concluded about each charge
    # (agent/match.py): matched to a sale's tender, the wrong amount for one, a second charge for one, no
    # sale at all, or voided after matching (its tender free again). One verdict per charge.
    4: """
    CREATE TABLE orders(
        id INTEGER PRIMARY KEY,
        key TEXT NOT NULL UNIQUE,
        source TEXT NOT NULL, order_no TEXT, time_utc TEXT NOT NULL,
        total_minor INTEGER NOT NULL, currency TEXT,
        data TEXT NOT NULL,
        received TEXT NOT NULL,
        sightings INTEGER NOT NULL DEFAULT 1
    );
    CREATE INDEX orders_time ON orders(time_utc);
    CREATE TABLE order_matches(
        txn_key TEXT PRIMARY KEY,
        order_id INTEGER REFERENCES orders(id),
        tender INTEGER,
        outcome TEXT NOT NULL,
        at TEXT NOT NULL
    );
    CREATE INDEX order_matches_order ON order_matches(order_id);
    """,
    # ECR links (issue 17): the till's requests, aborts and timeouts as the wire (or the till's own JSON
    # line, or [match] till_timeout) showed them; ``link`` is the source carrying the terminal's answers.
    # Evidence for MATCH-004 (approved after the till gave up), and what `export` gives back.
    5: """
    CREATE TABLE ecr_requests(
        id INTEGER PRIMARY KEY,
        link TEXT NOT NULL,
        source TEXT NOT NULL,
        state TEXT NOT NULL,
        time_utc TEXT NOT NULL,
        amount_minor INTEGER,
        data TEXT NOT NULL,
        received TEXT NOT NULL
    );
    CREATE INDEX ecr_requests_link ON ecr_requests(link, time_utc);
    """,
    # 6: the daemon's rules' look-up columns and indexes, below: built from its parts (COLUMNS_6, FILL_6,
    # INDEXES_6), which the upgrade of an existing journal runs as steps of their own (upgrade_steps).
}

# The daemon's rules answer their look-backs from the journal (agent/rules/lookback.py, issue 20: a busy till's 25
# hours of views cost ~40 MiB held in memory): an exact amount, a voucher, an RRN, and the original a
# void/reversal/refund names, each by an index. The originals get columns of their own, filled for the rows
# already written from the row's JSON (indexes only where a value is set).
COLUMNS_6 = {"original_voucher_no": "ALTER TABLE transactions ADD COLUMN original_voucher_no TEXT",
             "original_rrn": "ALTER TABLE transactions ADD COLUMN original_rrn TEXT"}
_FILL_6 = ("UPDATE transactions SET original_voucher_no=json_extract(data, '$.original_voucher_no'),"
           " original_rrn=json_extract(data, '$.original_rrn') WHERE {ids}(json_extract(data, '$.original_voucher_no')"
           " IS NOT NULL OR json_extract(data, '$.original_rrn') IS NOT NULL)")
FILL_6 = _FILL_6.format(ids="id>? AND id<=? AND ")   # an upgrade fills a range of ids per commit
INDEXES_6 = {
    "transactions_amount": "CREATE INDEX IF NOT EXISTS transactions_amount ON transactions(amount_minor, time_utc)",
    "transactions_voucher": "CREATE INDEX IF NOT EXISTS transactions_voucher ON transactions(voucher_no)"
                            " WHERE voucher_no IS NOT NULL",
    "transactions_rrn": "CREATE INDEX IF NOT EXISTS transactions_rrn ON transactions(rrn) WHERE rrn IS NOT NULL",
    "transactions_original_voucher": "CREATE INDEX IF NOT EXISTS transactions_original_voucher"
                                     " ON transactions(original_voucher_no) WHERE original_voucher_no IS NOT NULL",
    "transactions_original_rrn": "CREATE INDEX IF NOT EXISTS transactions_original_rrn ON transactions(original_rrn)"
                                 " WHERE original_rrn IS NOT NULL",
}
# Migration 6 as one script: a new journal's (no rows to fill), and what tests build older journals from.
MIGRATIONS[6] = "".join(f"{sql};\n" for sql in (*COLUMNS_6.values(), _FILL_6.format(ids=""), *INDEXES_6.values()))


class StoreError(Exception):
    """The journal file cannot be opened, read or migrated (wraps the sqlite3 error outside the store)."""


def utc_text(value: datetime) -> str:
    """Sortable UTC text for SQLite comparisons (fixed width, microseconds)."""
    u = value.astimezone(UTC)
    # Formatted by hand: strftime showed up in replay profiles (three calls per transaction).
    return (f"{u.year:04d}-{u.month:02d}-{u.day:02d}T{u.hour:02d}:{u.minute:02d}:{u.second:02d}."
            f"{u.microsecond:06d}Z")


def from_utc_text(value: str) -> datetime:
    # fromisoformat reads utc_text's "Z" as UTC (Python 3.11+) at ~1/50 of strptime's cost: the daemon's rules
    # read a few of these per transaction (agent/store/lookback.py).
    at = datetime.fromisoformat(value)
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def private_dir(path: Path) -> None:
    """The state directory: created 0700; an existing one loses its world bits.

    Group bits of an existing directory stay: systemd creates it 0750 (StateDirectoryMode=) so the
    service's group reaches the control socket (0660) inside it.
    """
    if not path.is_dir():
        path.mkdir(parents=True, mode=0o700)
        os.chmod(path, 0o700)
        return
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o007:
        os.chmod(path, mode & ~0o007)


def private_file(path: Path, *, create: bool = True) -> None:
    """The journal and its WAL/SHM: 0600. SQLite gives the WAL and SHM the database file's mode,
    so creating the database 0600 before SQLite opens it covers all three."""
    if create:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            os.chmod(path, 0o600)


def connect(path: Path | str, *, synchronous: str = "FULL") -> sqlite3.Connection:
    """A writer's connection: the pipeline's and the delivery thread's (each its own)."""
    conn = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def connect_read_only(path: Path | str) -> sqlite3.Connection:
    """For readers outside the daemon (doctor, a metrics scrape): cannot write, cannot create the file."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error as exc:
        raise StoreError(str(exc)) from exc
    conn.row_factory = sqlite3.Row
    return conn


# -- upgrades ------------------------------------------------------------------------------------------
# A new journal gets every migration in one transaction. An existing one may hold years of transactions
# (a busy till writes ~200,000 a year): schema 6 fills two columns over every row and builds five indexes, each
# a pass over the whole table: ~6 s for a million transactions on the bench, minutes where a till's card must
# read the table for each pass (BENCHMARKS.md 9j). So an upgrade runs in steps, each committed on its own —
# the new columns, the fill a range of ids per commit (its mark in meta), each index — and every step can be
# run again: a process killed part-way (systemd's start timeout, a power cut, `systemctl stop`) loses only the
# step it was in, and the next open carries on. The schema version moves only at the end.
# While it works, SQLite calls back every PROGRESS_EVERY virtual-machine instructions (a few milliseconds
# on this machine) so the caller can say how far it is and keep systemd waiting (agent/service/daemon.py).
PROGRESS_EVERY = 20_000
FILL_EVERY = 50_000          # ids filled per commit
FILL_MARK = "upgrade_6_filled_upto"   # meta: the highest id migration 6's fill has done


@dataclass(frozen=True, slots=True)
class Upgrade:
    """Where an upgrade of the journal is; :meth:`describe` is the line the daemon shows systemd (STATUS=)."""

    from_version: int
    to_version: int
    step: int              # 1-based
    steps: int
    what: str
    percent: int | None = None   # within a step that knows (the fill)

    def describe(self) -> str:
        far = f", {self.percent} %" if self.percent is not None else ""
        return (f"upgrading the journal from schema {self.from_version} to {self.to_version}, once after an update"
                f" (step {self.step} of {self.steps}: {self.what}{far}); no alerts until it is done")


OnUpgrade = Callable[[Upgrade], bool]
"""Called at the start of each step and every PROGRESS_EVERY instructions within one. Returning True
stops the upgrade: the step in progress is rolled back, the steps done stay, :class:`UpgradeStopped`."""


class UpgradeStopped(StoreError):
    """The upgrade was stopped on request (OnUpgrade returned True); the next open continues it."""


@dataclass(frozen=True, slots=True)
class _Step:
    what: str
    run: Callable[[sqlite3.Connection, _Progress], None]


class _Progress:
    def __init__(self, conn: sqlite3.Connection, on_upgrade: OnUpgrade | None, first: int, steps: int) -> None:
        self.on_upgrade = on_upgrade
        self.first, self.steps = first, steps
        self.now = Upgrade(first, SCHEMA_VERSION, 0, steps, "starting")
        self.stop = False
        if on_upgrade is not None:
            conn.set_progress_handler(self._tick, PROGRESS_EVERY)

    def at(self, step: int, what: str, percent: int | None = None) -> None:
        self.now = Upgrade(self.first, SCHEMA_VERSION, step, self.steps, what, percent)
        if self._tick():
            raise UpgradeStopped(f"journal upgrade stopped at step {step} of {self.steps} ({what})")

    def _tick(self) -> int:
        """SQLite's progress handler: non-zero interrupts the statement (sqlite3.OperationalError 'interrupted')."""
        if self.on_upgrade is None:
            return 0
        try:
            self.stop = self.stop or bool(self.on_upgrade(self.now))
        except Exception:   # whoever watches must not break the upgrade
            log.exception("journal upgrade: the progress callback failed")
        return 1 if self.stop else 0


@contextlib.contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        # An interrupted UPDATE has already rolled the transaction back (sqlite3_interrupt).
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def user_version(conn: sqlite3.Connection) -> int:
    """The journal's schema (PRAGMA user_version): older than SCHEMA_VERSION until it is upgraded."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _apply(conn: sqlite3.Connection, target: int) -> None:
    """Migration ``target``'s statements, inside the caller's transaction."""
    for statement in MIGRATIONS[target].split(";"):
        if statement.strip():
            conn.execute(statement)


def _script(target: int) -> Callable[[sqlite3.Connection, _Progress], None]:
    def run(conn: sqlite3.Connection, progress: _Progress) -> None:
        with _immediate(conn):
            if user_version(conn) < target:   # another process may have done it since we looked
                _apply(conn, target)
                conn.execute(f"PRAGMA user_version={target}")
    return run


def _add_columns_6(conn: sqlite3.Connection, progress: _Progress) -> None:
    with _immediate(conn):
        have = {str(r[1]) for r in conn.execute("PRAGMA table_info(transactions)")}
        for name, sql in COLUMNS_6.items():
            if name not in have:
                conn.execute(sql)


def _fill_6(conn: sqlite3.Connection, progress: _Progress) -> None:
    """The new columns from each row's JSON, FILL_EVERY ids per commit; the mark says where to carry on."""
    step = progress.now.step
    while True:
        with _immediate(conn):
            mark = conn.execute("SELECT v FROM meta WHERE k=?", (FILL_MARK,)).fetchone()
            done = int(mark[0]) if mark else 0
            top = int(conn.execute("SELECT MAX(id) FROM transactions").fetchone()[0] or 0)
            if done >= top:
                return
            upto = min(done + FILL_EVERY, top)
            conn.execute(FILL_6, (done, upto))
            conn.execute("INSERT INTO meta(k, v) VALUES(?,?) ON CONFLICT(k) DO UPDATE SET v=excluded.v",
                         (FILL_MARK, str(upto)))
        progress.at(step, progress.now.what, upto * 100 // top)


def _index(sql: str) -> Callable[[sqlite3.Connection, _Progress], None]:
    def run(conn: sqlite3.Connection, progress: _Progress) -> None:
        with _immediate(conn):
            conn.execute(sql)
    return run


def _finish(target: int) -> Callable[[sqlite3.Connection, _Progress], None]:
    def run(conn: sqlite3.Connection, progress: _Progress) -> None:
        with _immediate(conn):
            if user_version(conn) < target:
                # Rows an older settleguard wrote since the fill passed (a CLI, a daemon not yet restarted):
                # filled here, in the transaction that moves the version, so none stays without its originals.
                mark = conn.execute("SELECT v FROM meta WHERE k=?", (FILL_MARK,)).fetchone()
                top = conn.execute("SELECT MAX(id) FROM transactions").fetchone()[0] or 0
                if mark is not None and int(mark[0]) < top:
                    conn.execute(FILL_6, (int(mark[0]), top))
                conn.execute("DELETE FROM meta WHERE k=?", (FILL_MARK,))
                conn.execute(f"PRAGMA user_version={target}")
    return run


def upgrade_steps(version: int) -> list[_Step]:
    """What an existing journal at ``version`` goes through, in order (each step commits on its own)."""
    steps: list[_Step] = []
    for target in range(version + 1, SCHEMA_VERSION + 1):
        if target != 6:
            steps.append(_Step(f"schema {target}", _script(target)))
            continue
        steps.append(_Step("adding two columns to the transactions", _add_columns_6))
        steps.append(_Step("copying each void's and refund's original into them", _fill_6))
        steps += [_Step(f"building the index {name}", _index(sql)) for name, sql in INDEXES_6.items()]
        steps.append(_Step("recording schema 6", _finish(6)))
    return steps


def _run(conn: sqlite3.Connection, steps: list[_Step], progress: _Progress) -> None:
    try:
        for n, step in enumerate(steps, 1):
            log.info("journal upgrade, step %d of %d: %s", n, len(steps), step.what)
            progress.at(n, step.what)
            step.run(conn, progress)
    except sqlite3.OperationalError:
        if progress.stop:   # our progress handler interrupted the statement
            raise UpgradeStopped(f"journal upgrade stopped at step {progress.now.step} of {len(steps)}"
                                 f" ({progress.now.what})") from None
        raise


def migrate(conn: sqlite3.Connection, *, on_upgrade: OnUpgrade | None = None) -> int:
    """Bring the journal to SCHEMA_VERSION: a new file in one transaction, an existing one in steps."""
    version = user_version(conn)
    if version > SCHEMA_VERSION:
        raise StoreError(f"journal schema {version} is newer than this settleguard ({SCHEMA_VERSION})")
    if version == SCHEMA_VERSION:
        return SCHEMA_VERSION
    if version == 0:
        with _immediate(conn):
            if user_version(conn) == 0:
                for target in range(1, SCHEMA_VERSION + 1):
                    _apply(conn, target)
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        if user_version(conn) == SCHEMA_VERSION:
            return SCHEMA_VERSION
        version = user_version(conn)   # another process created it first and is upgrading it: help
    steps = upgrade_steps(version)
    top = conn.execute("SELECT MAX(id) FROM transactions").fetchone()[0] or 0
    log.info("upgrading the journal from schema %d to %d (about %d transactions) in %d steps, each kept once "
             "done; settleguard starts when it is finished", version, SCHEMA_VERSION, top, len(steps))
    started = time.monotonic()
    progress = _Progress(conn, on_upgrade, version, len(steps))
    try:
        _run(conn, steps, progress)
    except UpgradeStopped:
        log.warning("journal upgrade stopped after %.1f s at step %d of %d (%s); the steps done are kept and the "
                    "next start carries on", time.monotonic() - started, progress.now.step, len(steps),
                    progress.now.what)
        raise
    finally:
        conn.set_progress_handler(None, 0)
    log.info("journal upgraded from schema %d to %d in %.1f s", version, SCHEMA_VERSION, time.monotonic() - started)
    return SCHEMA_VERSION
