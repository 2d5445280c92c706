"""The noise budget measured: what each phone receives per day over a simulated month, per shop profile.

For each profile of the evaluation (agent/sim/shops.py): 35 days of ordinary trading written into a
fresh journal as history, then ``days`` consecutive simulated days (the shop's own hours, closed days
included) replayed through :func:`agent.replay.replay` — the daemon's scheduler on simulated time and
the real delivery loop counting what each people channel would have delivered. Every day is a
``clean`` day (no injected anomaly), so every alert is a false one and every day is a day without a
true finding: the days the budget is judged on. ``--mixed-every N`` makes every Nth day a labelled
``mixed`` day instead (reported, not judged).

    python -m agent.sim.noise                        # the EVALUATION.md table (default budget)
    python -m agent.sim.noise --days 30 --json       # the figures as JSON

The configuration is :data:`NOISE_CONFIG` (the evaluation's shop with a WeCom robot as its one
people channel) and the budget is ``[notify]``'s defaults, printed with the table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time as _time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path

from agent.config import LoadedConfig, NotifyConfig, parse_config
from agent.replay import PhoneDay, phone_days, replay
from agent.sim.day import build_day
from agent.sim.evaluate import BASE_CONFIG, PROFILE_ORDER, TZ, as_replay_events, plan_seed, write_history
from agent.sim.shops import PROFILES
from agent.store.journal import Journal
from agent.store.schema import journal_path

# The evaluation's shop (agent/sim/evaluate.py) with one people channel: what the phones would get.
NOISE_CONFIG = BASE_CONFIG + """
[[channel]]
name = "phones"
type = "wecom"
key = "replay-only-never-sent"
{extra}"""
# Seeds whose plan_seed day starts each profile's month (any trading day would do; fixed for the table).
SEEDS = {"restaurant": 101, "convenience": 102, "boutique": 103}


@dataclass(slots=True)
class ProfileNoise:
    profile: str
    first: date
    days: list[PhoneDay]
    true_days: set[date] = field(default_factory=set)
    alerts: Counter[str] = field(default_factory=Counter)
    silent: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def judged(self) -> list[PhoneDay]:
        return [d for d in self.days if d.day not in self.true_days]

    @property
    def median(self) -> float:
        counts = [d.count for d in self.judged()]
        return statistics.median(counts) if counts else 0.0

    @property
    def maximum(self) -> int:
        return max((d.count for d in self.judged()), default=0)

    @property
    def quiet_not_critical(self) -> int:
        return sum(d.quiet_not_critical for d in self.days)


def config_text(profile_name: str, extra: str = "") -> str:
    plan = plan_seed(SEEDS[profile_name], profile_name)
    return NOISE_CONFIG.format(title=plan.profile.title, hours=plan.profile.hours_toml(()), extra=extra)


def run_profile(profile_name: str, *, days: int = 30, history_days: int = 35, mixed_every: int = 0,
                extra: str = "", work: Path | None = None) -> ProfileNoise:
    started = _time.perf_counter()
    plan = plan_seed(SEEDS[profile_name], profile_name)
    profile = PROFILES[profile_name]
    loaded: LoadedConfig = parse_config(config_text(profile_name, extra), f"<noise {profile_name}>")
    first = plan.day
    holder = tempfile.TemporaryDirectory(prefix="settleguard-noise-",
                                         dir="/dev/shm" if Path("/dev/shm").is_dir() else None)
    root = Path(holder.name) if work is None else work
    try:
        state = root / profile_name
        state.mkdir(parents=True, exist_ok=True)
        journal = Journal(journal_path(state))
        write_history(journal, plan, history_days)
        journal.close()
        events = []
        true_days: set[date] = set()
        for i in range(days):
            day = first + timedelta(days=i)
            mixed = mixed_every > 0 and i % mixed_every == mixed_every - 1
            built = build_day("mixed" if mixed else "clean", seed=plan.seed * 10_000 + i, day=day, tz=TZ,
                              profile=profile, pool_seed=plan.seed)
            if mixed and built:
                true_days.update(e.at.astimezone(TZ).date() for e in built if e.label is not None)
            events.extend(built)
        events.sort(key=lambda e: e.at)
        # The schedule runs on to the morning after the last day, so its cutoff and held notices count.
        end = datetime.combine(first + timedelta(days=days), time(0), tzinfo=TZ) - timedelta(seconds=1)
        # On the journal holding the history, as a till that has run for a month.
        result = replay(loaded, as_replay_events(events), state=state, until=end)
    finally:
        if work is None:
            holder.cleanup()
    start = datetime.combine(first, time(0), tzinfo=TZ)
    per_day = phone_days(result.phones, TZ, start, end, result.people_channels)
    opened = Counter(n.alert.rule for n in result.notifications
                     if getattr(n, "notice", None) == "opened")
    return ProfileNoise(profile_name, first, per_day, true_days, opened, result.silent,
                        _time.perf_counter() - started)


def markdown(results: Sequence[ProfileNoise]) -> str:
    lines = ["| profile | days | first day | messages per phone per day: median / max (days without a true "
             "finding) | total | pushes in quiet hours (not critical) | false alerts opened | busiest day |",
             "|---|---:|---|---|---:|---:|---|---|"]
    for r in results:
        busiest = max(r.days, key=lambda d: d.count) if r.days else None
        worst = (f"{busiest.day} {busiest.count}: " + ", ".join(f"{k} {v}" for k, v in busiest.by_rule.items())
                 + " at " + ", ".join(f"{h:02d}h×{n}" for h, n in busiest.by_hour.items())) if busiest else "-"
        lines.append(f"| {r.profile} | {len(r.days)} | {r.first} | {r.median:g} / {r.maximum} "
                     f"| {sum(d.count for d in r.days)} | {sum(d.quiet for d in r.days)} ({r.quiet_not_critical}) "
                     f"| {', '.join(f'{k} {v}' for k, v in sorted(r.alerts.items())) or '-'} | {worst} |")
    lines += ["", "Messages per phone, each day of the month (closed days included):", ""]
    for r in results:
        cells = " ".join(f"{d.day:%m-%d}:{d.count}" for d in r.days)
        lines.append(f"* {r.profile}: {cells}")
    return "\n".join(lines)


def as_json(results: Sequence[ProfileNoise]) -> str:
    return json.dumps([{"profile": r.profile, "median": r.median, "max": r.maximum,
                        "quiet_not_critical": r.quiet_not_critical, "alerts": dict(r.alerts),
                        "days": [{"day": d.day.isoformat(), "channel": d.channel, "count": d.count,
                                  "by_rule": d.by_rule, "by_hour": d.by_hour, "quiet": d.quiet,
                                  "true_finding": d.day in r.true_days} for d in r.days]}
                       for r in results], ensure_ascii=False, indent=1)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m agent.sim.noise", description=__doc__.split("\n\n")[0])
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--profile", choices=PROFILE_ORDER, action="append", help="(repeatable; default all three)")
    ap.add_argument("--mixed-every", type=int, default=0, help="every Nth day a labelled mixed day (0: none)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    results = [run_profile(p, days=args.days, mixed_every=args.mixed_every) for p in args.profile or PROFILE_ORDER]
    if args.json:
        print(as_json(results))
        return 0
    budget = NotifyConfig()
    print(f"{args.days} simulated days per profile; default budget [notify] {budget.model_dump(mode='json')}, "
          f"[delivery] repeat_interval 30m, [settlement] cutoff 23:00, review_lead 30m, follow_up_days 2; "
          f"{sum(r.seconds for r in results):.0f} s\n")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
