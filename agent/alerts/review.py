"""Telling people again: the pre-close review of open findings, and reminders of unanswered ones.

Both are for people (chat robots, the printer); machine endpoints already got
every alert revision, and get the review itself as data (``settleguard.review`` /
``settleguard.all_clear``: :func:`machine_data`) whatever the quiet hours, so head office sees
each till's review happen. Neither changes an alert's state: they only note when
it was last brought up, so reminders keep their interval. When each may go
out, and how often, is the noise budget's (agent/alerts/budget.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, time, timedelta, tzinfo
from typing import TYPE_CHECKING, Any

from agent.alerts.announce import Announcer
from agent.alerts.budget import REMINDED, NoiseBudget
from agent.alerts.lifecycle import AWAITING_VOID, AlertState, NoticeKind
from agent.alerts.remedy import next_cutoff
from agent.messages import ReviewNotice
from agent.model import SEVERITY_RANK, Alert
from agent.store.journal import Journal
from agent.units import format_money

if TYPE_CHECKING:
    from agent.config import ShopConfig


def rule_title_zh(rule: str) -> str:
    """The rule's Chinese title (a line people read says what it is, not its id)."""
    from agent.rules import RULES  # the catalogue pulls in the rules; only needed when a line is written

    cls = RULES.get(rule)
    return str(getattr(cls, "title_zh", rule)) if cls else rule

# Most expired findings one review lists (a shop closed for weeks could otherwise fill a message).
UNCHECKED_LISTED = 200


def review_order(alerts: Sequence[Alert]) -> list[Alert]:
    """Most severe first, then the largest amount, then the oldest: the renderer sorts the same way,
    and doing it in the payload keeps machines and people reading one order."""
    def key(a: Alert) -> tuple[int, int, datetime]:
        amount = a.transactions[-1].amount_minor if a.transactions else 0
        return SEVERITY_RANK.get(a.severity, len(SEVERITY_RANK)), -amount, a.created
    return sorted(alerts, key=key)


def _item(a: Alert, tz: tzinfo) -> str:
    """One short line about an alert in a review's list: code, what it is, amount, when."""
    t = a.transactions[-1] if a.transactions else None
    code = getattr(a, "code", None) or a.id[-6:]
    what = format_money(t.amount_minor, t.currency) if t is not None else ""
    when = t.time.astimezone(tz).strftime("%m-%d %H:%M") if t is not None and t.time else ""
    return f"· {code} {rule_title_zh(a.rule)} {what} {when}".rstrip()


def refund_lines(journal: Journal, budget: NoiseBudget | None, now: datetime, tz: tzinfo) -> list[str]:
    """Escalated findings still waiting for their refund, one short line each: the daily digest they
    move to once their reminders are used up (until the refund window ends)."""
    if budget is None:
        return []
    waiting = [a for a in journal.alerts(states={AlertState.ESCALATED}, limit=None) if budget.in_refund_window(a, now)]
    if not waiting:
        return []
    return [f"待退货 {len(waiting)} 笔：", *(_item(a, tz) for a in review_order(waiting))]


def _expired_unchecked(journal: Journal, since: datetime | None) -> list[Alert]:
    if since is None:
        return []
    return [a for a in journal.alerts(states={AlertState.EXPIRED}, limit=UNCHECKED_LISTED, newest=True)
            if a.updated > since and a.answer is None]


def unchecked_lines(journal: Journal, since: datetime | None, tz: tzinfo) -> list[str]:
    """Findings to verify that expired unchecked since the last review: a phone never hears of an expiry
    on its own (agent/alerts/budget.py), and one raised in quiet hours was never pushed either, so the
    review says it (the issue's "expire with a 'not checked' note in the digest")."""
    expired = _expired_unchecked(journal, since)
    if not expired:
        return []
    return [f"未核对、已随批次过期 {len(expired)} 笔（如属正常交易，无需处理）：",
            *(_item(a, tz) for a in review_order(expired))]


def machine_data(journal: Journal, alerts: Sequence[Alert], now: datetime, *, deadline: datetime | None,
                 tz: tzinfo, since: datetime | None, shop: ShopConfig | None) -> dict[str, Any]:
    """The review as a machine reads it (COMMON5.md, "Review / all-clear data"): today's batch so far
    (approved sales since local midnight), the findings still awaiting their void, and how many
    findings to verify expired unchecked since the last review."""
    local = now.astimezone(tz)
    midnight = datetime.combine(local.date(), time.min, tzinfo=tz)
    sales = journal.approved_sales(midnight, midnight + timedelta(days=1))
    currency = shop.currency if shop is not None else next((c for c in sales if c), None)   # "": not stated
    count = sum(n for n, _ in sales.values())
    total = sum(t for cur, (_, t) in sales.items() if cur in (currency, ""))
    data: dict[str, Any] = {
        "at": local.isoformat(),
        "cutoff": deadline.isoformat() if deadline is not None else None,
        "batch": {"count": count, "total_minor": total, "currency": currency},
        "open": [a.id for a in alerts],
        "unchecked": len(_expired_unchecked(journal, since)),
    }
    if shop is not None:
        data = {"shop_id": shop.shop_id, "till_id": shop.till_slug, **data}
    return data


def review(journal: Journal, announcer: Announcer, now: datetime, *, cutoff: time | None, tz: tzinfo,
           all_clear: bool, lines: Sequence[str] = (), saw_nothing: bool = False,
           budget: NoiseBudget | None = None, shop: ShopConfig | None = None) -> dict[str, Any]:
    """One message listing every finding still awaiting its void, with the steps and the time left.

    ``lines`` are the day's facts (agent/watch/wires.py ``day_lines``: today's count and total, quiet
    sources, unreadable input), so "all clear" can be told from "saw nothing"; with ``saw_nothing``
    the all-clear's headline says that instead. Escalated findings still to be refunded follow as
    lines. On a closed day (a review started by hand, or caught up) nothing is sent.
    """
    alerts = tuple(review_order(journal.alerts(states=AWAITING_VOID, limit=None)))
    deadline = next_cutoff(now, cutoff, tz)
    previous = journal.get_meta("last_review")
    journal.set_meta("last_review", now.isoformat())
    if budget is not None and budget.is_closed(now.astimezone(tz).date()) and not alerts:
        return {"ok": True, "listed": 0, "closed": True}
    since = datetime.fromisoformat(previous) if previous else None
    if announcer.machine_channels:
        # Machines get every review, quiet hours or not ([notify] and all_clear are about phones); the id
        # names the till, since a chain's stream deduplicates by it across every till.
        kind = NoticeKind.REVIEW if alerts else NoticeKind.ALL_CLEAR
        ids = f"{shop.shop_id}.{shop.till_slug}." if shop is not None else ""
        announcer.to_machines(kind, machine_data(journal, alerts, now, deadline=deadline, tz=tz, since=since,
                                                 shop=shop),
                              now, message_id=f"{kind}.{ids}{now.astimezone(tz):%Y%m%dT%H%M%S}")
        # (No deadline: past one, delivery hands a message to a later channel, and a robot cannot show data.)
    # In quiet hours (a review caught up after a restart, an extra review time at night): no all-clear,
    # and findings wait for the opening unless one is critical (agent/alerts/budget.py).
    quiet = budget.quiet_until(now) if budget is not None else None
    if quiet is not None and not alerts:
        return {"ok": True, "listed": 0, "quiet": True}
    critical = budget is not None and any(budget.is_critical(a, now) for a in alerts)
    sections = [s for s in (refund_lines(journal, budget, now, tz), unchecked_lines(journal, since, tz)) if s]
    if not alerts and not all_clear and not sections:
        return {"ok": True, "listed": 0}
    notice = NoticeKind.REVIEW if alerts else NoticeKind.ALL_CLEAR
    payload: dict[str, Any] = {"notice": notice.value, "alerts": [a.to_dict() for a in alerts],
                               "lines": list(lines), "sections": sections}
    if saw_nothing and not alerts:
        payload["title"] = ["今日未收到任何交易", "No transactions seen today"]
    elif sections and not alerts:
        # "No open findings" would contradict the lists below it.
        payload["title"] = ["今日无新的待处理异常，另见以下清单", "No new open findings; see the lists below"]
    announcer.to_people(notice, payload, now, message_id=f"{notice}.{now.strftime('%Y%m%dT%H%M%S')}",
                        deadline=deadline, not_before=None if critical else quiet)
    for a in alerts:
        journal.touch_alert(a.id, now)
    announcer.note(ReviewNotice(now, alerts, deadline))
    return {"ok": True, "listed": len(alerts)}


def reminders(journal: Journal, announcer: Announcer, now: datetime, *, budget: NoiseBudget) -> dict[str, Any]:
    """Unanswered findings, each at its own growing interval up to its cap, never pushed in quiet hours.

    When one is due, the others due within the first interval come along (one message rather than
    several a few minutes apart); each counts as reminded. In quiet hours only escalated findings are
    reminded, and held for the opening (agent/alerts/budget.py).
    """
    if not announcer.people_channels:
        return {"ok": True, "reminded": 0}  # machines got every revision already; reminders are for people
    quiet = budget.quiet_until(now) is not None
    due: list[tuple[datetime, Alert]] = []
    for alert, last, sent in journal.alerts_to_remind(REMINDED, changed_since=budget.reminder_horizon(now)):
        if quiet and alert.state != AlertState.ESCALATED:
            continue
        at = budget.reminder_due(alert, sent, last or alert.updated, now)
        if at is not None:
            due.append((at, alert))
    if not any(at <= now for at, _ in due):
        return {"ok": True, "reminded": 0}
    soon = now + budget.first_interval
    reminded = 0
    for at, alert in sorted(due, key=lambda d: d[0]):
        if at > now and (quiet or alert.state != AlertState.OPEN or at > soon):
            continue
        journal.touch_alert(alert.id, now)
        announcer.alert(alert, NoticeKind.REMINDER, now, channels=announcer.people_channels,
                        message_id=f"{alert.id}.{alert.revision}.reminder.{now.strftime('%Y%m%dT%H%M')}")
        reminded += 1
    return {"ok": True, "reminded": reminded}


def next_reminder(journal: Journal, budget: NoiseBudget, now: datetime) -> datetime | None:
    """The earliest instant :func:`reminders` could send something, as things stand in the journal.

    Replay asks this to skip the minutes in which the reminders job would find nothing (the job
    itself runs unchanged when it does run).
    """
    best: datetime | None = None
    for alert, last, sent in journal.alerts_to_remind(REMINDED, changed_since=budget.reminder_horizon(now)):
        due = budget.reminder_due(alert, sent, last or alert.updated, now)
        if due is None:
            continue
        if alert.state != AlertState.ESCALATED:
            due = budget.quiet_until(due) or due
        best = due if best is None or due < best else best
    return best
