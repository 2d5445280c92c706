"""``settleguard fleet``: head office's look at the chain, from what the stream holds.

Pure functions of the messages read and of ``now`` (the caller's Clock), so the tests can check every
judgement exactly; :func:`gather` does the reading (agent/fleet/stream.py).

* every till that ever published, with its last heartbeat: ``ok``, ``unhealthy`` (the daemon says it is
  not seeing), ``stale`` (the last heartbeat is older than its own ``interval_s`` times the factor), or
  ``no_heartbeat`` (alerts or transactions, never a heartbeat: a till without the heartbeat key);
* open alerts by shop, earliest deadline first: the latest revision of each alert on the ``alert``
  subjects, open while its state is not final (agent/alerts/lifecycle.py FINAL_STATES);
* dead letters: the ``outbox.dead`` count of each till's last heartbeat (the messages are on the till).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from agent.alerts.lifecycle import FINAL_STATES
from agent.fleet.chain import RULE as CHAIN_RULE
from agent.fleet.names import kind_filter, split_subject
from agent.fleet.stream import Entry, NatsOptions
from drivers.timeutil import aware_time

OK, UNHEALTHY, STALE, NO_HEARTBEAT = "ok", "unhealthy", "stale", "no_heartbeat"
STATUS_ZH = {OK: "正常", UNHEALTHY: "异常", STALE: "失联", NO_HEARTBEAT: "无心跳"}
DEFAULT_STALE_FACTOR = 3.0
# CHAIN-001 alerts come from `fleet watch`, not from a till, so no till ever publishes their end (expired,
# voided). Listed while a void may still help and a day more for head office's follow-up; the stream keeps
# them until its max_age.
CHAIN_LISTED_AFTER_DEADLINE = timedelta(days=1)


def parse_factor(text: str) -> float:
    """``3x`` or ``3`` or ``2.5x``: how many heartbeat intervals of silence make a till stale."""
    raw = text.strip().lower().removesuffix("x")
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 1.0 or value > 1000:
        raise ValueError(f"--stale takes a factor of the heartbeat interval above 1, like 3x (got {text!r})")
    return value


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass
class Till:
    shop_id: str
    till_id: str
    status: str = NO_HEARTBEAT
    heartbeat: dict[str, Any] | None = None
    age_s: int | None = None
    stale_after_s: int | None = None

    def to_json(self) -> dict[str, Any]:
        hb = self.heartbeat or {}
        outbox = hb.get("outbox") if isinstance(hb.get("outbox"), dict) else {}
        return {"shop_id": self.shop_id, "till_id": self.till_id, "shop": hb.get("shop"), "till": hb.get("till"),
                "status": self.status, "stale": self.status in (STALE, NO_HEARTBEAT),
                "healthy": hb.get("healthy"), "problems": hb.get("problems") or [],
                "last_heartbeat": hb.get("at"), "age_s": self.age_s, "interval_s": hb.get("interval_s"),
                "stale_after_s": self.stale_after_s, "version": hb.get("version"), "started": hb.get("started"),
                "open_alerts": hb.get("open_alerts"), "next_cutoff": hb.get("next_cutoff"),
                "outbox": outbox, "journal": hb.get("journal"), "sources": hb.get("sources") or []}


@dataclass
class OpenAlert:
    shop_id: str
    till_id: str
    alert: dict[str, Any]

    @property
    def deadline(self) -> datetime | None:
        suggestion = self.alert.get("suggestion")
        return aware_time(suggestion.get("deadline")) if isinstance(suggestion, dict) else None

    def amount(self) -> tuple[int | None, str | None]:
        raw = self.alert.get("suggestion")
        suggestion: dict[str, Any] = raw if isinstance(raw, dict) else {}
        txs = [t for t in self.alert.get("transactions") or [] if isinstance(t, dict)]
        last = txs[-1] if txs else {}
        amount = _int(suggestion.get("amount_minor"))
        return (amount if amount is not None else _int(last.get("amount_minor"))), last.get("currency")

    def to_json(self, now: datetime) -> dict[str, Any]:
        a = self.alert
        deadline = self.deadline
        amount, currency = self.amount()
        return {"shop_id": self.shop_id, "till_id": self.till_id, "id": a.get("id"), "code": a.get("code"),
                "rule": a.get("rule"), "severity": a.get("severity"), "certainty": a.get("certainty"),
                "state": a.get("state"), "revision": a.get("revision"), "reason_zh": a.get("reason_zh"),
                "reason": a.get("reason"), "amount_minor": amount, "currency": currency,
                "deadline": deadline.isoformat() if deadline else None,
                "overdue": bool(deadline and deadline <= now), "updated": a.get("updated"), "link": a.get("link")}


@dataclass
class FleetView:
    now: datetime
    stream: str
    factor: float
    tills: list[Till] = field(default_factory=list)
    alerts: list[OpenAlert] = field(default_factory=list)
    skipped: int = 0      # messages that were not CloudEvents with data (said, never silently dropped)

    def dead_letters(self) -> list[dict[str, Any]]:
        out = []
        for t in self.tills:
            outbox = (t.heartbeat or {}).get("outbox")
            dead = _int(outbox.get("dead")) if isinstance(outbox, dict) else None
            if dead and isinstance(outbox, dict):
                out.append({"shop_id": t.shop_id, "till_id": t.till_id, "dead": dead,
                            "pending": _int(outbox.get("pending")), "oldest_pending": outbox.get("oldest_pending")})
        return out

    def to_json(self) -> dict[str, Any]:
        tills = [t.to_json() for t in self.tills]
        return {"at": self.now.isoformat(), "stream": self.stream, "stale_factor": self.factor,
                "summary": {"shops": len({t.shop_id for t in self.tills}), "tills": len(self.tills),
                            "stale": sum(1 for t in tills if t["stale"]),
                            "unhealthy": sum(1 for t in self.tills if t.status == UNHEALTHY),
                            "open_alerts": len(self.alerts),
                            "dead_letters": sum(d["dead"] for d in self.dead_letters())},
                "tills": tills, "open_alerts": [a.to_json(self.now) for a in self.alerts],
                "dead_letters": self.dead_letters(), "skipped_messages": self.skipped}


def judge(till: Till, now: datetime, factor: float) -> None:
    """Set the till's status from its last heartbeat (kept as it came, for the JSON)."""
    hb = till.heartbeat
    if hb is None:
        till.status = NO_HEARTBEAT
        return
    at, interval = aware_time(hb.get("at")), _int(hb.get("interval_s"))
    if at is None or interval is None or interval <= 0:
        # A heartbeat we cannot date is no sign of life: say stale rather than guess.
        till.status = STALE
        return
    till.age_s = int((now - at).total_seconds())
    till.stale_after_s = int(interval * factor)
    if till.age_s > till.stale_after_s:
        till.status = STALE
    elif hb.get("healthy") is False:
        till.status = UNHEALTHY
    else:
        till.status = OK


def build(now: datetime, stream: str, factor: float, subjects: dict[str, int], heartbeats: list[Entry],
          alerts: list[Entry]) -> FleetView:
    view = FleetView(now=now, stream=stream, factor=factor)
    tills: dict[tuple[str, str], Till] = {}
    for name in subjects:
        parts = split_subject(name)
        if parts is not None:
            tills.setdefault(parts[:2], Till(*parts[:2]))
    for entry in heartbeats:
        parts = split_subject(entry.subject)
        if parts is None:
            continue
        if entry.event is None:
            view.skipped += 1
            continue
        tills.setdefault(parts[:2], Till(*parts[:2])).heartbeat = entry.event["data"]
    for till in tills.values():
        judge(till, now, factor)
    view.tills = sorted(tills.values(), key=lambda t: (t.shop_id, t.till_id))

    # The latest revision of each alert (a till's alert ids are its own: key by till too).
    latest: dict[tuple[str, str, str], tuple[int, int, dict[str, Any]]] = {}
    for entry in alerts:
        parts = split_subject(entry.subject)
        data = entry.event["data"] if entry.event else None
        if parts is None or data is None or not isinstance(data.get("id"), str):
            view.skipped += 1
            continue
        key = (parts[0], parts[1], data["id"])
        rank = (_int(data.get("revision")) or 0, entry.seq)
        if key not in latest or rank > latest[key][:2]:
            latest[key] = (*rank, data)
    far = datetime.max.replace(tzinfo=now.tzinfo)
    open_alerts = (OpenAlert(shop, till, data) for (shop, till, _), (_, _, data) in latest.items()
                   if data.get("state") not in FINAL_STATES)
    view.alerts = sorted((a for a in open_alerts if not _chain_alert_over(a, now)),
                         key=lambda a: (a.shop_id, a.deadline or far, a.till_id, str(a.alert.get("id"))))
    return view


def _chain_alert_over(alert: OpenAlert, now: datetime) -> bool:
    if alert.alert.get("rule") != CHAIN_RULE:
        return False
    created = aware_time(alert.alert.get("created"))
    end = alert.deadline or (created + timedelta(days=1) if created else None)
    return end is not None and now > end + CHAIN_LISTED_AFTER_DEADLINE


async def gather(options: NatsOptions, now: datetime, factor: float) -> FleetView:
    """Read the stream (bounded: what is there when asked) and build the view."""
    from agent.fleet.stream import connect, read, stream_subjects

    nc = await connect(options)
    try:
        js = nc.jetstream(timeout=options.timeout)
        subjects = await stream_subjects(js, options)
        heartbeats = [e async for e in read(js, options, kind_filter("heartbeat"), last_per_subject=True)]
        alerts = [e async for e in read(js, options, kind_filter("alert"))]
    finally:
        await nc.close()
    return build(now, options.stream, factor, subjects, heartbeats, alerts)
