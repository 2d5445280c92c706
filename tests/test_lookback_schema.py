"""Schema 6 (issue 20): a schema-5 journal opens, its returning transactions get their originals' columns
filled from what they recorded, and the look-up indexes the daemon's rules read exist and are used.

The upgrade of an existing journal runs in steps, each committed (agent/store/schema.py): it keeps every
row, tells whoever opens the journal how far it is (the daemon: systemd, before READY=1), stops when asked
(SIGTERM) and, killed part-way, is finished by the next open with nothing lost or written twice."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.config import parse_config
from agent.service import daemon as daemon_module
from agent.service.daemon import UPGRADE_EXTEND, Daemon
from agent.service.sdnotify import SdNotify
from agent.sim.terminal import PtyTerminal
from agent.store import schema
from agent.store.journal import Journal
from agent.store.lookback import LookbackRows
from agent.store.schema import FILL_MARK, MIGRATIONS, SCHEMA_VERSION, Upgrade, UpgradeStopped, journal_path, utc_text
from drivers.events import Transaction
from tests.helpers import NotifyListener, jsonl_line_config, sale, wait_until

T0 = datetime(2026, 3, 10, 2, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[1]
THREE = [sale("000001", 5000, T0, rrn="925400000101"),
         sale("000002", 5000, T0 + timedelta(minutes=1), kind="void", original="000001"),
         sale("000003", 2000, T0 + timedelta(minutes=2), kind="refund").with_(original_rrn="925400000101")]


def _busy(customers: int) -> list[Transaction]:
    """A till's day after day: sales, now and then a decline, a void naming its sale's voucher, a refund
    naming an earlier sale's RRN (what the upgrade copies into the new columns)."""
    rows: list[Transaction] = []
    for n in range(customers):
        at, voucher = T0 + timedelta(minutes=3 * n), f"{n + 1:06d}"
        if n % 41 == 7:
            rows.append(sale(voucher, 1000 + n, at, result="declined"))
        elif n % 53 == 20:
            last = rows[-1]
            rows.append(sale(voucher, last.amount_minor, at, kind="void", original=last.voucher_no))
        elif n % 67 == 35:
            rows.append(sale(voucher, 300, at, kind="refund").with_(original_rrn=rows[-9].rrn))
        else:
            rows.append(sale(voucher, 1000 + n % 997, at, card=f"622576******{n % 89:04d}"))
    return rows


def _schema5(path: Path, rows: list[Transaction] = THREE) -> None:
    """A journal as settleguard with schema 5 wrote it: its tables, and each transaction's row, key and
    sighting with the transaction's JSON as the pipeline stores it."""
    conn = sqlite3.connect(path, isolation_level=None)
    for version in range(1, 6):
        for statement in MIGRATIONS[version].split(";"):
            if statement.strip():
                conn.execute(statement)
    conn.execute("PRAGMA user_version=5")
    conn.execute("BEGIN")
    for n, t in enumerate(rows, 1):
        data = json.dumps(t.to_dict(), ensure_ascii=False)
        assert t.time is not None
        key = f"v:{t.terminal_id}:{t.batch_no}:{t.voucher_no}"
        conn.execute("INSERT INTO transactions(key, terminal_id, batch_no, voucher_no, receipt_no, trace_no, rrn,"
                     " kind, result, amount_minor, currency, card, time_utc, data, first_seen, last_seen)"
                     " VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                     (key, t.terminal_id, t.batch_no, t.voucher_no,
                      t.receipt_no, t.trace_no, t.rrn, t.kind, t.result, t.amount_minor, t.currency, t.card,
                      utc_text(t.time), data, utc_text(t.time), utc_text(t.time)))
        conn.execute("INSERT INTO txn_keys(key, txn_id) VALUES(?,?)", (key, n))
        conn.execute("INSERT INTO sightings(txn_id, source, received, data, reprint) VALUES(?,?,?,?,0)",
                     (n, "jsonl", utc_text(t.time), data))
    conn.execute("INSERT INTO meta(k, v) VALUES('last_review', '2026-03-10T12:00:00+00:00')")
    conn.execute("COMMIT")
    conn.close()


def _contents(path: Path) -> dict[str, Any]:
    """Every table's rows (all columns, in id order), the indexes as SQLite keeps them, the version."""
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        return {"version": conn.execute("PRAGMA user_version").fetchone()[0],
                "integrity": conn.execute("PRAGMA integrity_check").fetchone()[0],
                "indexes": dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type='index'"
                                             " AND sql IS NOT NULL")),
                **{t: conn.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() for t in tables}}


def _columns(path: Path, table: str) -> set[str]:
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        return {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}


def test_a_schema_5_journal_opens_with_the_originals_filled_in(tmp_path: Path) -> None:
    path = tmp_path / "settleguard.sqlite3"
    _schema5(path)
    journal = Journal(path)
    assert SCHEMA_VERSION == 6
    assert journal.conn.execute("PRAGMA user_version").fetchone()[0] == 6
    got = [tuple(r) for r in journal.conn.execute(
        "SELECT voucher_no, original_voucher_no, original_rrn FROM transactions ORDER BY id")]
    assert got == [("000001", None, None), ("000002", "000001", None), ("000003", None, "925400000101")]
    rows = LookbackRows(journal.conn)
    since = T0 - timedelta(days=1)
    assert [r[0] for r in rows.by_field("original_voucher_no", "000001", since, 10)] == [2]
    assert [r[0] for r in rows.by_field("original_rrn", "925400000101", since, 10)] == [3]
    assert [r[0] for r in rows.by_amount(5000, since, T0 + timedelta(hours=1), 10)] == [1, 2]
    assert [r[0] for r in rows.by_amount(5000, since, T0 + timedelta(hours=1), 1)] == [1]   # not past upto
    journal.close()


def test_new_rows_carry_their_originals_and_the_look_ups_use_indexes(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "settleguard.sqlite3")
    void = sale("000009", 800, T0, kind="void", original="000008")
    journal.merge_transaction(void, key="v:15221155:000128:000009", instant=T0, received=T0, source="jsonl")
    assert tuple(journal.conn.execute("SELECT original_voucher_no, original_rrn FROM transactions").fetchone()) \
        == ("000008", None)
    # A second sighting that names the original by RRN too fills the column in, as it fills the row's JSON.
    journal.merge_transaction(void.with_(original_rrn="925400000808"), key="v:15221155:000128:000009", instant=T0,
                              received=T0, source="escpos")
    assert tuple(journal.conn.execute("SELECT original_voucher_no, original_rrn FROM transactions").fetchone()) \
        == ("000008", "925400000808")
    where = {"transactions_amount": "amount_minor=?", "transactions_card_tail": "substr(card, -4)=?",
             "transactions_voucher": "voucher_no=?", "transactions_rrn": "rrn=?",
             "transactions_original_voucher": "original_voucher_no=?", "transactions_original_rrn": "original_rrn=?"}
    plans = {index: f"SELECT id, key, time_utc FROM transactions WHERE {w} AND time_utc>=? AND id<=?"
             for index, w in where.items()}
    for index, sql in plans.items():
        plan = " ".join(r[3] for r in journal.conn.execute("EXPLAIN QUERY PLAN " + sql, (1, "x", 1)))
        assert f"INDEX {index} (" in plan, (index, plan)
    # The seen transaction is the first sighting, not the row as merged since.
    assert LookbackRows(journal.conn).seen(1, None).original_rrn is None
    assert LookbackRows(journal.conn).seen(1, 10).original_rrn == "925400000808"
    journal.close()


# -- the upgrade of an existing journal ------------------------------------------------------------------
@pytest.fixture
def busy5(tmp_path: Path) -> Path:
    """A schema-5 journal of 2,000 transactions, 66 of them naming an original."""
    path = tmp_path / "busy5" / "settleguard.sqlite3"
    path.parent.mkdir()
    _schema5(path, _busy(2000))
    return path


def _copy(src: Path, where: Path) -> Path:
    where.mkdir(parents=True)
    shutil.copyfile(src, where / src.name)
    return where / src.name


def test_an_upgrade_keeps_every_row_and_ends_as_a_new_journal_begins(
        busy5: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schema, "FILL_EVERY", 300)   # seven commits of the fill
    before = _contents(busy5)
    Journal(busy5).close()
    after = _contents(busy5)
    assert after["version"] == SCHEMA_VERSION and after["integrity"] == "ok"
    new = tmp_path / "new.sqlite3"
    Journal(new).close()
    assert after["indexes"] == _contents(new)["indexes"]
    assert _columns(busy5, "transactions") == _columns(new, "transactions")
    # Every schema-5 column of every row as it was; the two new ones from the row's JSON.
    assert [tuple(r)[:-2] for r in after["transactions"]] == [tuple(r) for r in before["transactions"]]
    expected = [(json.loads(r[14]).get("original_voucher_no"), json.loads(r[14]).get("original_rrn"))
                for r in before["transactions"]]
    assert [tuple(r)[-2:] for r in after["transactions"]] == expected
    assert sum(1 for e in expected if e != (None, None)) == 66
    for table in ("sightings", "txn_keys", "meta", "alerts", "outbox"):   # the fill's mark is gone from meta
        assert after[table] == before[table], table


def test_the_upgrade_reports_from_inside_its_statements_and_stops_when_asked(
        busy5: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schema, "PROGRESS_EVERY", 100)
    monkeypatch.setattr(schema, "FILL_EVERY", 300)
    reference = _copy(busy5, tmp_path / "reference")
    Journal(reference).close()
    seen: list[Upgrade] = []
    stop_in = "building the index transactions_voucher"

    def watch(u: Upgrade) -> bool:
        seen.append(u)
        # The first call of a step comes before its transaction; a second one from inside its statement.
        return [x.what for x in seen].count(stop_in) >= 2

    with pytest.raises(UpgradeStopped, match="step 4 of 8"):
        Journal(busy5, on_upgrade=watch)
    steps = {u.step for u in seen}
    assert steps == {1, 2, 3, 4} and all(u.steps == 8 and u.from_version == 5 for u in seen)
    assert [u.percent for u in seen if u.step == 2 and u.percent is not None][-1] == 100
    assert sum(u.step == 3 for u in seen) > 1        # SQLite called back while the index was being built
    assert "step 4 of 8: building the index transactions_voucher" in seen[-1].describe()
    # Kept: the columns, the fill, the first index. Rolled back: the index being built. Not yet: the version.
    partial = _contents(busy5)
    assert partial["version"] == 5 and partial["integrity"] == "ok"
    assert "transactions_amount" in partial["indexes"] and "transactions_voucher" not in partial["indexes"]
    assert dict(partial["meta"])[FILL_MARK] == "2000"
    Journal(busy5).close()   # the next open carries on
    assert _contents(busy5) == _contents(reference)


def test_a_new_journal_is_made_in_one_transaction_and_reports_nothing(tmp_path: Path) -> None:
    calls: list[Upgrade] = []
    journal = Journal(tmp_path / "settleguard.sqlite3", on_upgrade=lambda u: calls.append(u) is None and False)
    assert journal.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    journal.close()
    assert calls == []


# A migration killed part-way (-9: systemd's timeout on an old systemd, the OOM killer, a power cut), at three
# places: between two commits of the fill, inside an index's transaction, before the version is written.
KILL_CHILD = r"""
import sys, time
from agent.store import schema
from agent.store.journal import Journal
schema.PROGRESS_EVERY, schema.FILL_EVERY = 100, 300
point, seen = sys.argv[2], []
def watch(u):
    seen.append(u.step)
    if ((point == "fill" and u.step == 2 and (u.percent or 0) >= 40)
            or (point == "index" and seen.count(5) >= 3) or (point == "version" and u.step == 8)):
        print("now", flush=True)
        time.sleep(120)
    return False
Journal(sys.argv[1], on_upgrade=watch)
print("finished", flush=True)
"""


@pytest.mark.parametrize("point", ["fill", "index", "version"])
def test_an_upgrade_killed_part_way_is_finished_by_the_next_open(busy5: Path, tmp_path: Path, point: str) -> None:
    reference = _copy(busy5, tmp_path / "reference")
    Journal(reference).close()
    with subprocess.Popen([sys.executable, "-c", KILL_CHILD, str(busy5), point], cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as proc:
        try:
            assert proc.stdout is not None
            said = proc.stdout.readline()
            assert said == "now\n", said + proc.stdout.read()
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(10) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
    partial = _contents(busy5)   # what the kill left (a reader rolls back what was not committed)
    assert partial["version"] == 5 and partial["integrity"] == "ok"
    mark = int(dict(partial["meta"]).get(FILL_MARK, 0))
    if point == "fill":
        assert 0 < mark < 2000 and "transactions_amount" not in partial["indexes"]
    elif point == "index":
        assert mark == 2000 and "transactions_rrn" not in partial["indexes"] and "transactions_voucher" in \
            partial["indexes"]
    else:
        assert set(schema.INDEXES_6) <= set(partial["indexes"])
    Journal(busy5).close()
    assert _contents(busy5) == _contents(reference)


# -- the daemon: systemd keeps waiting while the journal is upgraded ---------------------------------------
@pytest.fixture
def listener(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[NotifyListener]:
    notify = NotifyListener(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify.path))
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    yield notify
    notify.close()


def test_the_daemon_tells_systemd_it_is_still_starting_while_it_upgrades_the_journal(
        busy5: Path, tmp_path: Path, listener: NotifyListener, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schema, "PROGRESS_EVERY", 2000)   # ~50 calls on 2,000 transactions
    monkeypatch.setattr(daemon_module, "UPGRADE_PING_EVERY", 0.0)   # every call of SQLite's, not every 5 s
    state = tmp_path / "state"
    _copy(busy5, state)

    class Paced(SdNotify):
        """Each datagram read before the next is sent, as systemd reads its socket at once: the kernel queues
        only a few (net.unix.max_dgram_qlen, 10 here) and this listener's thread may be slow on a busy machine."""

        def send(self, *lines: str) -> bool:
            before = listener.mark()
            sent = super().send(*lines)
            wait_until(lambda: listener.mark() > before, "the datagram read", wakeup=listener.arrived)
            return sent

    term = PtyTerminal()
    daemon = Daemon(parse_config(jsonl_line_config("升级测试店", term.device)), state, use_scheduler=False,
                    notify=Paced(str(listener.path)))
    try:
        daemon.start()
        listener.wait_for("READY=1")
    finally:
        daemon.stop()
        term.close()
    assert daemon.notify.dropped == 0
    lines = listener.lines()
    ready = lines.index("READY=1")
    extends = [i for i, line in enumerate(lines) if line.startswith("EXTEND_TIMEOUT_USEC=")]
    assert extends and extends[-1] < ready and len(extends) > 8    # more than one a step: from inside them too
    assert {lines[i] for i in extends} == {f"EXTEND_TIMEOUT_USEC={int(UPGRADE_EXTEND * 1_000_000)}"}
    status = [line for line in lines[:ready] if line.startswith("STATUS=")]
    assert len(status) == len(extends)
    assert status[0].startswith("STATUS=upgrading the journal from schema 5 to 6, once after an update (step 1 of 8")
    assert any("step 8 of 8: recording schema 6" in line for line in status)
    assert _contents(journal_path(state))["version"] == SCHEMA_VERSION


SLOW_RUN = r"""
import sys, time
from agent.cli import main
from agent.service import daemon, sdnotify
from agent.store import schema
schema.PROGRESS_EVERY, daemon.UPGRADE_PING_EVERY = 50, 0.0
extend = sdnotify.SdNotify.extend_timeout
def slowly(self, seconds, status=None):   # an index that takes minutes to build, here many short waits
    sent = extend(self, seconds, status)
    if "(step 3 of 8" in (status or ""):
        time.sleep(0.05)
    return sent
sdnotify.SdNotify.extend_timeout = slowly
sys.exit(main(["run", "--config", sys.argv[1], "--state", sys.argv[2]]))
"""


def test_sigterm_during_the_upgrade_stops_it_at_once_keeping_its_finished_steps(
        busy5: Path, tmp_path: Path, listener: NotifyListener) -> None:
    state = tmp_path / "state"
    reference = _copy(busy5, tmp_path / "reference")
    Journal(reference).close()
    _copy(busy5, state)
    term = PtyTerminal()
    config = tmp_path / "settleguard.toml"
    config.write_text(jsonl_line_config("升级测试店", term.device), encoding="utf-8")
    log = tmp_path / "stderr.txt"
    with log.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-c", SLOW_RUN, str(config), str(state)], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=err, env={**os.environ})
    try:
        wait_until(lambda: any("(step 3 of 8: building the index transactions_amount)" in line
                               for line in listener.lines()), "the upgrade's third step", timeout=30,
                   detail=log.read_text)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        term.close()
    listener.wait_for("STOPPING=1")
    assert "READY=1" not in listener.lines()
    text = log.read_text()
    assert "journal upgrade stopped after" in text and "the next start carries on" in text
    partial = _contents(journal_path(state))
    assert partial["version"] == 5 and dict(partial["meta"])[FILL_MARK] == "2000"
    Journal(journal_path(state)).close()
    assert _contents(journal_path(state)) == _contents(reference)


# -- what reads a journal without writing it (doctor, export, metrics): an older one is read as it is -------
def test_readers_take_an_older_journal_as_it_is_and_doctor_says_the_service_will_upgrade_it(
        busy5: Path, tmp_path: Path) -> None:
    from agent.cli import main as cli
    from agent.service.doctor import check_journal

    checks, newest = check_journal(busy5)
    found = {c.name: c for c in checks}
    assert found["journal"].status == "ok" and newest is not None
    assert found["journal schema"].status == "warn"
    assert found["journal schema"].detail == "schema 5, older than this settleguard's (6)"
    out = tmp_path / "export.jsonl"
    assert cli(["export", "--state", str(busy5.parent), "--since", "2026-03-01", "--until", "2026-03-20",
                "--config", "/nonexistent.toml", "--out", str(out)]) == 0
    assert len(out.read_text(encoding="utf-8").splitlines()) == 2000
    assert _contents(busy5)["version"] == 5 and "original_rrn" not in _columns(busy5, "transactions")
    with pytest.raises(UpgradeStopped):   # stopped part-way: doctor says so
        Journal(busy5, on_upgrade=lambda u: u.step == 3)
    assert "its upgrade is under way or was stopped part-way" in {c.name: c for c in check_journal(busy5)[0]}[
        "journal schema"].detail
    Journal(busy5).close()
    assert "journal schema" not in {c.name for c in check_journal(busy5)[0]}
    with closing(sqlite3.connect(busy5)) as conn:
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    newer = {c.name: c for c in check_journal(busy5)[0]}["journal schema"]
    assert newer.status == "fail" and "the service will not start on it" in newer.detail


def test_rows_an_older_settleguard_wrote_after_the_fill_get_their_originals_when_the_upgrade_ends(
        tmp_path: Path) -> None:
    """While the indexes are built (the fill done), a schema-5 writer — a CLI, a daemon not yet restarted — adds a
    void naming its sale; the step that records schema 6 fills that row's columns too."""
    path = tmp_path / "settleguard.sqlite3"
    _schema5(path)
    late = sale("000004", 2000, T0 + timedelta(minutes=3), kind="void", original="000003")
    written: list[int] = []

    def older_writer_meanwhile(u: Upgrade) -> bool:
        if u.step == 4 and not written:   # between steps: the write lock is free
            with closing(sqlite3.connect(path, isolation_level=None, timeout=5)) as conn:   # as schema 5 writes
                assert conn.execute("PRAGMA user_version").fetchone()[0] == 5
                conn.execute("INSERT INTO transactions(key, terminal_id, batch_no, voucher_no, trace_no, rrn, kind,"
                             " result, amount_minor, currency, card, time_utc, data, first_seen, last_seen)"
                             " VALUES('late',?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                             (late.terminal_id, late.batch_no, late.voucher_no, late.trace_no, late.rrn, late.kind,
                              late.result, late.amount_minor, late.currency, late.card, utc_text(T0),
                              json.dumps(late.to_dict()), utc_text(T0), utc_text(T0)))
            written.append(1)
        return False

    journal = Journal(path, on_upgrade=older_writer_meanwhile)
    assert written
    got = [tuple(r) for r in journal.conn.execute(
        "SELECT voucher_no, original_voucher_no, original_rrn FROM transactions ORDER BY id")]
    assert got == [("000001", None, None), ("000002", "000001", None), ("000003", None, "925400000101"),
                   ("000004", "000003", None)]
    assert journal.conn.execute("SELECT COUNT(*) FROM meta WHERE k=?", (FILL_MARK,)).fetchone()[0] == 0
    journal.close()
