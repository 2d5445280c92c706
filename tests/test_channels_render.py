"""Notices as people read them: Chinese first, times in the shop's zone, no full card number; rate limits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.delivery.channels.base import (
    Notice,
    RateLimit,
    RateLimiter,
)
from agent.delivery.channels.dingtalk import DingtalkChannel
from agent.delivery.channels.feishu import FeishuChannel
from agent.delivery.channels.render import (
    compose,
    to_markdown,
    to_text,
)
from agent.delivery.channels.wecom import WecomChannel
from drivers.pan import contains_full_pan
from tests.channels_support import (
    CREATED,
    CUTOFF,
    FULL_PAN,
    NOW,
    SH,
    SHOP,
    SOURCE,
    RecordingSender,
    alert,
    notice,
)

# ---------------------------------------------------------------------------- rate limits


def test_rate_limiter_holds_the_nineteenth_message_of_a_minute() -> None:
    limiter = RateLimiter((RateLimit(18, 60.0),))
    for n in range(18):
        assert limiter.wait(NOW + timedelta(seconds=n)) == 0
        limiter.record(NOW + timedelta(seconds=n))
    assert limiter.wait(NOW + timedelta(seconds=20)) == pytest.approx(40.0)
    assert limiter.wait(NOW + timedelta(seconds=60)) == 0
    assert len(limiter) == 18


def test_feishu_limits_apply_per_second_and_per_minute() -> None:
    limiter = RateLimiter(FeishuChannel("f", token="t").limits)
    for n in range(4):
        limiter.record(NOW + timedelta(milliseconds=n))
    assert limiter.wait(NOW + timedelta(milliseconds=500)) == pytest.approx(0.5)
    assert limiter.wait(NOW + timedelta(seconds=1)) == 0


def test_a_clock_stepping_backwards_never_stalls_a_channel_longer_than_one_window() -> None:
    limiter = RateLimiter((RateLimit(1, 60.0),))
    limiter.record(NOW)
    assert limiter.wait(NOW - timedelta(hours=5)) == 60.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=5, allow_nan=False), min_size=1, max_size=150))
def test_a_sender_that_obeys_wait_never_exceeds_any_limit(gaps: list[float]) -> None:
    limits = (RateLimit(4, 1.0), RateLimit(9, 10.0))
    limiter = RateLimiter(limits)
    now, sent = NOW, []
    for gap in gaps:
        now += timedelta(seconds=gap)
        wait = limiter.wait(now)
        if wait > 0:
            now += timedelta(seconds=wait)
            assert limiter.wait(now) == 0
        limiter.record(now)
        sent.append(now)
        assert len(limiter) <= 9
    for lim in limits:
        for i, start in enumerate(sent):
            in_window = [t for t in sent[i:] if t < start + timedelta(seconds=lim.per_seconds)]
            assert len(in_window) <= lim.count


def test_a_robot_channel_throttles_itself_below_the_published_limit_without_sending() -> None:
    channel = WecomChannel("g", key="k")
    sender = RecordingSender()
    outcomes = [channel.send(notice(), message_id=f"m{n}", now=NOW + timedelta(seconds=n), sender=sender)
                for n in range(19)]
    assert [o.status for o in outcomes[:18]] == ["ok"] * 18
    assert outcomes[18].status == "retry" and outcomes[18].retry_after == pytest.approx(42.0)
    assert len(sender.sent) == 18


# ---------------------------------------------------------------------------- rendering


def test_an_alert_reads_chinese_first_then_english_when_asked_with_deadline_and_time_left() -> None:
    text = to_text(compose(notice(), NOW, SH, languages=("zh", "en")), limit_bytes=4096)
    lines = text.splitlines()
    assert lines[0] == ("23:00 前撤销 RMB 1,280.00（14:03，凭证号 000123） / "
                        "Void RMB 1,280.00 (14:03, voucher 000123) before 23:00")
    assert lines.index("重复扣款：同一张卡 622576******6691 两次扣款（凭证号 000122、000123）") < lines.index(
        "Duplicate charge: Same card 622576******6691 charged twice (vouchers 000122, 000123)")
    assert "还剩 8 小时 55 分" in text and "8 h 55 min left" in text
    assert "操作：管理 → 撤销 → 输入原凭证号 000123" in text


def test_times_follow_the_shop_zone_even_when_the_notice_was_made_in_utc() -> None:
    utc_notice = Notice(kind="opened", alerts=(alert(),), shop=SHOP, source=SOURCE,
                        created=CREATED.astimezone(UTC), deadline=CUTOFF.astimezone(UTC))
    text = to_text(compose(utc_notice, NOW.astimezone(UTC), SH), limit_bytes=4096)
    assert "11-27 14:04" in text and text.startswith("23:00 前撤销")


def test_a_missed_deadline_is_said_plainly() -> None:
    text = to_text(compose(notice(), CUTOFF + timedelta(minutes=5), SH, languages=("zh", "en")), limit_bytes=4096)
    assert "已过截止时间" in text and "deadline passed" in text


def test_all_clear_says_there_is_nothing_open() -> None:
    text = to_text(compose(notice("all_clear", ()), NOW, SH), limit_bytes=4096)
    assert text.splitlines()[0] == "今日无待处理异常"
    assert SHOP in text


def test_resolution_is_one_short_line_per_alert_naming_its_code() -> None:
    alerts = (alert("000123", state="voided"), alert("000124", state="dismissed", alert_id="01JB", code="PQRT"))
    text = to_text(compose(notice("resolved", alerts), NOW, SH), limit_bytes=4096)
    assert text.splitlines()[0] == "已处理 2 条"
    lines = [line for line in text.splitlines()[2:] if line]
    assert lines == [
        "K7QD · 重复扣款 RMB 1,280.00（14:03，凭证号 000123）：已撤销",
        "PQRT · 重复扣款 RMB 1,280.00（14:03，凭证号 000124）：已确认正常",
    ]


def test_pre_close_review_lists_every_open_alert_with_steps_once_and_time_left() -> None:
    alerts = (alert("000124", 5000, alert_id="01JB", code="PQRT"), alert("000123"))
    text = to_text(compose(notice("review", alerts), datetime(2026, 11, 27, 22, 30, tzinfo=SH), SH),
                   limit_bytes=8192)
    assert text.splitlines()[0] == "结算前复核：2 条待处理，23:00 结算（还剩 30 分）"
    for voucher in ("000123", "000124"):
        assert text.count(f"操作：管理 → 撤销 → 输入原凭证号 {voucher}") == 1
    assert text.count("（还剩 30 分）") == 1 and text.count("还剩 30 分") == 3
    # Sorted by amount, largest first, whatever order they came in.
    assert text.index("凭证号 000123") < text.index("凭证号 000124")


def test_escalation_carries_the_refund_guidance_once() -> None:
    escalated = alert(state="escalated", action="refund")
    text = to_text(compose(notice("escalated", (escalated,)), NOW, SH), limit_bytes=4096)
    assert text.splitlines()[0] == "需退货 RMB 1,280.00（2026-11-27 14:03，凭证号 000123）：批次已结算，无法撤销"
    assert "操作：在终端选择 管理 → 退货，输入原交易参考号。" in text
    assert "settleguard ack K7QD --refunded" in text


def test_a_full_card_number_never_reaches_any_message() -> None:
    leaky = alert(reason=f"card {FULL_PAN} charged twice")
    leaky["transactions"][0]["card"] = FULL_PAN    # an upstream bug we still must not forward to phones
    n = notice("opened", (leaky,))
    doc = compose(n, NOW, SH)
    rendered = [
        to_text(doc, limit_bytes=4096),
        to_markdown(doc, flavor="wecom", limit_bytes=4096),
        WecomChannel("g", key="k").build_request(n, "m", NOW).body.decode(),
        DingtalkChannel("d", access_token="t").build_request(n, "m", NOW).body.decode(),
        FeishuChannel("f", token="t").build_request(n, "m", NOW).body.decode(),
    ]
    for message in rendered:
        assert not contains_full_pan(message), message
        assert "622576******7892" in message.replace("＊", "*")


def test_rendered_markdown_cannot_be_hijacked_by_alert_text() -> None:
    hostile = alert(reason="# heading\n> quote `code` **bold**\x1b@")
    content = to_markdown(compose(notice("opened", (hostile,)), NOW, SH), flavor="wecom", limit_bytes=4096)
    assert "\x1b" not in content
    assert "\n# heading" not in content
    assert "＊＊bold＊＊" in content
