"""Publishing to the real stream as a till would (issue 19 contract in COMMON docs / cloudevents.py), and
running the real ``settleguard`` entry point against it. The tills' own nats channel is not used here on
purpose: these tests hold ``fleet`` to the contract, not to one implementation of the other side."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from drivers.clock import SYSTEM_CLOCK

STREAM = "SETTLEGUARD"
ENTRY = str(Path(sys.executable).parent / "settleguard")


def now() -> datetime:
    return SYSTEM_CLOCK.now()


async def _publish(url: str, messages: list[tuple[str, str, dict[str, Any]]], create: bool,
                   token: str | None = None) -> list[bool]:
    import nats
    from nats.js.api import StreamConfig

    nc = await nats.connect(url, token=token) if token else await nats.connect(url)
    try:
        js = nc.jetstream()
        if create:
            await js.add_stream(StreamConfig(name=STREAM, subjects=["settleguard.>"], duplicate_window=3600.0))
        dup = []
        for subj, mid, event in messages:
            ack = await js.publish(subj, json.dumps(event, ensure_ascii=False).encode(), stream=STREAM,
                                   headers={"Nats-Msg-Id": mid})
            dup.append(bool(ack.duplicate))
        return dup
    finally:
        await nc.close()


def publish(url: str, messages: list[tuple[str, str, dict[str, Any]]], *, create: bool = False,
            token: str | None = None) -> list[bool]:
    """JetStream-publish (subject, Nats-Msg-Id, CloudEvent) triples; per message: was it a duplicate."""
    return asyncio.run(_publish(url, messages, create, token))


async def _read(url: str, filter_subject: str) -> list[tuple[str, dict[str, Any], dict[str, str]]]:
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe(filter_subject, stream=STREAM, config=ConsumerConfig(ack_policy=AckPolicy.NONE))
        left = (await sub.consumer_info()).num_pending or 0
        out = []
        while left:
            for msg in await sub.fetch(left, timeout=5):
                out.append((msg.subject, json.loads(msg.data), dict(msg.headers or {})))
                left -= 1
        return out
    finally:
        await nc.close()


def stored(url: str, filter_subject: str) -> list[tuple[str, dict[str, Any], dict[str, str]]]:
    """Every message the stream holds on ``filter_subject``: (subject, CloudEvent, headers)."""
    return asyncio.run(_read(url, filter_subject))


def cloudevent(shop: str, till: str, kind: str, data: dict[str, Any], message_id: str, *,
               type_: str | None = None, at: datetime | None = None) -> tuple[str, str, dict[str, Any]]:
    event = {"specversion": "1.0", "type": type_ or f"settleguard.{kind}", "source": f"settleguard://{shop}/{till}",
             "subject": data.get("id") or kind, "id": message_id, "time": (at or now()).isoformat(),
             "datacontenttype": "application/json", "data": data}
    return f"settleguard.{shop}.{till}.{kind}", message_id, event


def heartbeat(shop: str, till: str, at: datetime, *, interval_s: int = 60, healthy: bool = True,
              problems: tuple[str, ...] = (), dead: int = 0, pending: int = 0, open_alerts: int = 0,
              next_cutoff: str | None = None, names: tuple[str, str] = ("", "")) -> tuple[str, str, dict[str, Any]]:
    """A heartbeat exactly as COMMON5's contract spells its data, and its message id."""
    data = {"shop_id": shop, "till_id": till, "shop": names[0] or shop, "till": names[1] or till,
            "version": "0.19.0", "started": (at - timedelta(hours=5)).isoformat(), "at": at.isoformat(),
            "interval_s": interval_s, "healthy": healthy, "problems": list(problems),
            "sources": [{"name": "terminal", "protocol": "zvt", "state": "ok" if healthy else "silent",
                         "last_byte": at.isoformat(), "last_event": at.isoformat()}],
            "open_alerts": open_alerts, "next_cutoff": next_cutoff,
            "outbox": {"pending": pending, "dead": dead, "oldest_pending": None},
            "journal": {"ok": True, "schema": 5, "size_bytes": 123456}}
    mid = f"heartbeat.{shop}.{till}.{at.astimezone(UTC).strftime('%Y%m%dT%H%M%S')}"
    return cloudevent(shop, till, "heartbeat", data, mid, at=at)


def alert(shop: str, till: str, alert_id: str, revision: int, state: str, *, code: str = "K7QD",
          deadline: str | None = None, amount: int = 12800, kind: str = "opened") -> tuple[str, str, dict[str, Any]]:
    """One revision of an alert (ARCHITECTURE.md "Alert JSON")."""
    data = {"type": "alert", "id": alert_id, "code": code, "revision": revision, "rule": "DUP-001",
            "rule_version": "1", "severity": "high", "certainty": "error", "state": state,
            "reason": "same card, same amount twice", "reason_zh": "同卡同额重复扣款",
            "evidence": {"value": 0, "threshold": 0, "baseline": {}},
            "transactions": [{"type": "transaction", "amount_minor": amount, "currency": "CNY",
                              "card": "622576******6691"}],
            "suggestion": {"action": "void", "voucher_no": "000123", "amount_minor": amount, "steps_zh": "撤销",
                           "steps_en": "void", "deadline": deadline},
            "created": now().isoformat(), "updated": now().isoformat(), "answer": None}
    return cloudevent(shop, till, "alert", data, f"{alert_id}.r{revision}", type_=f"settleguard.alert.{kind}")


def sale(shop: str, till: str, voucher: str, when: datetime, *, amount: int = 3800,
         card: str = "622576******6691", kind: str = "sale") -> tuple[str, str, dict[str, Any]]:
    """A transaction event as the till journals it (ARCHITECTURE.md "Event JSON"), card masked."""
    data = {"type": "transaction", "source": "zvt", "kind": kind, "result": "approved", "terminal_id": "15221155",
            "merchant_id": "104152253311021", "batch_no": "000001", "voucher_no": voucher, "receipt_no": None,
            "trace_no": voucher, "rrn": None, "auth_code": None, "original_voucher_no": None, "original_rrn": None,
            "amount_minor": amount, "currency": "CNY", "card": card, "card_type": "UnionPay", "entry_mode": "chip",
            "time": when.isoformat(), "operator": "01"}
    return cloudevent(shop, till, "transaction", data, f"event.{shop}.{till}.{voucher}", at=when)


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The installed ``settleguard`` entry point, as head office would run it."""
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run([ENTRY, *args], capture_output=True, text=True, timeout=timeout, env=full_env, check=False)
