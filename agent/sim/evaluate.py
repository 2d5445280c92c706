# Over 500 lines: one command end to end (plan, history, replay, naive reference, scoring, report) reads best whole.
"""Per-rule precision and recall on labelled simulated days, through the real pipeline.

For each seed: pick a shop profile and a test day, write the previous
``history_days`` days of ordinary trading into a fresh journal (so baselines
and the refund look-back have data, as on a till that has run for a month),
then replay the labelled ``mixed`` day through :func:`agent.replay.replay` on
simulated time, and separately a ``clean`` day of the same size on the same
history. Alerts are matched to labels by the subject transaction's
(batch, voucher).

    python -m agent.sim.evaluate --seeds 101-150 --update EVALUATION.md   # the reported tables, written in
    python -m agent.sim.evaluate --seeds 1-50 --bench      # tuning seeds, plus rules-only throughput

A rule *detects* a label when an alert on that voucher was raised by it or
lists it in ``also_matched`` (one alert per family; the most specific speaks).
Precision counts alerts by the rule that spoke: an alert is right when its
subject carries a label the rule accepts, false otherwise.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time as _time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from agent.alerts.lifecycle import NoticeKind
from agent.config import parse_config
from agent.messages import AlertChange
from agent.model import Transaction, identity_key
from agent.replay import replay
from agent.rules.calendar import ShopCalendar
from agent.sim.day import ANOMALY_LABELS, SimEvent, build_day
from agent.sim.shops import PROFILES, TILL_PROFILES, ShopProfile
from agent.sim.till_day import build_till_day
from agent.store.journal import Journal
from agent.store.schema import journal_path
from bench.naive import naive_alerts
from drivers.events import Event
from drivers.pan import mask_pan

TZ = ZoneInfo("Asia/Shanghai")
PROFILE_ORDER = ("restaurant", "convenience", "boutique", "banquet", "bakery")
REPORT_SEEDS = range(101, 131)       # the both-wires evaluation's (agent/sim/evaluate_wires.py)
# Issue 21: ten seeds per profile (round robin over five). Tuned on 1-50, reported on 101-150.
PRECISION_SEEDS = range(101, 151)
TUNING_SEEDS = range(1, 51)
# The alert families the "done" targets are stated for, with the labels each must find.
FAMILIES: dict[str, frozenset[str]] = {
    "DUP": frozenset({"dup_exact", "dup_near"}),
    "AMT": frozenset({"slip_x10", "slip_x100"}),
    "TIME": frozenset({"off_hours", "holiday"}),
}
PRICE_RISE_BACK = timedelta(days=15)   # prices rise (profiles with price_rise) mid-way through the history

# What each rule is for: recall is measured on these labels.
TARGETS: dict[str, frozenset[str]] = {
    "DUP-001": frozenset({"dup_exact"}),
    "DUP-003": frozenset({"dup_near"}),
    "AMT-001": frozenset({"slip_x10", "slip_x100"}),
    "TIME-001": frozenset({"off_hours"}),
    "TIME-002": frozenset({"holiday"}),
    "REF-001": frozenset({"refund_unmatched"}),
    "VEL-001": frozenset({"velocity"}),
    "ENTRY-001": frozenset({"manual_entry"}),
}
# Alerts that are right although the rule is not the one meant for the label (a slip IS an unusual amount;
# a sale on a closed weekday that is also a closure day IS outside opening hours).
ALSO_RIGHT: dict[str, frozenset[str]] = {
    "AMT-002": frozenset({"slip_x10", "slip_x100"}),
    "AMT-003": frozenset({"slip_x10", "slip_x100"}),
    "TIME-001": frozenset({"holiday"}),
}
CLEAN_DAY = 300  # the unit of the false-alert target: one clean day of 300 transactions

BASE_CONFIG = """\
[shop]
name = "{title}"
till = "till-1"
timezone = "Asia/Shanghai"
currency = "CNY"

{hours}
[settlement]
cutoff = "23:00"
review_lead = "30m"
"""


@dataclass(frozen=True, slots=True)
class SeedPlan:
    seed: int
    profile: ShopProfile
    day: date
    closed_day: date
    closures: tuple[date, ...]      # configured closure days ((): the closed day is a public holiday)

    @property
    def price_from(self) -> date:
        return self.day - PRICE_RISE_BACK


@dataclass(frozen=True, slots=True)
class Opened:
    rule: str
    batch_no: str | None
    voucher_no: str | None
    also: tuple[str, ...]
    amount_minor: int = 0
    value: object = None            # the evidence value (score, gap, count) for the false-alert listing


@dataclass(slots=True)
class SeedResult:
    plan: SeedPlan
    labels: dict[tuple[str | None, str | None], str]
    mixed_alerts: list[Opened]
    clean_alerts: list[Opened]
    mixed_txns: int
    clean_txns: int
    reprinted: set[tuple[str | None, str | None]] = field(default_factory=set)
    seconds: float = 0.0
    # The naive reference detector (bench/naive.py) on the same two days: rule = its family.
    naive_mixed: list[Opened] = field(default_factory=list)
    naive_clean: list[Opened] = field(default_factory=list)


def plan_seed(seed: int, profile_name: str | None = None) -> SeedPlan:
    """Profile by seed (round robin); a test day the shop trades on; the next day shut.

    The restaurant (closed at weekends and on public holidays, open on make-up workdays) gets a make-up
    workday or the eve of a public holiday, so those calendar paths are exercised; the others any day.
    """
    profile = {**PROFILES, **TILL_PROFILES}[profile_name or PROFILE_ORDER[seed % len(PROFILE_ORDER)]]
    cal = ShopCalendar(profile.hours_config(), TZ)
    # Days the installed holiday calendar covers, with room for 35 days of history before and a shut day after.
    start, end = date(2025, 2, 15), date(2026, 12, 30)
    days = [start + timedelta(days=i) for i in range((end - start).days)]

    def trades(d: date) -> bool:
        if profile.closed_on_holidays and cal.is_holiday(d)[0]:
            return False
        return bool(cal.intervals(d))

    if profile.closed_on_holidays:
        candidates = [d for d in days if trades(d) and (cal.is_makeup_workday(d)
                                                        or cal.is_holiday(d + timedelta(days=1))[0])]
    else:
        candidates = [d for d in days if trades(d)]
    day = candidates[(seed * 7919) % len(candidates)]
    closed = day + timedelta(days=1)
    public_holiday = profile.closed_on_holidays and cal.is_holiday(closed)[0]
    return SeedPlan(seed, profile, day, closed, () if public_holiday else (closed,))


def config_for(plan: SeedPlan) -> str:
    return BASE_CONFIG.format(title=plan.profile.title, hours=plan.profile.hours_toml(plan.closures))


def write_history(journal: Journal, plan: SeedPlan, days: int, per_day: int | None = None) -> int:
    """Ordinary past days straight into the journal (no rules ran on them: they are settled history)."""
    written = 0
    with journal.transaction():
        for back in range(days, 0, -1):
            d = plan.day - timedelta(days=back)
            # A shop with both wires keeps its terminal's side of the history (its orders are not needed:
            # matching looks back minutes, not days).
            build = build_day if plan.profile.till is None else build_till_day
            extra = {"price_from": plan.price_from} if build is build_day else {}
            for ev in build("clean", seed=plan.seed * 1000 + back, day=d, tz=TZ, profile=plan.profile,
                            pool_seed=plan.seed, settle=False, count=per_day, **extra):
                txn = ev.event
                if not isinstance(txn, Transaction) or ev.reprint:
                    continue
                txn = txn.with_(source="jsonl", card=mask_pan(txn.card))
                key = identity_key(txn)
                assert key is not None and txn.time is not None
                instant = txn.time.astimezone(UTC)
                journal.merge_transaction(txn, key=key, instant=instant, received=instant, source="history")
                written += 1
    return written


def as_replay_events(events: Iterable[SimEvent]) -> list[tuple[Event, datetime]]:
    """What a decoder would hand the pipeline: the card masked before anything leaves the terminal side."""
    out: list[tuple[Event, datetime]] = []
    for ev in events:
        e: Event = ev.event.with_(card=mask_pan(ev.event.card)) if isinstance(ev.event, Transaction) else ev.event
        out.append((e, ev.at.astimezone(UTC)))
    return out


def _opened(notifications: Sequence[object]) -> list[Opened]:
    out = []
    for n in notifications:
        if isinstance(n, AlertChange) and n.notice == NoticeKind.OPENED:
            subject = n.alert.transactions[-1]
            also = tuple(n.alert.evidence.get("also_matched", ()))
            out.append(Opened(n.alert.rule, subject.batch_no, subject.voucher_no, also, subject.amount_minor,
                              n.alert.evidence.get("value")))
    return out


def run_seed(seed: int, *, count: int = CLEAN_DAY, history_days: int = 35, history_per_day: int | None = None,
             work: Path | None = None, profile_name: str | None = None) -> SeedResult:
    """One seed: the labelled mixed day and a clean day, each replayed on a copy of the same history.

    ``history_days`` defaults to 35, not 30: REF-001 only claims "no matching sale" when the journal
    covers its whole 30-day look-back, and the restaurant's first history days may be a closed weekend.
    """
    started = _time.perf_counter()
    plan = plan_seed(seed, profile_name)
    loaded = parse_config(config_for(plan), f"<evaluate seed {seed}>")
    # The journal fsyncs every commit (it guards real alerts); throwaway evaluation state is better on tmpfs.
    shm = Path("/dev/shm")
    scratch = str(shm) if shm.is_dir() else None
    holder = tempfile.TemporaryDirectory(prefix="settleguard-eval-", dir=scratch) if work is None else None
    root = Path(holder.name) if holder is not None else work
    assert root is not None
    try:
        base = root / f"seed{seed}-history"
        base.mkdir(parents=True, exist_ok=True)
        journal = Journal(journal_path(base))
        write_history(journal, plan, history_days, history_per_day)
        # What the naive detector's median/MAD is computed from: the same 30 days AMT-002's baseline reads.
        start = datetime.combine(plan.day - timedelta(days=30), datetime.min.time(), tzinfo=TZ)
        history = journal.approved_sale_amounts(start, start + timedelta(days=31))
        journal.close()
        runs: dict[str, tuple[list[SimEvent], list[Opened], list[Opened]]] = {}
        for scenario, day_seed in (("mixed", seed), ("clean", seed + 500_000)):
            state = root / f"seed{seed}-{scenario}"
            shutil.copytree(base, state)
            events = build_day(scenario, seed=day_seed, day=plan.day, tz=TZ, count=count, profile=plan.profile,
                               pool_seed=seed, closed_day=plan.closed_day, price_from=plan.price_from)
            result = replay(loaded, as_replay_events(events), state=state)
            runs[scenario] = (events, _opened(result.notifications), _naive(history, events, plan))
    finally:
        if holder is not None:
            holder.cleanup()
    mixed_events, mixed_alerts, naive_mixed = runs["mixed"]
    clean_events, clean_alerts, naive_clean = runs["clean"]
    labels, reprinted = day_labels(mixed_events)
    return SeedResult(plan, labels, mixed_alerts, clean_alerts, txns(mixed_events), txns(clean_events),
                      reprinted, _time.perf_counter() - started, naive_mixed, naive_clean)


def _naive(history: Sequence[int], events: Sequence[SimEvent], plan: SeedPlan) -> list[Opened]:
    """The naive reference detector on the same day (cards masked, as the rules see them)."""
    day = [e.event.with_(card=mask_pan(e.event.card)) for e in events
           if isinstance(e.event, Transaction) and not e.reprint]
    return [Opened(family, t.batch_no, t.voucher_no, (), t.amount_minor)
            for family, t in naive_alerts(history, day, plan.profile, plan.closures)]


def day_labels(events: Sequence[SimEvent]) -> tuple[dict[tuple[str | None, str | None], str],
                                                      set[tuple[str | None, str | None]]]:
    """The labelled transactions of a day by (batch, voucher), and the reprinted ones."""
    labels: dict[tuple[str | None, str | None], str] = {}
    reprinted: set[tuple[str | None, str | None]] = set()
    for ev in events:
        if not isinstance(ev.event, Transaction):     # a settlement, or the till's order (both wires)
            continue
        key = (ev.event.batch_no, ev.event.voucher_no)
        if ev.reprint:
            reprinted.add(key)
        elif ev.label is not None:
            labels[key] = ev.label
    return labels, reprinted


def txns(events: Sequence[SimEvent]) -> int:
    return sum(1 for e in events if isinstance(e.event, Transaction) and not e.reprint)


# -- scoring ----------------------------------------------------------------------------------------
@dataclass(slots=True)
class RuleScore:
    labelled: int = 0
    detected: int = 0
    tp: int = 0
    fp: int = 0
    clean_fp: int = 0

    @property
    def recall(self) -> float | None:
        return self.detected / self.labelled if self.labelled else None

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None


@dataclass(slots=True)
class Summary:
    rules: dict[str, RuleScore] = field(default_factory=dict)
    by_profile: dict[str, Counter[str]] = field(default_factory=dict)
    clean_fp_by_rule: dict[str, Counter[str]] = field(default_factory=dict)
    misses: list[str] = field(default_factory=list)
    false_alerts: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    seconds: float = 0.0
    # profile -> family -> labelled / ours / naive (detections), and per profile the naive clean-day alerts.
    families: dict[str, dict[str, Counter[str]]] = field(default_factory=dict)
    naive_clean_fp: Counter[str] = field(default_factory=Counter)
    naive_mixed_fp: Counter[str] = field(default_factory=Counter)
    naive_by_family: dict[str, Counter[str]] = field(default_factory=dict)

    def rule(self, rule_id: str) -> RuleScore:
        return self.rules.setdefault(rule_id, RuleScore())


def score(results: Sequence[SeedResult], *, targets: dict[str, frozenset[str]] | None = None,
          also_right: dict[str, frozenset[str]] | None = None, anomalies: Iterable[str] = ANOMALY_LABELS) -> Summary:
    """Per-rule recall and precision; ``targets``/``also_right``/``anomalies`` default to the standalone
    profiles' (the both-wires profile has its own: agent/sim/evaluate_wires.py)."""
    targets = TARGETS if targets is None else targets
    also_right = ALSO_RIGHT if also_right is None else also_right
    anomalies = frozenset(anomalies)
    s = Summary()
    for rule_id in targets:
        s.rule(rule_id)
    for r in results:
        s.seeds.append(r.plan.seed)
        s.seconds += r.seconds
        prof = s.by_profile.setdefault(r.plan.profile.name, Counter())
        clean_by_rule = s.clean_fp_by_rule.setdefault(r.plan.profile.name, Counter())
        prof["seeds"] += 1
        prof["clean_txns"] += r.clean_txns
        prof["mixed_txns"] += r.mixed_txns
        prof["clean_fp"] += len(r.clean_alerts)
        where = f"seed {r.plan.seed} ({r.plan.profile.name}, {r.plan.day})"
        for a in r.clean_alerts:
            s.rule(a.rule).clean_fp += 1
            clean_by_rule[a.rule] += 1
            s.false_alerts.append(f"{where} clean day: {a.rule} on {a.batch_no}/{a.voucher_no} "
                                  f"amount {a.amount_minor} (value {a.value})")
        fired: dict[tuple[str | None, str | None], set[str]] = {}
        for a in r.mixed_alerts:
            key = (a.batch_no, a.voucher_no)
            fired.setdefault(key, set()).update((a.rule, *a.also))
            label = r.labels.get(key)
            right = label is not None and (label in targets.get(a.rule, ()) or label in also_right.get(a.rule, ()))
            if right:
                s.rule(a.rule).tp += 1
            else:
                s.rule(a.rule).fp += 1
                prof["mixed_fp"] += 1
                s.false_alerts.append(f"{where} mixed day: {a.rule} on {a.batch_no}/{a.voucher_no} "
                                      f"amount {a.amount_minor} (value {a.value}; label {label or 'none'})")
                # A make-up workday (调休) is a workday: what must not happen is a calendar rule calling it
                # closed. An amount or duplicate alert that happens to fall on one is counted with its rule.
                if label == "makeup_workday" and a.rule.startswith("TIME"):
                    prof["makeup_alerts"] += 1
            # A reprint mistaken for a second charge would show up as a DUP alert on the reprinted voucher.
            if key in r.reprinted and not right and a.rule.startswith("DUP"):
                prof["reprint_alerts"] += 1
        prof["reprints"] += len(r.reprinted)
        prof["makeup_sales"] += sum(1 for v in r.labels.values() if v == "makeup_workday")
        _score_families(s, r, fired)
        for key, label in r.labels.items():
            if label not in anomalies:
                continue
            for rule_id, meant in targets.items():
                if label in meant:
                    sc = s.rule(rule_id)
                    sc.labelled += 1
                    if rule_id in fired.get(key, set()):
                        sc.detected += 1
                    else:
                        got = ", ".join(sorted(fired.get(key, set()))) or "nothing"
                        s.misses.append(f"seed {r.plan.seed} ({r.plan.profile.name}, {r.plan.day}): {label} "
                                        f"voucher {key[0]}/{key[1]} missed by {rule_id} (raised: {got})")
    return s


def _score_families(s: Summary, r: SeedResult, fired: dict[tuple[str | None, str | None], set[str]]) -> None:
    """Recall per family (any rule of the family, or the naive detector's family, on the labelled voucher)."""
    name = r.plan.profile.name
    fams = s.families.setdefault(name, {f: Counter() for f in FAMILIES})
    naive_fired: dict[tuple[str | None, str | None], set[str]] = {}
    for a in r.naive_mixed:
        naive_fired.setdefault((a.batch_no, a.voucher_no), set()).add(a.rule)
    for key, label in r.labels.items():
        for family, meant in FAMILIES.items():
            if label not in meant:
                continue
            fams[family]["labelled"] += 1
            fams[family]["ours"] += any(rule.startswith(family) for rule in fired.get(key, set()))
            fams[family]["naive"] += family in naive_fired.get(key, set())
    s.naive_clean_fp[name] += len(r.naive_clean)
    by_family = s.naive_by_family.setdefault(name, Counter())
    for a in r.naive_clean:
        by_family[a.rule] += 1
        s.false_alerts.append(f"seed {r.plan.seed} ({name}, {r.plan.day}) clean day: naive {a.rule} on "
                              f"{a.batch_no}/{a.voucher_no} amount {a.amount_minor}")
    for a in r.naive_mixed:
        if r.labels.get((a.batch_no, a.voucher_no)) not in FAMILIES[a.rule]:
            s.naive_mixed_fp[name] += 1


def family_markdown(s: Summary, profiles: Sequence[str] = PROFILE_ORDER) -> str:
    """Ours beside the naive reference, per profile: recall per family and false alerts per clean day."""
    lines = ["| profile | seeds | clean-day txns | DUP recall ours / naive | AMT recall ours / naive "
             "| TIME recall ours / naive | false alerts per clean day ours / naive | false alerts (clean) ours "
             "/ naive, by rule | targets |",
             "|---|---:|---:|---|---|---|---|---|---|"]
    for name in profiles:
        p, fams = s.by_profile.get(name), s.families.get(name)
        if p is None or fams is None:
            continue
        cells, ok = [], True
        for family in FAMILIES:
            c = fams[family]
            ours = c["ours"] / c["labelled"] if c["labelled"] else None
            naive = c["naive"] / c["labelled"] if c["labelled"] else None
            ok = ok and (ours is None or ours >= 0.95)
            cells.append(f"{_fmt(ours)} / {_fmt(naive)} ({c['ours']}/{c['labelled']} / {c['naive']}/{c['labelled']})")
        per = p["clean_fp"] * CLEAN_DAY / p["clean_txns"] if p["clean_txns"] else 0.0
        naive_per = s.naive_clean_fp[name] * CLEAN_DAY / p["clean_txns"] if p["clean_txns"] else 0.0
        ok = ok and per <= 0.10 and per <= naive_per
        ours_by = ", ".join(f"{k} {v}" for k, v in sorted(s.clean_fp_by_rule[name].items())) or "-"
        naive_by = ", ".join(f"{k} {v}" for k, v in sorted(s.naive_by_family.get(name, Counter()).items())) or "-"
        lines.append(f"| {name} | {p['seeds']} | {p['clean_txns']} | {' | '.join(cells)} | **{per:.2f}** / "
                     f"{naive_per:.2f} | {ours_by} / {naive_by} | {'met' if ok else '**not met**'} |")
    return "\n".join(lines)


def families_met(s: Summary) -> bool:
    return "**not met**" not in family_markdown(s)


def update_markdown(path: Path, block: str, begin: str = "<!-- precision: begin",
                    end: str = "<!-- precision: end -->") -> None:
    """Put ``block`` between the markers in ``path`` (appended with its markers when they are not there yet)."""
    text = path.read_text(encoding="utf-8")
    head = f"{begin} (generated by agent/sim/evaluate.py) -->"
    if begin in text and end in text:
        before = text[:text.index(begin)]
        after = text[text.index(end) + len(end):]
    else:
        before, after = text.rstrip("\n") + "\n\n", "\n"
    path.write_text(f"{before}{head}\n{block.strip()}\n{end}{after}", encoding="utf-8")


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def markdown(s: Summary, *, targets: dict[str, frozenset[str]] | None = None,
             profiles: Sequence[str] = PROFILE_ORDER) -> str:
    targets = TARGETS if targets is None else targets
    clean_txns = sum(p["clean_txns"] for p in s.by_profile.values())
    lines = [
        "| rule | labels | labelled | detected | recall | alerts on mixed days | right | false | precision "
        "| false alerts on clean days |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for rule_id in sorted(s.rules):
        sc = s.rules[rule_id]
        meant = ", ".join(sorted(targets.get(rule_id, ()))) or "-"
        lines.append(f"| {rule_id} | {meant} | {sc.labelled} | {sc.detected} | {_fmt(sc.recall)} "
                     f"| {sc.tp + sc.fp} | {sc.tp} | {sc.fp} | {_fmt(sc.precision)} | {sc.clean_fp} |")
    lines += ["", "| profile | seeds | clean-day txns | false alerts (clean) | per clean day of 300 txns "
              "| false alerts (mixed days) | by rule (clean) | reprints / DUP alerts on them "
              "| make-up-workday sales / TIME alerts on them |",
              "|---|---:|---:|---:|---:|---:|---|---|---|"]
    total_fp = 0
    for name in profiles:
        p = s.by_profile.get(name)
        if p is None:
            continue
        total_fp += p["clean_fp"]
        per = p["clean_fp"] * CLEAN_DAY / p["clean_txns"] if p["clean_txns"] else 0.0
        by_rule = ", ".join(f"{k} {v}" for k, v in sorted(s.clean_fp_by_rule[name].items())) or "-"
        lines.append(f"| {name} | {p['seeds']} | {p['clean_txns']} | {p['clean_fp']} | {per:.2f} | {p['mixed_fp']} "
                     f"| {by_rule} | {p['reprints']} / {p['reprint_alerts']} "
                     f"| {p['makeup_sales']} / {p['makeup_alerts']} |")
    per_all = total_fp * CLEAN_DAY / clean_txns if clean_txns else 0.0
    lines.append(f"| **all** | {len(s.seeds)} | {clean_txns} | {total_fp} | **{per_all:.2f}** | "
                 f"{sum(p['mixed_fp'] for p in s.by_profile.values())} | | | |")
    return "\n".join(lines)


def false_alerts_per_clean_day(s: Summary) -> float:
    txns = sum(p["clean_txns"] for p in s.by_profile.values())
    return sum(p["clean_fp"] for p in s.by_profile.values()) * CLEAN_DAY / txns if txns else 0.0


# -- rules-only throughput ----------------------------------------------------------------------------
def bench_rules(days: int = 30, per_day: int = 600, seed: int = 7) -> tuple[int, float]:
    """(transactions, seconds) for RuleEngine.evaluate + observe + prune over ``days`` busy days, no journal."""
    from agent.rules.base import Observation, TxnView
    from agent.rules.engine import RuleEngine

    profile = PROFILES["convenience"]
    plan = plan_seed(seed, "convenience")
    views: list[TxnView] = []
    for back in range(days, 0, -1):
        d = plan.day - timedelta(days=back)
        for ev in build_day("clean", seed=seed * 1000 + back, day=d, tz=TZ, count=per_day, profile=profile,
                            pool_seed=seed, settle=False):
            if isinstance(ev.event, Transaction) and not ev.reprint:
                t = ev.event.with_(card=mask_pan(ev.event.card))
                assert t.time is not None
                utc = t.time.astimezone(UTC)
                views.append(TxnView(key=identity_key(t) or "?", txn=t, utc=utc, local=utc.astimezone(TZ)))
    engine = RuleEngine(TZ, hours=profile.hours_config())
    engine.refresh_baseline([v.amount_minor for v in views], views[0].utc)
    started = _time.perf_counter()
    for v in views:
        engine.evaluate(Observation(view=v, is_new=True), v.utc)
        engine.observe(v)
        engine.prune(v.utc)
    return len(views), _time.perf_counter() - started


def parse_seeds(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m agent.sim.evaluate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default=f"{PRECISION_SEEDS.start}-{PRECISION_SEEDS.stop - 1}",
                    help="e.g. 101-150 or 1-5,9 (tuning seeds: 1-50; reported: 101-150)")
    ap.add_argument("--count", type=int, default=CLEAN_DAY, help="sales per test day")
    ap.add_argument("--profile", choices=PROFILE_ORDER, help="one profile for every seed")
    ap.add_argument("--misses", action="store_true", help="list every labelled anomaly a rule missed")
    ap.add_argument("--false", action="store_true", dest="false_alerts",
                    help="list every alert that matched no label it is meant for")
    ap.add_argument("--bench", action="store_true", help="also measure rules-only throughput")
    ap.add_argument("--update", type=Path, metavar="EVALUATION.md",
                    help="write the tables between this file's precision markers (appended if missing)")
    args = ap.parse_args(argv)
    results = [run_seed(seed, count=args.count, profile_name=args.profile) for seed in parse_seeds(args.seeds)]
    summary = score(results)
    command = " ".join(["python -m agent.sim.evaluate", *(argv if argv is not None else sys.argv[1:])])
    block = (f"Produced by `{command}` (seeds {args.seeds}, {len(results)} seeds, {args.count} sales per test "
             f"day, {summary.seconds:.0f} s); not typed by hand.\n\n"
             "**Per profile, the rules beside the naive reference (bench/naive.py) on the same days.** Targets: "
             "recall >= 0.95 per family, false alerts per clean day <= 0.10 and at most the naive rate.\n\n"
             f"{family_markdown(summary)}\n\n**Per rule** (all profiles):\n\n{markdown(summary)}\n")
    print(block)
    if args.update is not None:
        update_markdown(args.update, block)
    if args.misses and summary.misses:
        print("\nMissed:\n" + "\n".join(f"- {m}" for m in summary.misses))
    if args.false_alerts and summary.false_alerts:
        print("\nFalse alerts:\n" + "\n".join(f"- {f}" for f in summary.false_alerts))
    if args.bench:
        n, secs = bench_rules()
        print(f"\nRules only (evaluate + observe + prune, 14 rules): {n} transactions in {secs:.2f} s "
              f"= {n / secs:,.0f} transactions/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
