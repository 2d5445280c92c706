"""Remedies by payment method and terminal model (issue 16): config/remedies/*.toml through the alert book."""

from __future__ import annotations

import dataclasses
import logging
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from test_rules_amount import MONTH, NOW, shop
from test_rules_support import only

from agent.alerts.announce import Announcer
from agent.alerts.book import AlertBook
from agent.alerts.lifecycle import NoticeKind
from agent.alerts.remedy import RemedyBook, RemedyError, bundled_remedy_dir, load_remedies
from agent.messages import AlertChange, Command
from agent.model import Alert, Transaction
from agent.store.journal import Journal
from tests.helpers import SHANGHAI, Harness, config, sale

ROOT = Path(__file__).resolve().parents[1]


def at(hh: int, mm: int) -> datetime:
    return datetime(2026, 11, 27, hh, mm, tzinfo=SHANGHAI)


def wallet(voucher: str, amount: int, when: datetime, *, card_type: str | None = "WeChat Pay",
           rrn: str | None = None) -> Transaction:
    """A QR payment as the receipt template reads it: no card, entry mode "qr", the wallet in card_type."""
    return sale(voucher, amount, when, rrn=rrn).with_(card=None, card_type=card_type, entry_mode="qr")


def opened(h: Harness, rule: str) -> Alert:
    hits = h.opened(rule)
    assert len(hits) == 1, [c.alert.rule for c in h.opened()]
    return hits[0].alert


def escalated(h: Harness) -> list[Alert]:
    return [c.alert for c in h.changes if isinstance(c, AlertChange) and c.notice == "escalated"]


# -- wallets ---------------------------------------------------------------------------------
def test_a_wechat_pay_alert_is_refunded_in_the_merchant_app_with_no_terminal_void(tmp_path: Path) -> None:
    h = Harness(tmp_path, config('\n[rules.AMT-003]\nceiling = "1000.00"\n'))
    h.feed(wallet("000123", 250000, at(14, 4)))
    alert = opened(h, "AMT-003")
    s = alert.suggestion
    assert s is not None and s.action == "refund"
    assert "微信支付" in s.steps_zh and "申请退款" in s.steps_zh and "365 天内可退" in s.steps_zh
    assert "撤销" not in s.steps_zh and "管理" not in s.steps_zh and "Void" not in s.steps_en
    # No 23:00 terminal deadline: the platform's window (a year for WeChat Pay) is what runs out.
    assert s.deadline == at(14, 4) + timedelta(days=365)
    assert alert.evidence["remedy"]["where"] == "app" and alert.evidence["remedy"]["method"] == "wechat_pay"


def test_a_qr_payment_over_the_ceiling_gets_app_refund_steps_not_the_terminal_menu(tmp_path: Path) -> None:
    # The issue's case: a QR payment (entry_mode "qr", the wallet not named) above AMT-003's ceiling.
    h = Harness(tmp_path, config('\n[rules.AMT-003]\nceiling = "1000.00"\n'))
    h.feed(wallet("000301", 250000, at(15, 0), card_type=None))
    alert = opened(h, "AMT-003")
    s = alert.suggestion
    assert s is not None and s.action == "refund"
    assert "商户 App" in s.steps_zh and "退款" in s.steps_zh and "撤销" not in s.steps_zh
    assert "None" not in s.steps_zh + s.steps_en
    assert s.deadline is not None and s.deadline.astimezone(SHANGHAI).date() > at(15, 0).date()


def test_a_wallet_error_open_at_cutoff_escalates_with_the_same_app_refund(tmp_path: Path) -> None:
    h = Harness(tmp_path, config('\n[rules.AMT-003]\nceiling = "1000.00"\n'))
    h.feed(wallet("000301", 250000, at(15, 0), card_type="Alipay"))
    h.clock.set(at(23, 0).astimezone(UTC))
    h.pipeline.process([Command("cutoff")])
    [alert] = escalated(h)
    assert alert.suggestion is not None and alert.suggestion.action == "refund"
    assert "支付宝商家版" in alert.suggestion.steps_zh and "管理" not in alert.suggestion.steps_zh


# -- AMT-001 slips -----------------------------------------------------------------------------
def slip_book(tmp_path: Path, remedies: RemedyBook | None = None) -> tuple[AlertBook, Journal]:
    journal = Journal(tmp_path / "j.sqlite3")
    return AlertBook(journal, Announcer(journal), tz=SHANGHAI, cutoff=config().config.settlement.cutoff_time,
                     remedies=remedies), journal


def test_an_amt_slip_is_voided_then_charged_again_at_the_amount_meant(tmp_path: Path) -> None:
    finding = only(shop(MONTH).sale(NOW, 128000, voucher="000123"), "AMT-001")
    book, journal = slip_book(tmp_path)
    with journal.transaction():
        alert = book.open(finding, NOW)
    assert alert is not None and alert.suggestion is not None
    s = alert.suggestion
    assert s.action == "void" and s.amount_minor == 128000
    assert s.steps_zh.endswith("撤销后按 RMB 128.00 重新收款")
    assert s.steps_en.endswith("then charge RMB 128.00 again")
    assert "原凭证号 000123" in s.steps_zh and "RMB 1,280.00" in s.steps_zh
    assert alert.evidence["remedy"]["meant_minor"] == 12800


def test_a_settled_slip_is_refunded_by_the_excess_only(tmp_path: Path) -> None:
    finding = only(shop(MONTH).sale(NOW, 128000, voucher="000123"), "AMT-001")
    book, journal = slip_book(tmp_path)
    with journal.transaction():
        book.open(finding, NOW)
        book.batch_closed(None, None, NOW + timedelta(hours=12), by_cutoff=True)
    [alert] = journal.alerts()
    assert alert.state == "escalated" and alert.suggestion is not None
    assert alert.suggestion.action == "refund" and alert.suggestion.amount_minor == 115200
    assert "退 RMB 1,152.00（多收部分，应收 RMB 128.00）" in alert.suggestion.steps_zh


def test_a_wallet_slip_is_refunded_by_the_excess_in_the_app(tmp_path: Path) -> None:
    finding = only(shop(MONTH).sale(NOW, 128000, voucher="000123"), "AMT-001")
    qr = finding.subject.txn.with_(entry_mode="qr", card_type="WeChat Pay", card=None)
    finding = dataclasses.replace(finding, subject=dataclasses.replace(finding.subject, txn=qr))
    book, journal = slip_book(tmp_path)
    with journal.transaction():
        alert = book.open(finding, NOW)
    assert alert is not None and alert.suggestion is not None
    assert alert.suggestion.action == "refund" and alert.suggestion.amount_minor == 115200
    assert "微信支付" in alert.suggestion.steps_zh and "撤销" not in alert.suggestion.steps_zh


# -- terminal models ----------------------------------------------------------------------------
def test_an_unknown_terminal_model_gets_the_generic_steps_and_a_warning(tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="settleguard.remedy"):
        h = Harness(tmp_path, config('\n[terminal]\nmodel = "Acme T1000"\n'))
    assert "Acme T1000" in caplog.text and "generic steps" in caplog.text
    h.feed(sale("000122", 12800, at(14, 3)), sale("000123", 12800, at(14, 4)))
    alert = opened(h, "DUP-001")
    assert alert.suggestion is not None
    assert alert.suggestion.steps_zh.startswith("在终端按 管理 → 撤销，输入主管密码和原凭证号 000123")
    assert "需刷原卡" not in alert.suggestion.steps_zh
    assert alert.evidence["remedy"]["terminal_model"] is None
    assert alert.evidence["remedy"]["configured_model"] == "Acme T1000"


def test_a_known_terminal_model_gets_its_menu_path_and_says_the_card_is_needed(tmp_path: Path) -> None:
    h = Harness(tmp_path, config('\n[terminal]\nmodel = "pax a920"\n'))    # any case, spaces as written
    h.feed(sale("000122", 12800, at(14, 3)), sale("000123", 12800, at(14, 4)))
    alert = opened(h, "DUP-001")
    assert alert.suggestion is not None
    assert "银行卡 → 消费撤销" in alert.suggestion.steps_zh and "管理 → 撤销" not in alert.suggestion.steps_zh
    assert "需刷原卡" in alert.suggestion.steps_zh and "original card" in alert.suggestion.steps_en
    assert alert.evidence["remedy"]["terminal_model"] == "PAX A920"
    h.clock.set(at(23, 0).astimezone(UTC))
    h.pipeline.process([Command("cutoff")])
    [settled] = escalated(h)
    assert settled.suggestion is not None and "银行卡 → 退货" in settled.suggestion.steps_zh


def test_models_per_terminal_id_override_the_shop_model(tmp_path: Path) -> None:
    h = Harness(tmp_path, config('\n[terminal]\nmodel = "PAX A920"\nmodels = { "15221199" = "N910" }\n'))
    h.feed(sale("000122", 12800, at(14, 3), terminal="15221199"), sale("000123", 12800, at(14, 4), terminal="15221199"))
    alert = opened(h, "DUP-001")
    assert alert.suggestion is not None and alert.suggestion.steps_zh.startswith("在终端按 撤销，")
    assert alert.evidence["remedy"]["terminal_model"] == "Newland N910"


def test_a_zvt_terminal_gets_storno_before_the_end_of_day_and_gutschrift_after(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.feed(sale("000122", 12800, at(14, 3), source="zvt"), sale("000123", 12800, at(14, 4), source="zvt"))
    alert = opened(h, "DUP-001")
    assert alert.suggestion is not None and "Storno" in alert.suggestion.steps_zh
    h.clock.set(at(23, 0).astimezone(UTC))
    h.pipeline.process([Command("cutoff")])
    [settled] = escalated(h)
    assert settled.suggestion is not None and "Gutschrift" in settled.suggestion.steps_zh
    assert "需刷原卡" in settled.suggestion.steps_zh


# -- naming the transaction ------------------------------------------------------------------
def test_a_transaction_without_a_voucher_is_named_by_time_and_amount_or_rrn_never_none() -> None:
    book = RemedyBook()
    bare = Transaction(source="escpos", kind="sale", result="approved", amount_minor=4500, time=at(22, 41),
                       currency="CNY")
    for s in (book.take_back(bare, deadline=None, tz=SHANGHAI), book.check(bare, deadline=None, tz=SHANGHAI),
              book.take_back(bare, deadline=None, tz=SHANGHAI, settled=True)):
        assert "None" not in s.steps_zh + s.steps_en and s.voucher_no is None
        assert "22:41" in s.steps_zh and "RMB 45.00" in s.steps_zh
    with_rrn = bare.with_(rrn="925400012300")
    s = book.check(with_rrn, deadline=None, tz=SHANGHAI)
    assert "参考号 925400012300" in s.steps_zh and s.voucher_no == "925400012300"


def test_the_replay_line_of_a_wallet_payment_without_a_voucher_does_not_print_none() -> None:
    from agent.alerts.report import alert_line

    finding = only(shop(MONTH).sale(NOW, 128000, voucher="000123"), "AMT-001")
    bare = finding.subject.txn.with_(voucher_no=None, receipt_no=None, trace_no=None, rrn=None, entry_mode="qr")
    alert = Alert(id="01J", revision=1, rule="AMT-001", rule_version="3", severity="high", state="open", reason="r",
                  reason_zh="r", evidence={}, transactions=(bare,), suggestion=None, created=NOW, updated=NOW)
    line = alert_line(AlertChange(alert, NoticeKind.OPENED, NOW), SHANGHAI)
    assert "RMB 1,280.00" in line and "None" not in line


def test_steps_never_carry_a_local_file_path(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.pipeline.alerts.evidence_dir = tmp_path / "evidence"
    h.feed(sale("000122", 12800, at(14, 3)), sale("000123", 12800, at(14, 4)))
    h.clock.set(at(23, 0).astimezone(UTC))
    h.pipeline.process([Command("cutoff")])
    [alert] = escalated(h)
    assert alert.suggestion is not None and Path(alert.evidence["bundle"]).is_dir()
    assert str(tmp_path) not in alert.suggestion.steps_zh + alert.suggestion.steps_en


# -- the data ----------------------------------------------------------------------------------
def test_every_bundled_remedy_loads_and_the_wheel_ships_them() -> None:
    names = {r.name for r in load_remedies()}
    assert names == {"unionpay_terminal", "zvt", "wechat_pay", "alipay", "unionpay_qr", "qr_wallet"}
    assert Path(str(bundled_remedy_dir())) == ROOT / "config" / "remedies"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    shipped = project["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    assert shipped["config/remedies"] == "agent/alerts/remedies_data"   # where bundled_remedy_dir looks when installed


def write(tmp_path: Path, name: str, text: str) -> Path:
    folder = tmp_path / "remedies"
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(text, encoding="utf-8")
    return folder


APP = 'name = "{name}"\ntitle_zh = "x"\ntitle_en = "x"\nwhere = "app"\n[match]\ncard_types = ["Acme Pay"]\n' \
      '[refund]\nzh = "{zh}"\nen = "e"\nshort_zh = "s"\nshort_en = "s"\nwindow_days = 7\n'


def test_an_installers_remedy_adds_a_wallet_and_a_bad_one_fails_naming_file_and_key(tmp_path: Path) -> None:
    folder = write(tmp_path, "acme.toml", APP.format(name="acme", zh="在 Acme 商户端退 {refund_zh}"))
    book = RemedyBook(load_remedies(folder))
    txn = wallet("000401", 5000, at(12, 0), card_type="acme pay")
    assert book.take_back(txn, deadline=None, tz=SHANGHAI).steps_zh == "在 Acme 商户端退 RMB 50.00"
    write(tmp_path, "acme.toml", APP.format(name="acme", zh="退 {amout}"))
    with pytest.raises(RemedyError, match=r"acme\.toml: refund\.zh: unknown placeholder \{amout\}"):
        load_remedies(folder)
    write(tmp_path, "acme.toml", APP.format(name="acme", zh="x") + '[void]\nzh = "a"\nen = "b"\nshort_zh = "c"\n'
          'short_en = "d"\n')
    with pytest.raises(RemedyError, match=r"acme\.toml: void: a payment refunded in an app has no terminal void"):
        load_remedies(folder)
    write(tmp_path, "acme.toml", "default = true\n" + APP.format(name="acme", zh="x"))
    with pytest.raises(RemedyError, match="exactly one file must say default = true"):
        load_remedies(folder)
    with pytest.raises(RemedyError, match="is not a directory"):
        load_remedies(tmp_path / "nowhere")


def test_a_wallet_payment_is_answered_refunded_before_settlement_and_never_voided(tmp_path: Path) -> None:
    """The app refund the message asks for is an answer the alert takes (found by review)."""
    line = '\n[[source]]\nname = "terminal"\nprotocol = "jsonl"\nport = "/dev/null"\n'
    h = Harness(tmp_path, config('\n[rules.AMT-003]\nceiling = "1000.00"\n' + line))
    h.feed(wallet("000301", 250000, at(15, 0), card_type="WeChat Pay"))
    alert = opened(h, "AMT-003")
    voided = h.command("ack", id=alert.code, answer="voided", by="小王")
    refunded = h.command("ack", id=alert.code, answer="refunded", by="李店长", note="已在微信商户平台退款")
    assert voided["ok"] is False and "商户后台退款" in voided["error"]
    assert refunded["ok"] is True and refunded["alert"]["state"] == "refunded"
