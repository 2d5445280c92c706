"""Evidence that helps get the money back (issue 16): every transaction, the shop and merchant, the batch
totals and a draft 情况说明, in the bundle and on the alert the webhook carries."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from agent.messages import AlertChange, Command
from agent.model import Alert
from tests.helpers import SHANGHAI, Harness, config, sale

TERMINAL = '\n[terminal]\nmerchant_name = "上海测试餐饮有限公司"\nacquirer = "银联商务上海分公司"\n'


def at(hh: int, mm: int) -> datetime:
    return datetime(2026, 11, 27, hh, mm, tzinfo=SHANGHAI)


def cutoff(h: Harness, voucher: str = "000123") -> Alert:
    """The batch closes at 23:00: the escalated alert about the charge ``voucher``."""
    h.clock.set(at(23, 0).astimezone(UTC))
    h.pipeline.process([Command("cutoff")])
    [alert] = [c.alert for c in h.changes if isinstance(c, AlertChange) and c.notice == "escalated"
               and c.alert.transactions[-1].voucher_no == voucher]
    return alert


def shop_day(h: Harness) -> None:
    """A batch with a triple charge (two duplicates of the first), one other sale and one voided sale."""
    h.feed(sale("000120", 5600, at(12, 0), card="436742******1234"))
    h.feed(sale("000121", 3000, at(12, 30), card="436742******9999"),
           sale("000125", 3000, at(12, 31), kind="void", original="000121", card="436742******9999"))
    h.feed(sale("000122", 12800, at(14, 3), rrn="925400012201"), sale("000123", 12800, at(14, 4), rrn="925400012301"),
           sale("000124", 12800, at(14, 5), rrn="925400012401"))


def test_the_bundle_holds_every_transaction_of_a_duplicate_and_the_draft_statement(tmp_path: Path) -> None:
    h = Harness(tmp_path, config(TERMINAL))
    h.pipeline.alerts.evidence_dir = tmp_path / "evidence"
    shop_day(h)
    alert = cutoff(h, "000124")    # the third charge's alert names all three
    assert alert.rule == "DUP-001" and [t.voucher_no for t in alert.transactions] == ["000122", "000123", "000124"]
    bundle = Path(alert.evidence["bundle"])
    readme = (bundle / "README.txt").read_text(encoding="utf-8")
    statement = (bundle / "statement.txt").read_text(encoding="utf-8")
    for voucher, rrn in (("000122", "925400012201"), ("000123", "925400012301"), ("000124", "925400012401")):
        assert f"凭证号 {voucher}" in readme and f"参考号 {rrn}" in readme       # every charge, not only the last
        assert f"凭证号 {voucher}" in statement
    for text in (readme, statement):
        assert "上海测试餐饮有限公司" in text
        assert "104152253311021" in text and "15221155" in text            # merchant and terminal numbers
        # The batch so far: four sales and a voided one (5 charges, RMB 470.00) and the void (RMB 30.00).
        assert "批次 000128：消费 5 笔 RMB 470.00；撤销/退货 1 笔 RMB 30.00；净额 RMB 440.00" in text
    assert statement.startswith("情况说明（退款申请）") and "致：银联商务上海分公司" in statement
    assert "需退还持卡人的是第 3 笔（凭证号 000124），金额 RMB 128.00" in statement
    assert "测试店" in readme                                                     # the shop's own name too
    record = json.loads((bundle / "evidence.json").read_text(encoding="utf-8"))
    assert [t["transaction"]["voucher_no"] for t in record["transactions"]] == ["000122", "000123", "000124"]
    assert record["shop"]["merchant_id"] == "104152253311021" and record["batch"]["net_minor"] == 44000


def test_the_alert_carries_the_statement_and_transactions_to_the_webhook(tmp_path: Path) -> None:
    h = Harness(tmp_path, config(TERMINAL))
    h.pipeline.alerts.evidence_dir = tmp_path / "evidence"
    shop_day(h)
    alert = cutoff(h, "000124")    # the third charge's alert names all three
    rows = h.journal.conn.execute("SELECT payload FROM outbox WHERE kind='escalated' AND channel='hook'"
                                  " AND alert_id=?", (alert.id,)).fetchall()
    [payload] = [json.loads(r[0]) for r in rows]
    evidence = payload["alert"]["evidence"]          # the webhook's CloudEvent data is this alert
    assert evidence["statement_zh"] == alert.evidence["statement_zh"]
    assert "情况说明" in evidence["statement_zh"] and "RMB 128.00" in evidence["statement_zh"]
    assert [t["voucher_no"] for t in evidence["transactions"]] == ["000122", "000123", "000124"]
    assert [t["role"] for t in evidence["transactions"]] == ["related", "related", "subject"]
    assert evidence["batch"]["sales_count"] == 5 and evidence["bundle"] == alert.evidence["bundle"]
    # The opening alert already lists every transaction, for the page and the webhook.
    opened = [c.alert for c in h.changes if isinstance(c, AlertChange) and c.notice == "opened"]
    assert [t["voucher_no"] for t in opened[-1].evidence["transactions"]] == ["000122", "000123", "000124"]


def test_the_merchant_number_comes_from_the_config_when_the_terminal_does_not_send_it(tmp_path: Path) -> None:
    h = Harness(tmp_path, config('\n[terminal]\nmerchant_id = "898310058121234"\n'))
    h.pipeline.alerts.evidence_dir = tmp_path / "evidence"
    h.feed(sale("000122", 12800, at(14, 3)).with_(merchant_id=None),
           sale("000123", 12800, at(14, 4)).with_(merchant_id=None))
    alert = cutoff(h)
    assert "商户编号：898310058121234" in alert.evidence["statement_zh"]
    assert "商户名称：测试店" in alert.evidence["statement_zh"]              # no merchant_name: the shop's name


def test_without_an_evidence_folder_the_alert_still_carries_the_statement(tmp_path: Path) -> None:
    h = Harness(tmp_path)                    # replay without --keep-evidence writes no files
    h.feed(sale("000122", 12800, at(14, 3)), sale("000123", 12800, at(14, 4)))
    alert = cutoff(h)
    assert "bundle" not in alert.evidence and "情况说明" in alert.evidence["statement_zh"]
    assert "商户编号：104152253311021" in alert.evidence["statement_zh"]
