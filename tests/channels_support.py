"""What the channel tests share: a shop, an alert, a notice, a recording sender."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from agent.delivery.channels.base import (
    HttpFailure,
    HttpRequest,
    HttpResponse,
    Notice,
)
from agent.model import Alert, Suggestion, Transaction

DATA = Path(__file__).parent / "data" / "webhooks"
SH = ZoneInfo("Asia/Shanghai")
CREATED = datetime(2026, 11, 27, 14, 4, tzinfo=SH)
NOW = datetime(2026, 11, 27, 14, 5, tzinfo=SH)
CUTOFF = datetime(2026, 11, 27, 23, 0, tzinfo=SH)
SHOP = "好味道餐饮 静安店"
SOURCE = "settleguard://haoweidao-jingan/till-1"
FULL_PAN = "6225761234567892"   # Luhn-valid; must never appear in anything we send


def rows(name: str) -> list[dict[str, str]]:
    with (DATA / name).open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def txn(voucher: str, amount_minor: int, hh: int, mm: int, card: str = "622576******6691") -> Transaction:
    return Transaction(source="cn_ecr", kind="sale", result="approved", amount_minor=amount_minor,
                       time=datetime(2026, 11, 27, hh, mm, tzinfo=SH), terminal_id="15221155",
                       merchant_id="104152253311021", batch_no="000001", voucher_no=voucher,
                       currency="CNY", card=card)


def alert(voucher: str = "000123", amount_minor: int = 128000, *, state: str = "open", action: str = "void",
          reason: str | None = None, hh: int = 14, mm: int = 3, alert_id: str = "01JDUP0000000000000000000A",
          revision: int = 1, code: str = "K7QD", certainty: str = "error", severity: str = "high",
          answer: dict[str, Any] | None = None) -> dict[str, Any]:
    t = txn(voucher, amount_minor, hh, mm)
    if action == "refund":
        steps_zh = "在终端选择 管理 → 退货，输入原交易参考号。"
        steps_en = "Choose Manage → Refund, enter the RRN."
    else:
        steps_zh = f"管理 → 撤销 → 输入原凭证号 {voucher}"
        steps_en = f"Manage → Void → enter original voucher {voucher}"
    return Alert(
        id=alert_id, revision=revision, rule="DUP-001", rule_version="1", severity=severity, state=state,
        reason=reason or f"Same card 622576******6691 charged twice (vouchers 000122, {voucher})",
        reason_zh=reason or f"同一张卡 622576******6691 两次扣款（凭证号 000122、{voucher}）",
        evidence={"value": 42, "threshold": 600}, transactions=(t,),
        suggestion=Suggestion(action=action, voucher_no=voucher, amount_minor=amount_minor, steps_zh=steps_zh,
                              steps_en=steps_en, deadline=None if action == "refund" else CUTOFF),
        created=CREATED, updated=CREATED, code=code, certainty=certainty, answer=answer,
    ).to_dict()


def notice(kind: str = "opened", alerts: tuple[dict[str, Any], ...] | None = None) -> Notice:
    return Notice(kind=kind, alerts=(alert(),) if alerts is None else alerts, shop=SHOP, source=SOURCE,
                  created=CREATED, deadline=CUTOFF)


@dataclass
class RecordingSender:
    """An HttpSender that answers from a script and remembers what it was asked to send."""

    answers: list[HttpResponse | HttpFailure] = field(default_factory=list)
    sent: list[HttpRequest] = field(default_factory=list)

    def post(self, request: HttpRequest) -> HttpResponse:
        self.sent.append(request)
        answer = self.answers.pop(0) if self.answers else ok_json({"errcode": 0, "errmsg": "ok"})
        if isinstance(answer, HttpFailure):
            raise answer
        return answer


def ok_json(obj: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> HttpResponse:
    return HttpResponse(status=status, headers=headers or {"Content-Type": "application/json"},
                        body=json.dumps(obj, ensure_ascii=False).encode())
