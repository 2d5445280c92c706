"""The pipeline fuzzer (issue 13): random and adversarial input through the real path, counted both ways.

Path covered, all of it the daemon's own code: JSON-line bytes, cut into reads at random places ->
``build_decoder("jsonl")`` (the :class:`~drivers.boundary.BoundaryDecoder` over the jsonl decoder: the
same object :class:`agent.sources.SourceRunner` holds) -> an :class:`EventBatch` per read carrying its
events and what the boundary refused (as ``SourceRunner._on_bytes`` builds it) -> the one queue ->
:meth:`Pipeline.run` on its own thread (as the daemon runs it) -> the journal on a real SQLite file (WAL,
synchronous=FULL) -> outbox rows for the alerts the rules raise. Mixed into the queue: scheduler-style
commands (cutoff, review, tick) and control-socket-style commands with bad arguments. Not covered: the
byte transports (pty, TCP; tests/test_boundary_daemon.py covers those with poison on real parts) and the
delivery thread (the outbox rows are counted, not sent).

The generator knows what it wrote: every valid transaction line has its own identity, so after the run
the journal must hold exactly one transaction per valid transaction (and one sighting per valid line,
reprints included), one receipt per valid receipt, and the quarantine exactly one row per invalid line.
The pipeline thread must never die and the journal must never be left failing.

``python -m bench.pipeline_fuzz`` runs 1,000,000 lines; ``--quick`` 20,000; ``--events N`` any number.
tests/test_pipeline_fuzz.py runs a few thousand in ``make test``.
"""

from __future__ import annotations

import argparse
import json
import queue
import random
import sqlite3
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

SHANGHAI = ZoneInfo("Asia/Shanghai")
CONFIG = """
[shop]
name = "模糊测试店"
till = "t1"
timezone = "Asia/Shanghai"

[settlement]
cutoff = "23:00"
"""
START = datetime(2026, 6, 1, 9, 0, tzinfo=SHANGHAI)
OFFSETS = [timezone(timedelta(hours=8)), timezone(timedelta(hours=-5)), timezone(timedelta(hours=5, minutes=45)),
           UTC, timezone(timedelta(hours=14))]
# Text a terminal or an integration may legitimately send: CJK, full-width, emoji, combining marks, quotes.
ALPHABET = "收银台店长操作员一二三ABCxyz0123456789 ０１２３４５-_/.:#\"'\\😀é\u0301\u3000\t"
CARDS = ["622576******6691", "621700******4195", "************1234", "6225760012346691", "4111111111111111"]


def luhn_complete(prefix: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(prefix)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return prefix + str((10 - total % 10) % 10)


@dataclass
class Expected:
    lines: int = 0
    txn_lines: int = 0
    transactions: int = 0
    receipts: int = 0
    settlements: int = 0
    invalid: int = 0
    bad_commands: int = 0
    commands: int = 0
    kinds: dict[str, int] = field(default_factory=dict)

    def bad(self, kind: str) -> None:
        self.invalid += 1
        self.kinds[kind] = self.kinds.get(kind, 0) + 1


class Generator:
    """Lines of JSON (and of garbage), each known to be valid or invalid by construction."""

    def __init__(self, seed: int, invalid_share: float = 0.1) -> None:
        self.r = random.Random(seed)
        self.invalid_share = invalid_share
        self.n = 0
        self.sent: list[dict[str, Any]] = []   # recent valid transactions, for duplicates and reprints
        self.expected = Expected()

    def text(self, lo: int = 0, hi: int = 24) -> str:
        r = self.r
        s = "".join(r.choice(ALPHABET) for _ in range(r.randint(lo, hi)))
        if r.random() < 0.1:  # a card number someone typed into a free-text field, in some written form
            pan = luhn_complete("".join(r.choice("0123456789") for _ in range(r.randint(12, 18))))
            sep = r.choice(["", " ", "  ", "-", ".", "_", "/"])
            s = f"{s[:4]}备注{sep.join(pan[i:i + 4] for i in range(0, len(pan), 4))}号"
        return s

    def card(self) -> str | None:
        """Mostly masked as terminals send them, sometimes in clear (the boundary masks it), a few absent."""
        r = self.r
        roll = r.random()
        if roll < 0.05:
            return None
        if roll < 0.1:
            return r.choice(CARDS)
        return f"{r.choice(['622576', '621700', '436742', '524094'])}******{r.randint(0, 9999):04d}"

    def when(self, now: datetime) -> str | None:
        r = self.r
        if r.random() < 0.05:
            return None
        t = now + timedelta(seconds=r.randint(-600, 60))
        return t.astimezone(r.choice(OFFSETS)).isoformat()

    def transaction(self, now: datetime) -> dict[str, Any]:
        r = self.r
        self.n += 1
        i = self.n
        return {"type": "transaction", "source": "jsonl", "kind": r.choice(["sale"] * 8 + ["void", "refund",
                                                                                          "preauth", "reversal"]),
                "result": "approved" if r.random() < 0.93 else "declined",
                "terminal_id": f"T{i % 5}", "merchant_id": self.text(0, 15), "batch_no": "000001",
                "voucher_no": f"V{i:09d}", "receipt_no": None, "trace_no": f"{i % 1000000:06d}",
                "rrn": f"R{i:011d}", "auth_code": self.text(0, 6), "original_voucher_no": None,
                "original_rrn": None, "amount_minor": r.choice([r.randint(1, 99_999)] * 30 + [r.randint(1, 10**12),
                                                                                             1280, 12800, 0]),
                "currency": r.choice(["CNY", "CNY", "EUR", "156", None]), "card": self.card(),
                "card_type": self.text(0, 12) or None, "entry_mode": r.choice(["chip", "contactless", "swipe",
                                                                               "manual", "qr", None]),
                "time": self.when(now), "operator": self.text(0, 20)}

    def valid(self, now: datetime) -> bytes:
        r = self.r
        e = self.expected
        roll = r.random()
        if roll < 0.03 and self.sent:                       # a reprint: the same transaction seen again
            obj = r.choice(self.sent)
            e.txn_lines += 1
        elif roll < 0.08 and self.sent:                     # a duplicate charge: same card and amount, new voucher
            obj = {**self.transaction(now), "card": (base := r.choice(self.sent))["card"],
                   "amount_minor": base["amount_minor"], "kind": "sale", "result": "approved"}
            e.transactions += 1
            e.txn_lines += 1
        elif roll < 0.13:
            obj = {"type": "receipt", "source": "jsonl", "terminal_id": f"T{r.randint(0, 4)}", "time": self.when(now),
                   "lines": [self.text() for _ in range(r.randint(0, 12))],
                   "qr": [self.text(0, 60) for _ in range(r.randint(0, 2))]}
            e.receipts += 1
        elif roll < 0.1305:
            obj = {"type": "settlement", "source": "jsonl", "terminal_id": f"T{r.randint(0, 4)}",
                   "merchant_id": None, "batch_no": "000001", "time": self.when(now), "count": r.randint(0, 500),
                   "total_minor": r.randint(-10**6, 10**9), "currency": "CNY", "balanced": r.choice([True, False])}
            e.settlements += 1
        else:
            obj = self.transaction(now)
            e.transactions += 1
            e.txn_lines += 1
        if obj.get("type") == "transaction":
            self.sent.append(obj)
            if len(self.sent) > 200:
                del self.sent[:100]
        return json.dumps(obj, ensure_ascii=r.random() < 0.5).encode("utf-8")

    def invalid(self, now: datetime) -> bytes:
        """One line that must be quarantined, of a kind chosen at random."""
        r = self.r
        base = self.transaction(now)
        self.n -= 1  # its identity is never journalled; the next valid one may reuse the number
        kind = r.choice(INVALID)
        line: bytes
        if kind == "amount_2_63":
            base["amount_minor"] = 2**63 + r.randint(0, 10**6)
        elif kind == "amount_ceiling":
            base["amount_minor"] = 10**12 + r.randint(1, 10**15)
        elif kind == "amount_negative":
            base["amount_minor"] = -r.randint(1, 10**6)
        elif kind == "amount_float":
            base["amount_minor"] = 12.5
        elif kind == "time_9999":
            base["time"] = "9999-12-31T23:00:00-05:00"
        elif kind == "time_0001":
            base["time"] = "0001-01-01T00:00:00+08:00"
        elif kind == "time_window":
            base["time"] = r.choice(["1999-12-31T23:00:00+00:00", "2150-01-01T00:00:00+08:00"])
        elif kind == "time_naive":
            base["time"] = "2026-06-01T10:00:00"
        elif kind == "kind_enum":
            base["kind"] = r.choice(["gift", "SALE", ""])
        elif kind == "entry_enum":
            base["entry_mode"] = "telepathy"
        elif kind == "currency":
            base["currency"] = "yuan"
        elif kind == "overlong":
            base["operator"] = "操" * r.randint(129, 3000)
        elif kind == "nul":
            base["operator"] = "01\x00"
        elif kind == "unknown_field":
            base["tip_minor"] = 100
        if kind == "surrogate":
            line = json.dumps(base).replace('"operator": "', '"operator": "\\ud800', 1).encode()
        elif kind == "digits_5000":
            line = json.dumps(base).replace('"amount_minor": ', '"amount_minor": ' + "9" * 5000 + "0*", 1) \
                .replace("0*" + str(base["amount_minor"]), "", 1).encode()
        elif kind == "garbage":
            line = bytes(r.randrange(32, 256) for _ in range(r.randint(1, 200))).replace(b"\n", b" ").strip() or b"}"
            if line[:1] == b"{" or not line:
                line = b"}" + line
        elif kind == "bad_utf8":
            line = json.dumps(base).encode().replace(b'"operator": "', b'"operator": "\xff\xfe', 1)
        elif kind == "deep":
            line = b"[" * 40_000 + b"]" * 40_000
        elif kind == "too_long":
            line = json.dumps({**base, "operator": "x" * 70_000}).encode()
        elif kind == "receipt_lines":
            line = json.dumps({"type": "receipt", "source": "jsonl", "terminal_id": None, "time": None,
                               "lines": ["行"] * 2001, "qr": []}).encode()
        elif kind == "settlement_count":
            line = json.dumps({"type": "settlement", "source": "jsonl", "terminal_id": "T1", "merchant_id": None,
                               "batch_no": "000001", "time": None, "count": -1, "total_minor": 0, "currency": "CNY",
                               "balanced": True}).encode()
        else:
            line = json.dumps(base).encode()
        self.expected.bad(kind)
        return line

    def line(self, now: datetime) -> bytes:
        self.expected.lines += 1
        return self.invalid(now) if self.r.random() < self.invalid_share else self.valid(now)


INVALID = ["amount_2_63", "amount_ceiling", "amount_negative", "amount_float", "time_9999", "time_0001",
           "time_window", "time_naive", "kind_enum", "entry_enum", "currency", "overlong", "nul", "unknown_field",
           "surrogate", "digits_5000", "garbage", "bad_utf8", "deep", "too_long", "receipt_lines",
           "settlement_count"]


def run(events: int, *, seed: int = 1, state: Path | None = None, invalid_share: float = 0.1,
        progress: bool = False) -> dict[str, Any]:
    """Feed ``events`` lines through the path described above; return the figures, checked."""
    from agent.config import parse_config
    from agent.messages import STOP, Command, EventBatch
    from agent.pipeline import Pipeline
    from agent.store.journal import Journal
    from drivers.boundary import take_rejected
    from drivers.clock import ManualClock
    from drivers.protocols import build_decoder

    holder = None
    if state is None:
        holder = tempfile.TemporaryDirectory(prefix="sg-pipeline-fuzz-")
        state = Path(holder.name)
    loaded = parse_config(CONFIG, "<fuzz>")
    clock = ManualClock(START)
    journal = Journal(state / "settleguard.sqlite3", quarantine_cap=max(100_000, events))
    pipeline = Pipeline(loaded, journal, clock=clock, channels=("hook",))
    inbox: queue.Queue[EventBatch | Command] = queue.Queue(maxsize=10_000)  # the daemon's bound
    deaths: list[BaseException] = []

    def consume() -> None:
        try:
            pipeline.run(inbox, idle=0.05)
        except BaseException as exc:  # a death is what this counts
            deaths.append(exc)

    thread = threading.Thread(target=consume, name="pipeline", daemon=True)
    thread.start()
    gen = Generator(seed, invalid_share)
    decoder = build_decoder("jsonl", tz=SHANGHAI, source="jsonl")
    r = random.Random(seed + 1)
    pending = b""
    replies: list[queue.Queue[Any]] = []
    started = time.perf_counter()
    written = 0
    while written < events or pending:
        # One read: a handful of lines, cut anywhere (a read ends mid-line as often as not).
        while written < events and len(pending) < 4096:
            clock.advance(r.uniform(0.5, 3.0))
            pending += gen.line(clock.now()) + b"\n"
            written += 1
        take = len(pending) if written >= events else r.randint(1, len(pending))
        chunk, pending = pending[:take], pending[take:]
        received = clock.now()
        got = decoder.feed(chunk, received)
        refused = take_rejected(decoder)
        if got or refused:
            inbox.put(EventBatch("terminal", tuple(got), received, rejected=tuple(refused)))
        if r.random() < 0.002:
            # The scheduler's and the control socket's side of the queue, bad arguments included.
            reply: queue.Queue[Any] = queue.Queue()
            name, args, bad = r.choice([("cutoff", {}, False), ("review", {}, False), ("tick", {}, False),
                                        ("ack", {"answer": "legit"}, True),
                                        ("ack", {"id": "x", "answer": "legit", "by": {"x": 1}}, True),
                                        ("reconfigure", {}, True),
                                        ("ack", {"id": "0", "answer": "legit", "note": "\ud800"}, True)])
            inbox.put(Command(name, args, reply))
            replies.append(reply)
            gen.expected.commands += 1
            gen.expected.bad_commands += bad
        if progress and written % 100_000 < 40 and not pending:
            print(f"  {written} lines, {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    tail = decoder.flush(clock.now())
    refused = take_rejected(decoder)
    if tail or refused:
        inbox.put(EventBatch("terminal", tuple(tail), clock.now(), rejected=tuple(refused)))
    inbox.put(STOP)
    thread.join(600)
    wall = time.perf_counter() - started
    answered = [q.get(timeout=5) for q in replies]
    figures = _figures(journal.path)
    journal.close()
    e = gen.expected
    result = {
        "lines": e.lines, "valid_transactions": e.transactions, "valid_transaction_lines": e.txn_lines,
        "valid_receipts": e.receipts, "valid_settlements": e.settlements, "invalid": e.invalid,
        "invalid_by_kind": dict(sorted(e.kinds.items())), "commands": e.commands,
        "bad_commands": e.bad_commands, "bad_commands_answered_with_error": sum(not a.get("ok") for a in answered
                                                                                if a.get("error")),
        **figures, "thread_deaths": len(deaths) + (1 if thread.is_alive() else 0),
        "journal_error": pipeline.journal_error, "wall_s": round(wall, 1),
        "lines_per_s": round(e.lines / wall) if wall else None, "pipeline_counts": dict(pipeline.counts),
    }
    if holder is not None:
        holder.cleanup()
    result["problems"] = check(result)
    return result


def _figures(path: Path) -> dict[str, Any]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        def one(sql: str) -> int:
            return int(conn.execute(sql).fetchone()[0])

        total = conn.execute("SELECT v FROM meta WHERE k='quarantine_total'").fetchone()
        return {"journal_transactions": one("SELECT COUNT(*) FROM transactions"),
                "journal_sightings": one("SELECT COUNT(*) FROM sightings"),
                "journal_receipts": one("SELECT COUNT(*) FROM receipts"),
                "journal_settlements": one("SELECT COUNT(*) FROM settlements"),
                "quarantined": int(total[0]) if total else 0,
                "quarantine_rows": one("SELECT COUNT(*) FROM quarantine"),
                "quarantined_at_pipeline": one("SELECT COUNT(*) FROM quarantine WHERE stage='pipeline'"),
                "outbox_rows": one("SELECT COUNT(*) FROM outbox"),
                "alerts": one("SELECT COUNT(*) FROM alerts")}
    finally:
        conn.close()


def check(res: dict[str, Any]) -> list[str]:
    """Every way the run can be wrong, in words; empty when it is right."""
    out = []
    pairs = [("journal_transactions", "valid_transactions"), ("journal_sightings", "valid_transaction_lines"),
             ("journal_receipts", "valid_receipts"), ("journal_settlements", "valid_settlements"),
             ("quarantined", "invalid"), ("bad_commands_answered_with_error", "bad_commands")]
    for got, want in pairs:
        if res[got] != res[want]:
            out.append(f"{got}={res[got]} but {want}={res[want]}")
    if res["quarantined_at_pipeline"]:
        out.append(f"{res['quarantined_at_pipeline']} item(s) failed inside the pipeline (the boundary let them by)")
    if res["thread_deaths"]:
        out.append(f"the pipeline thread died {res['thread_deaths']} time(s)")
    if res["journal_error"]:
        out.append(f"the journal was left failing: {res['journal_error']}")
    return out


def main(argv: list[str]) -> int:
    from bench.common import write_result

    parser = argparse.ArgumentParser(prog="python -m bench.pipeline_fuzz")
    parser.add_argument("--quick", action="store_true", help="20,000 lines instead of 1,000,000")
    parser.add_argument("--events", type=int, help="lines to feed (overrides --quick)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    events = args.events or (20_000 if args.quick else 1_000_000)
    res = run(events, seed=args.seed, progress=True)
    path = write_result("pipeline_fuzz", res)
    shown = {k: v for k, v in res.items() if k not in ("pipeline_counts",)}
    print(json.dumps(shown, indent=2, ensure_ascii=False))
    print(f"raw result: {path}")
    return 1 if res["problems"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
