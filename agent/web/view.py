"""What the till page and its API show, shaped from the journal's alert JSON and the daemon's status.

Pure functions of their inputs (the caller passes "now" from the daemon's clock): the page's
order, labels and which answer buttons an alert still takes are decided here, once, for the API
and the page alike. States are never spelled here: agent/alerts/lifecycle.py is asked.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, tzinfo
from typing import Any

from agent.alerts.book import has_terminal_line, paid_in_app
from agent.alerts.lifecycle import STATE_LABELS, allows, staff_cause
from agent.config import LoadedConfig
from agent.model import SEVERITY_RANK
from agent.schedule import fire_times, plan
from agent.store.queries import JournalReader
from agent.units import format_money

# How far ahead the next review and cutoff are looked for (a shop closed over a long holiday still has one).
LOOK_AHEAD = timedelta(days=8)
# Button labels, in the order the page shows them: (Chinese, English).
ANSWER_LABELS: dict[str, tuple[str, str]] = {
    "voided": ("已撤销", "voided"),
    "refunded": ("已退货", "refunded"),
    "legit": ("正常交易", "genuine"),
}


# Answers that close an alert on a person's word alone: a manager's when legit_needs = "manager".
WORD_ONLY = frozenset({"legit", "refunded"})


def alert_view(data: dict[str, Any], loaded: LoadedConfig, role: str = "cashier") -> dict[str, Any]:
    """The alert JSON as stored, plus ``view``: what a person reads, and the answers it still takes from
    someone in ``role`` (a button the alert book would refuse is not offered)."""
    tz = loaded.tz
    terminal_line = has_terminal_line(s.protocol for s in loaded.config.source)
    txns = data.get("transactions") or []
    subject = txns[-1] if txns else {}
    suggestion = data.get("suggestion") or {}
    amount = suggestion.get("amount_minor", subject.get("amount_minor"))
    when = subject.get("time")
    label = STATE_LABELS.get(data.get("state", ""), (data.get("state", ""), data.get("state", "")))
    in_app = paid_in_app(data.get("evidence") or {})
    causes = {name: staff_cause(name, terminal_line=terminal_line, in_app=in_app) for name in ANSWER_LABELS}
    answers = [name for name, cause in causes.items() if cause is not None and allows(data["state"], cause)
               and not (name in WORD_ONLY and loaded.config.legit_needs == "manager" and role != "manager")]
    return {**data, "view": {
        "code": data.get("code") or data["id"],
        "amount": format_money(int(amount), subject.get("currency")) if amount is not None else "",
        "voucher": suggestion.get("voucher_no") or subject.get("voucher_no") or subject.get("receipt_no") or "",
        "card": subject.get("card") or "",
        "time": datetime.fromisoformat(when).astimezone(tz).strftime("%m-%d %H:%M") if when else "",
        "state_zh": label[0], "state_en": label[1],
        "answers": answers,
        "has_evidence": bool((data.get("evidence") or {}).get("bundle")),
    }}


def urgency(data: dict[str, Any]) -> tuple[Any, ...]:
    """Soonest deadline first (none last), then the more severe, then the older."""
    deadline = (data.get("suggestion") or {}).get("deadline")
    due = datetime.fromisoformat(deadline).timestamp() if deadline else float("inf")
    return (due, SEVERITY_RANK.get(data.get("severity", ""), 9), data.get("created", ""))


def next_times(loaded: LoadedConfig, now: datetime) -> dict[str, str | None]:
    """The next pre-close review and the next cutoff after ``now`` (ISO, the shop's zone), on the shop's schedule."""
    jobs = [j for j in plan(loaded) if j.name in ("review", "cutoff")]
    found: dict[str, str | None] = {"review": None, "cutoff": None}
    for at, name in fire_times(jobs, now, now + LOOK_AHEAD):
        if found.get(name) is None:
            found[name] = at.astimezone(loaded.tz).isoformat()
    return found


def batch_start(reader: JournalReader, loaded: LoadedConfig, now: datetime) -> datetime:
    """Where the batch in progress began: the last batch close, or the last cutoff, or local midnight."""
    tz = loaded.tz
    local = now.astimezone(tz)
    start = datetime.combine(local.date(), datetime.min.time(), tzinfo=tz)
    cutoff = loaded.config.settlement.cutoff_time
    if cutoff is not None:
        today_cutoff = datetime.combine(local.date(), cutoff, tzinfo=tz)
        start = today_cutoff if today_cutoff <= now else today_cutoff - timedelta(days=1)
    closed = reader.last_batch_close()
    if closed is not None and start < closed <= now:
        start = closed
    return start


def sources_view(status: dict[str, Any], wires_meta: str | None, tz: tzinfo) -> list[dict[str, Any]]:
    """Each source's line state (the reader) and any dead-wire episode (agent/watch/wires.py, in journal meta)."""
    try:
        episodes = (json.loads(wires_meta or "{}") or {}).get("episodes") or {}
    except (ValueError, AttributeError):
        episodes = {}
    out = []
    for name, s in sorted((status.get("sources") or {}).items()):
        ep = episodes.get(name) if isinstance(episodes, dict) else None
        wire = None
        if isinstance(ep, dict) and ep.get("since"):
            since = datetime.fromisoformat(ep["since"]).astimezone(tz)
            silent = ep.get("kind") == "silent"
            wire = {"kind": ep.get("kind"), "since": since.isoformat(),
                    "zh": f"自 {since:%H:%M} 起{'无数据' if silent else '读不出交易'}",
                    "en": f"{'silent' if silent else 'no transactions'} since {since:%H:%M}"}
        # A line being reopened ("waiting", "gone") is down now; "ended" is a capture file read to its end.
        fault = s.get("state") not in ("open", "ended")
        out.append({"name": name, "state": s.get("state"), "detail": s.get("detail"), "events": s.get("events", 0),
                    "decoder_error": s.get("decoder_error"), "wire": wire, "ok": wire is None and not fault})
    return out


def batch_view(reader: JournalReader, loaded: LoadedConfig, status: dict[str, Any], now: datetime
               ) -> dict[str, Any]:
    tz = loaded.tz
    since = batch_start(reader, loaded, now)
    sales = reader.approved_sales(since, now + timedelta(seconds=1))
    totals = [{"currency": cur or None, "total_minor": total, "text": format_money(total, cur or None)}
              for cur, (_, total) in sorted(sales.items())]
    times = next_times(loaded, now)
    return {
        "now": now.astimezone(tz).isoformat(),
        "since": since.astimezone(tz).isoformat(),
        "count": sum(c for c, _ in sales.values()),
        "totals": totals,
        "next_review": times["review"],
        "cutoff": times["cutoff"],
        "cutoff_manual": loaded.config.settlement.cutoff_time is None,
        "sources": sources_view(status, reader.meta_value("wires"), tz),
        "healthy": bool(status.get("healthy", True)),
        "problems": list(status.get("problems") or []),
    }
