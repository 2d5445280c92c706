"""Slips seen but not understood: counted per template and field, shown in doctor and metrics, told once a day.

The receipt decoder marks a printed slip that looks like a payment slip or a sales receipt (money amounts,
a card or voucher pattern) but gave no event: ``unread = "no_template"`` (no template fits) or
``"missing_field"`` (``unread_template`` fits but misses ``unread_field``, a required field). Each such slip
is a sale no rule checked, so it must not pass silently: the pipeline counts it here, per (reason,
template, field), in journal meta ``unread`` (doctor and the metrics read it from there, and a rolled-back
item's count is rolled back with it), and raises ONE ``device`` notice to the people channels per
(reason, template, field) per shop-local day while the problem lasts: the installer hears of it the day it
starts, and again each day it goes on, never once per slip. (Not "until it is understood again": a slip
that is understood does not say which template read it, so "again" could not be told reliably.)

Excerpts are the slip's first lines, already card-masked at the event boundary and scrubbed again here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any

from agent.alerts.lifecycle import NoticeKind
from drivers.events import ReceiptText
from drivers.pan import scrub_text

META_KEY = "unread"
MAX_KEYS = 200          # distinct (reason, template, field): a flood of invented names cannot grow meta forever
EXCERPT_LINES = 4
EXCERPT_CHARS = 120


@dataclass(frozen=True, slots=True)
class Unread:
    """One kind of slip not understood, as doctor, the metrics and the notice show it."""

    reason: str              # no_template | missing_field
    template: str | None
    field: str | None
    source: str
    count: int
    first: datetime
    last: datetime
    excerpt: str
    notified: str | None     # the shop-local day the last notice was raised

    @property
    def key(self) -> str:
        return key_of(self.reason, self.template, self.field)


def key_of(reason: str, template: str | None, field: str | None) -> str:
    return f"{reason}|{template or ''}|{field or ''}"


def excerpt(receipt: ReceiptText) -> str:
    lines = [" ".join(x.split()) for x in receipt.lines if x.strip()][:EXCERPT_LINES]
    text = scrub_text(" / ".join(lines))
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS - 1] + "…"


def load(text: str | None) -> dict[str, Unread]:
    try:
        raw = json.loads(text) if text else {}
        return {k: Unread(reason=str(v["reason"]), template=v.get("template"), field=v.get("field"),
                          source=str(v.get("source") or "?"), count=int(v["count"]),
                          first=datetime.fromisoformat(v["first"]), last=datetime.fromisoformat(v["last"]),
                          excerpt=str(v.get("excerpt") or ""), notified=v.get("notified"))
                for k, v in (raw.get("items") or {}).items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        return {}   # unreadable: counting starts afresh; the next slip is counted and told again


def dump(items: dict[str, Unread]) -> str:
    return json.dumps({"items": {k: {"reason": u.reason, "template": u.template, "field": u.field,
                                     "source": u.source, "count": u.count, "first": u.first.isoformat(),
                                     "last": u.last.isoformat(), "excerpt": u.excerpt, "notified": u.notified}
                                 for k, u in sorted(items.items())}}, ensure_ascii=False, sort_keys=True)


def observe(text: str | None, receipt: ReceiptText, source: str, now: datetime, tz: tzinfo
            ) -> tuple[str, Unread, bool]:
    """Count one slip not understood: (the new meta text, its entry, whether to raise the notice now)."""
    assert receipt.unread is not None
    items = load(text)
    key = key_of(receipt.unread, receipt.unread_template, receipt.unread_field)
    before = items.get(key)
    if before is None and len(items) >= MAX_KEYS:
        del items[min(items, key=lambda k: items[k].last)]
    day = now.astimezone(tz).date().isoformat()
    tell = before is None or before.notified != day
    entry = Unread(reason=receipt.unread, template=receipt.unread_template, field=receipt.unread_field,
                   source=source, count=(before.count if before else 0) + 1,
                   first=before.first if before else now, last=now, excerpt=excerpt(receipt),
                   notified=day if tell else (before.notified if before else None))
    items[key] = entry
    return dump(items), entry, tell


def notice(entry: Unread) -> tuple[tuple[str, str], list[str]]:
    """(headline zh/en, lines) of the installer's notice. Chinese below the headline: read on a phone."""
    if entry.reason == "missing_field":
        what = f"{entry.source}：小票模板 {entry.template} 读不到必填项 {entry.field}，已跳过 {entry.count} 张"
    else:
        what = f"{entry.source}：{entry.count} 张像签购单/小票的单据没有模板能读懂"
    return (("小票读不懂，交易未检查", "Slips not understood"),
            [what, f"最近一张：{entry.excerpt}" if entry.excerpt else "最近一张：（无文字）",
             "这些单据上的交易没有经过检查；请维护人员运行 settleguard doctor 查看并调整模板"])


def payload(entry: Unread) -> dict[str, Any]:
    title, lines = notice(entry)
    return {"notice": NoticeKind.DEVICE.value, "problem": "unread_receipt", "source": entry.source,
            "reason": entry.reason, "template": entry.template, "field": entry.field, "count": entry.count,
            "title": list(title), "lines": lines}
