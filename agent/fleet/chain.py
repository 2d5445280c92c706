"""CHAIN-001: the same card charged the same amount at two tills of the chain within a window.

One customer double-charged at a food court: each till's own DUP rule sees one sale and nothing wrong;
only the chain sees both. Pure and deterministic: :class:`ChainWindow` takes the transaction CloudEvents
in stream order and returns findings; :func:`alert_events` turns a finding into one alert CloudEvent per
affected till with ids derived from the two transactions, so a restarted watcher republishing a finding
is deduplicated by the server (``Nats-Msg-Id``), and its alert keeps one id.

Memory is bounded by the window: entries older than the newest transaction time minus (window + late)
are dropped, ``late`` being how far behind a shop may forward after its uplink was down.
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from agent.alerts.lifecycle import AlertState, NoticeKind
from agent.delivery.cloudevents import ALERT_TYPE_PREFIX
from agent.fleet.names import split_subject, subject
from agent.identity import event_source
from agent.model import CODE_ALPHABET
from agent.units import format_money
from drivers.pan import card_tail, same_card
from drivers.timeutil import aware_time

RULE = "CHAIN-001"
RULE_VERSION = "1"
# Sales that took money: a void/refund at the second till is the remedy, not a second charge.
CHARGING_KINDS = frozenset({"sale", "preauth_complete"})


@dataclass(frozen=True)
class Seen:
    """One charge, as the window keeps it."""

    shop_id: str
    till_id: str
    key: str                  # the till's CloudEvent source + id: stable across redelivery
    time: datetime
    card: str
    amount_minor: int
    currency: str | None
    data: dict[str, Any]      # the transaction JSON as the till journaled it (card masked)

    @property
    def till(self) -> tuple[str, str]:
        return self.shop_id, self.till_id


@dataclass(frozen=True)
class Finding:
    first: Seen
    second: Seen

    @property
    def digest(self) -> str:
        keys = sorted((self.first.key, self.second.key))
        return hashlib.sha256("\n".join([RULE, *keys]).encode()).hexdigest()


def charge(subject_name: str, event: dict[str, Any] | None) -> Seen | None:
    """The charge in a transaction CloudEvent, or None when it is not one the rule compares."""
    parts = split_subject(subject_name)
    if parts is None or event is None:
        return None
    data = event["data"]
    amount = data.get("amount_minor")
    card = data.get("card")
    # When the till received it (the CloudEvent's time, the till's own clock) rather than the terminal's
    # printed time: two tills' terminals can each be minutes off, and the till corrects its rules for that
    # skew but publishes the event as the terminal said it. The terminal's time is the fallback.
    when = aware_time(event.get("time")) or aware_time(data.get("time"))
    if (data.get("kind") not in CHARGING_KINDS or data.get("result") != "approved" or when is None
            or not isinstance(card, str) or len(card) < 4
            or not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0):
        return None
    key = f"{event.get('source')}#{event.get('id')}"
    return Seen(parts[0], parts[1], key, when, card, amount, data.get("currency"), data)


class ChainWindow:
    """The charges of the last ``window + late``, indexed by (card tail, amount, currency)."""

    def __init__(self, window: timedelta, late: timedelta = timedelta(hours=1), max_entries: int = 200_000) -> None:
        self.window = window
        self.late = late
        self.max_entries = max_entries
        self._order: deque[Seen] = deque()           # by arrival; eviction by time walks it from the left
        self._index: dict[tuple[str, int, str | None], list[Seen]] = {}
        self._keys: set[str] = set()
        self._newest: datetime | None = None

    def __len__(self) -> int:
        return len(self._order)

    def add(self, seen: Seen, *, find: bool = True) -> list[Finding]:
        """Remember a charge; the findings it makes with charges at other tills (none with ``find=False``:
        warming up on what an earlier run already judged)."""
        if seen.key in self._keys:
            return []        # redelivered: judged already
        bucket_key = (card_tail(seen.card), seen.amount_minor, seen.currency)
        findings = []
        if find:
            for other in self._index.get(bucket_key, ()):
                if (other.till != seen.till and same_card(other.card, seen.card)
                        and abs(other.time - seen.time) <= self.window):
                    first, second = sorted((other, seen), key=lambda s: (s.time, s.till))
                    findings.append(Finding(first, second))
        self._index.setdefault(bucket_key, []).append(seen)
        self._order.append(seen)
        self._keys.add(seen.key)
        if self._newest is None or seen.time > self._newest:
            self._newest = seen.time
        self._evict()
        return findings

    def _evict(self) -> None:
        assert self._newest is not None
        horizon = self._newest - self.window - self.late
        # Arrival order is nearly time order; a late straggler at the left end is kept until those before
        # it go (bounded by max_entries), which errs toward remembering, never toward a missed pair.
        while self._order and (self._order[0].time < horizon or len(self._order) > self.max_entries):
            old = self._order.popleft()
            self._keys.discard(old.key)
            bucket_key = (card_tail(old.card), old.amount_minor, old.currency)
            bucket = self._index[bucket_key]
            bucket.remove(old)
            if not bucket:
                del self._index[bucket_key]


def _code(digest: str, till: tuple[str, str]) -> str:
    n = int(hashlib.sha256(f"{digest}/{till[0]}/{till[1]}".encode()).hexdigest(), 16)
    out = []
    for _ in range(4):
        n, r = divmod(n, len(CODE_ALPHABET))
        out.append(CODE_ALPHABET[r])
    return "".join(out)


def alert_data(finding: Finding, mine: Seen, other: Seen, now: datetime, deadline: str | None,
               window_s: int) -> dict[str, Any]:
    """The alert JSON (ARCHITECTURE.md "Alert JSON") of the finding as the till ``mine`` sees it."""
    gap = int(abs((other.time - mine.time).total_seconds()))
    money = format_money(mine.amount_minor, mine.currency)
    where = f"{other.shop_id}/{other.till_id}"
    reason_zh = (f"同一张卡 {mine.card} 在 {gap // 60} 分 {gap % 60} 秒内于本店和 {where} 各付 {money}，"
                 f"可能重复扣款")
    reason = (f"card {mine.card} charged {money} here and at {where} within {gap}s: "
              f"possibly one customer charged twice")
    steps = ("核对两笔交易是否同一位顾客的同一笔消费；如重复，在其中一台终端撤销（结算前）。"
             "如属正常交易，无需处理")
    iso = now.isoformat()
    return {
        "type": "alert", "id": f"chain-{hashlib.sha256(f'{finding.digest}/{mine.till}'.encode()).hexdigest()[:24]}",
        "code": _code(finding.digest, mine.till), "revision": 1, "rule": RULE, "rule_version": RULE_VERSION,
        "severity": "medium", "certainty": "verify", "state": AlertState.OPEN.value,
        "reason": reason, "reason_zh": reason_zh,
        "evidence": {"value": gap, "threshold": window_s, "baseline": {},
                     "finding": finding.digest, "plain_zh": reason_zh,
                     "tills": [{"shop_id": s.shop_id, "till_id": s.till_id, "event": s.key}
                               for s in (finding.first, finding.second)],
                     "transactions": [finding.first.data, finding.second.data]},
        "transactions": [finding.first.data, finding.second.data],
        "suggestion": {"action": "check", "voucher_no": mine.data.get("voucher_no"),
                       "amount_minor": mine.amount_minor, "steps_zh": steps,
                       "steps_en": "Check whether both charges are one purchase; if so, void one before settlement.",
                       "deadline": deadline},
        "created": iso, "updated": iso, "answer": None,
    }


def alert_events(finding: Finding, now: datetime, deadlines: dict[tuple[str, str], str | None],
                 window: timedelta) -> list[tuple[str, str, dict[str, Any]]]:
    """(subject, Nats-Msg-Id, CloudEvent) for each affected till: the finding as an opened alert there."""
    out = []
    for mine, other in ((finding.first, finding.second), (finding.second, finding.first)):
        data = alert_data(finding, mine, other, now, deadlines.get(mine.till), int(window.total_seconds()))
        message_id = f"{RULE}.{finding.digest[:32]}.{mine.shop_id}.{mine.till_id}.r1"
        event = {"specversion": "1.0", "type": ALERT_TYPE_PREFIX + NoticeKind.OPENED.value,
                 "source": event_source(mine.shop_id, mine.till_id), "subject": data["id"], "id": message_id,
                 "time": now.isoformat(), "datacontenttype": "application/json", "data": data}
        out.append((subject(mine.shop_id, mine.till_id, "alert"), message_id, event))
    return out
