"""Both wires (issue 17): per-rule precision and recall with and without the till side.

For each seed the both-wires shop (agent/sim/shops.py ``cafe``) gets 35 days of history, a labelled
``mixed`` day and a ``clean`` day (agent/sim/till_day.py), as in :mod:`agent.sim.evaluate`. Each day is
replayed twice on a copy of the same history through :func:`agent.replay.replay`:

* **with the till side**: the terminal's events and the till's ECR requests as source ``terminal`` (a tap
  of both directions, ``direction = "both"``), the till's orders as source ``till``, and
  ``[match] sources = ["till"]`` (every other ``[match]`` key at its default);
* **without**: the terminal's answers alone, as a shop without the till tap runs today.

    python -m agent.sim.evaluate_wires --seeds 101-130                       # the tables
    python -m agent.sim.evaluate_wires --seeds 101-130 --update EVALUATION.md  # rewrite its section

Labels: ``wrong_amount`` (MATCH-001; without the till, AMT-001 is the rule that could see it),
``dup_charge`` (MATCH-002; without, DUP-001), ``no_sale`` (MATCH-003; nothing without the till),
``after_abort`` (MATCH-004: approved after the till gave up, then asked again; without, DUP-001 may see
the pair), and the statistical ones of the standalone profiles (off hours, closed day, unmatched refund,
velocity, manual entry).
"""

from __future__ import annotations

import argparse
import re
import shutil
import tempfile
import time as _time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from agent.config import parse_config
from agent.replay import ReplayItem, replay
from agent.sim.day import SimEvent
from agent.sim.evaluate import (
    CLEAN_DAY,
    REPORT_SEEDS,
    TZ,
    Opened,
    SeedPlan,
    SeedResult,
    Summary,
    _opened,
    as_replay_events,
    config_for,
    day_labels,
    markdown,
    parse_seeds,
    plan_seed,
    score,
    txns,
    write_history,
)
from agent.sim.till_day import TILL_LABELS, TILL_SOURCE, build_till_day
from agent.store.journal import Journal
from agent.store.schema import journal_path
from drivers.events import EcrRequest, Event, Order

TERMINAL_SOURCE = "terminal"
PROFILE = "cafe"

TARGETS: dict[str, frozenset[str]] = {
    "MATCH-001": frozenset({"wrong_amount"}),
    "MATCH-002": frozenset({"dup_charge"}),
    "MATCH-003": frozenset({"no_sale"}),
    "MATCH-004": frozenset({"after_abort"}),
    "AMT-001": frozenset({"wrong_amount"}),
    "DUP-001": frozenset({"dup_charge"}),
    "TIME-001": frozenset({"off_hours"}),
    "TIME-002": frozenset({"holiday"}),
    "REF-001": frozenset({"refund_unmatched"}),
    "VEL-001": frozenset({"velocity"}),
    "ENTRY-001": frozenset({"manual_entry"}),
}
ALSO_RIGHT: dict[str, frozenset[str]] = {
    "AMT-002": frozenset({"wrong_amount"}),
    "AMT-003": frozenset({"wrong_amount"}),
    "DUP-003": frozenset({"dup_charge"}),
    "VEL-001": frozenset({"dup_charge"}),      # a second charge on the card is a burst on it too
    # Without the till side the late charge and the retry are two charges of one amount: a duplicate.
    "DUP-001": frozenset({"after_abort"}),
    "MATCH-002": frozenset({"after_abort"}),
    "TIME-001": frozenset({"holiday"}),
}
ANOMALIES = (*TILL_LABELS, "off_hours", "holiday", "refund_unmatched", "velocity", "manual_entry")
# The targets, with the till side.
GOALS = {"MATCH-001": 0.99, "MATCH-002": 0.99, "MATCH-004": 0.99}
FALSE_PER_CLEAN_DAY = 0.1

SOURCES = f"""
[[source]]
name = "{TERMINAL_SOURCE}"
protocol = "jsonl"
file = "/dev/null"
direction = "both"

[[source]]
name = "{TILL_SOURCE}"
protocol = "escpos"
file = "/dev/null"
"""
MATCH = f'\n[match]\nsources = ["{TILL_SOURCE}"]\n'


@dataclass(slots=True)
class WiresSeed:
    with_till: SeedResult
    without: SeedResult
    clean_days: int = 1


def both_wires(events: Sequence[SimEvent]) -> list[tuple[Event, datetime, str]]:
    """The day as the two taps deliver it: the terminal's events and the till's orders, each from its source."""
    return [(event, at, TILL_SOURCE if isinstance(sim.event, Order) else TERMINAL_SOURCE)
            for (event, at), sim in zip(as_replay_events(events), events, strict=True)]


def run_seed(seed: int, *, count: int | None = None, history_days: int = 35, history_per_day: int | None = None,
             profile_name: str = PROFILE) -> WiresSeed:
    started = _time.perf_counter()
    plan: SeedPlan = plan_seed(seed, profile_name)
    base = config_for(plan) + SOURCES
    configs = {"without": parse_config(base, f"<wires seed {seed}>"),
               "with": parse_config(base + MATCH, f"<wires seed {seed} + till>")}
    shm = Path("/dev/shm")
    holder = tempfile.TemporaryDirectory(prefix="settleguard-wires-", dir=str(shm) if shm.is_dir() else None)
    root = Path(holder.name)
    alerts: dict[tuple[str, str], list[Opened]] = {}
    days: dict[str, list[SimEvent]] = {}
    try:
        history = root / "history"
        history.mkdir()
        journal = Journal(journal_path(history))
        write_history(journal, plan, history_days, history_per_day)
        journal.close()
        for scenario, day_seed in (("mixed", seed), ("clean", seed + 500_000)):
            events = build_till_day(scenario, seed=day_seed, day=plan.day, tz=TZ, count=count,
                                    profile=plan.profile, pool_seed=seed, closed_day=plan.closed_day)
            days[scenario] = events
            items = both_wires(events)
            for side, loaded in configs.items():
                state = root / f"{scenario}-{side}"
                shutil.copytree(history, state)
                chosen: list[ReplayItem] = list(items if side == "with" else
                                                [i for i in items if i[2] == TERMINAL_SOURCE
                                                 and not isinstance(i[0], EcrRequest)])
                result = replay(loaded, chosen, state=state, phones=False)
                alerts[(scenario, side)] = _opened(result.notifications)
    finally:
        holder.cleanup()
    labels, reprinted = day_labels(days["mixed"])
    seconds = _time.perf_counter() - started
    results = {side: SeedResult(plan, labels, alerts[("mixed", side)], alerts[("clean", side)], txns(days["mixed"]),
                                txns(days["clean"]), reprinted, seconds / 2) for side in ("with", "without")}
    return WiresSeed(results["with"], results["without"])


def report(seeds: Sequence[int], runs: Sequence[WiresSeed], seconds: float, command: str) -> tuple[str, bool]:
    """The EVALUATION.md section (markdown) and whether the issue's targets are met."""
    with_till = score([r.with_till for r in runs], targets=TARGETS, also_right=ALSO_RIGHT, anomalies=ANOMALIES)
    without = score([r.without for r in runs], targets=TARGETS, also_right=ALSO_RIGHT, anomalies=ANOMALIES)
    clean_days = len(runs)
    fa_with = sum(len(r.with_till.clean_alerts) for r in runs) / clean_days if clean_days else 0.0
    fa_without = sum(len(r.without.clean_alerts) for r in runs) / clean_days if clean_days else 0.0
    met = (all((with_till.rules[r].recall or 0.0) >= goal for r, goal in GOALS.items())
           and fa_with <= FALSE_PER_CLEAN_DAY)
    lines = [
        f"Produced by `{command}` ({len(seeds)} seeds {_span(seeds)}, profile `{PROFILE}`, "
        f"{seconds:.0f} s); not typed by hand.",
        "",
        f"**False alerts per clean day** (one clean day per seed, ~{CLEAN_DAY} customers, "
        f"{sum(r.with_till.clean_txns for r in runs) // max(1, clean_days)} terminal transactions a day on average): "
        f"**{fa_with:.2f} with the till side**, {fa_without:.2f} without "
        f"({_by_rule(with_till)} with; {_by_rule(without)} without).",
        "",
        "Targets (with the till side): " + "; ".join(
            f"{r} recall {_pct(with_till.rules[r].recall)} (target >= {g})" for r, g in GOALS.items())
        + f"; false alerts per clean day {fa_with:.2f} (target <= {FALSE_PER_CLEAN_DAY}). "
        + ("**Met.**" if met else "**Not met.**"),
        "",
        "**With the till side** (`[match] sources = [\"till\"]`):",
        "",
        markdown(with_till, targets=TARGETS, profiles=(PROFILE,)),
        "",
        "**Without the till side** (the terminal line alone, as today):",
        "",
        markdown(without, targets=TARGETS, profiles=(PROFILE,)),
    ]
    return "\n".join(lines), met


def targets_line(runs: Sequence[WiresSeed]) -> str:
    s = score([r.with_till for r in runs], targets=TARGETS, also_right=ALSO_RIGHT, anomalies=ANOMALIES)
    rules = "; ".join(f"{r} {s.rules[r].detected}/{s.rules[r].labelled} = {_pct(s.rules[r].recall)}"
                      for r in ("MATCH-001", "MATCH-002", "MATCH-003", "MATCH-004"))
    clean = sum(len(r.with_till.clean_alerts) for r in runs)
    return f"{rules}; false alerts on {len(runs)} clean days {clean} ({clean / max(1, len(runs)):.2f} a day)"


def _span(seeds: Sequence[int]) -> str:
    return f"{min(seeds)}-{max(seeds)}" if seeds else "-"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _by_rule(s: Summary) -> str:
    parts = [f"{k} {v.clean_fp}" for k, v in sorted(s.rules.items()) if v.clean_fp]
    return ", ".join(parts) or "none"


BEGIN = "<!-- both-wires: begin (generated by agent/sim/evaluate_wires.py) -->"
END = "<!-- both-wires: end -->"


def update(path: Path, section: str) -> None:
    """Replace the generated block of ``path`` (between BEGIN and END) with ``section``."""
    text = path.read_text(encoding="utf-8")
    block = f"{BEGIN}\n{section}\n{END}"
    if BEGIN in text and END in text:
        text = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        raise SystemExit(f"{path}: no {BEGIN} ... {END} block to replace")
    path.write_text(text, encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m agent.sim.evaluate_wires", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default=f"{REPORT_SEEDS.start}-{REPORT_SEEDS.stop - 1}")
    ap.add_argument("--count", type=int, help="customers per test day (default: the profile's)")
    ap.add_argument("--misses", action="store_true", help="list every labelled finding a rule missed (with the till)")
    ap.add_argument("--false", action="store_true", dest="false_alerts", help="list every false alert (with the till)")
    ap.add_argument("--update", metavar="EVALUATION.md", help="rewrite the generated block of this file")
    ap.add_argument("--also", metavar="SEEDS", action="append", default=[],
                    help="other seed ranges (e.g. the tuning seeds 1-30): one line each with the targets' figures")
    args = ap.parse_args(argv)
    seeds = parse_seeds(args.seeds)
    started = _time.perf_counter()
    runs = [run_seed(seed, count=args.count) for seed in seeds]
    others = {text: [run_seed(seed, count=args.count) for seed in parse_seeds(text)] for text in args.also}
    command = "python -m agent.sim.evaluate_wires --seeds " + args.seeds + (
        f" --count {args.count}" if args.count else "") + "".join(f" --also {t}" for t in args.also)
    section, met = report(seeds, runs, _time.perf_counter() - started, command)
    if others:
        section += "\n\nOther seeds (same code, with the till side):\n\n" + "\n".join(
            f"* seeds {text}: {targets_line(more)}" for text, more in others.items())
    print(section)
    s = score([r.with_till for r in runs], targets=TARGETS, also_right=ALSO_RIGHT, anomalies=ANOMALIES)
    if args.misses and s.misses:
        print("\nMissed (with the till side):\n" + "\n".join(f"- {m}" for m in s.misses))
    if args.false_alerts and s.false_alerts:
        print("\nFalse alerts (with the till side):\n" + "\n".join(f"- {f}" for f in s.false_alerts))
    if args.update:
        update(Path(args.update), section)
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
