"""Alert delivery channels: exact requests, published signing vectors, error classification, rendering."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.delivery.channels import make_channel
from agent.delivery.channels import webhook as webhook_mod
from agent.delivery.channels.base import (
    MAX_RETRY_AFTER,
    HttpFailure,
    HttpResponse,
    Outcome,
    classify_http,
    parse_retry_after,
)
from agent.delivery.channels.dingtalk import DingtalkChannel
from agent.delivery.channels.dingtalk import sign as dingtalk_sign
from agent.delivery.channels.feishu import FeishuChannel
from agent.delivery.channels.feishu import sign as feishu_sign
from agent.delivery.channels.render import (
    FEISHU_BODY_LIMIT,
    WECOM_MARKDOWN_LIMIT,
    compose,
    to_feishu_posts,
)
from agent.delivery.channels.webhook import WebhookChannel, WebhookVerificationError, cloudevent, verify
from agent.delivery.channels.wecom import WecomChannel
from tests.channels_support import (
    DATA,
    NOW,
    SH,
    SOURCE,
    RecordingSender,
    alert,
    notice,
    ok_json,
    rows,
)

# ---------------------------------------------------------------------------- published signing vectors


def test_every_standard_webhooks_vector_signs_or_fails_as_published() -> None:
    vectors = [r for r in rows("vectors.tsv") if r["scheme"] == "standard-webhooks-v1"]
    assert len(vectors) == 3
    for row in vectors:
        ours = webhook_mod.sign(row["secret"], row["msg_id"], row["timestamp"], row["payload"].encode())
        assert (ours == row["expected"]) == (row["expect"] == "match"), row["id"]
        headers = {"webhook-id": row["msg_id"], "webhook-timestamp": row["timestamp"],
                   "webhook-signature": row["expected"]}
        at = datetime.fromtimestamp(int(row["timestamp"]), UTC)
        if row["expect"] == "match":
            verify(headers, row["payload"].encode(), [row["secret"]], at)
        else:
            with pytest.raises(WebhookVerificationError, match="no v1 signature matches"):
                verify(headers, row["payload"].encode(), [row["secret"]], at)


def test_a_multi_signature_header_verifies_when_any_entry_matches() -> None:
    valid, _, decoy = (r for r in rows("vectors.tsv") if r["scheme"] == "standard-webhooks-v1")
    decoy_sig = decoy["expected"].split(",", 1)[1]
    header = f"v1,{decoy_sig} v2,{decoy_sig} {valid['expected']} v1,{decoy_sig}"
    headers = {"Webhook-Id": valid["msg_id"], "Webhook-Timestamp": valid["timestamp"],
               "Webhook-Signature": header}
    verify(headers, valid["payload"].encode(), [valid["secret"]],
           datetime.fromtimestamp(int(valid["timestamp"]), UTC))


def test_unpadded_webhook_secrets_decode_like_padded_ones() -> None:
    assert webhook_mod.secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").hex() == (
        "31f290f6bf06298aab4f08d43c3f082cf648a362da2da4b0")
    assert len(webhook_mod.secret_key("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS")) == 23
    with pytest.raises(ValueError, match="base64"):
        webhook_mod.secret_key("whsec_not base64!")


def test_feishu_vector_reproduces_and_is_not_the_dingtalk_algorithm() -> None:
    (row,) = (r for r in rows("vectors.tsv") if r["scheme"] == "feishu-custom-bot")
    assert feishu_sign(row["secret"], row["timestamp"]) == row["expected"]
    # Same inputs with key and message swapped (DingTalk's way) must give something else.
    assert dingtalk_sign(row["secret"], row["timestamp"]) != row["expected"]


def test_every_dingtalk_robot_vector_reproduces_url_encoded() -> None:
    vectors = [r for r in rows("vectors.tsv") if r["scheme"] == "dingtalk-custom-robot"]
    assert len(vectors) == 5
    for row in vectors:
        assert dingtalk_sign(row["secret"], row["timestamp"]) == row["expected"], row["id"]


def test_dingtalk_login_free_signature_is_not_accepted_as_a_robot_signature() -> None:
    (row,) = (r for r in rows("vectors.tsv") if r["id"] == "dingtalk-loginfree-1")
    assert dingtalk_sign(row["secret"], row["timestamp"]) != row["expected"]


# ---------------------------------------------------------------------------- generic webhook


SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OLD_SECRET = "whsec_" + base64.b64encode(b"previous secret, still accepted").decode()


def test_webhook_request_is_a_signed_cloudevent_with_a_stable_id() -> None:
    channel = WebhookChannel("back-office", url="https://hq.example.com/settleguard", secrets=[SECRET])
    the_alert = alert()
    request = channel.build_request(notice("opened", (the_alert,)), "msg_01JDUP.r1", NOW)

    assert request.url == "https://hq.example.com/settleguard"
    event = json.loads(request.body)
    assert list(event) == [
        "specversion", "type", "source", "subject", "id", "time", "datacontenttype", "data"]
    assert event == {
        "specversion": "1.0", "type": "settleguard.alert.opened", "source": SOURCE,
        "subject": "01JDUP0000000000000000000A", "id": "msg_01JDUP.r1", "time": "2026-11-27T14:04:00+08:00",
        # The alert JSON plus the till's ids (issue 19: every machine notice's data names its shop and till).
        "datacontenttype": "application/json",
        "data": {**the_alert, "shop_id": "haoweidao-jingan", "till_id": "till-1"},
    }
    assert b"\xe5\x90\x8c\xe4\xb8\x80" in request.body  # "同一" as UTF-8, not \u escapes
    key = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    expected_sig = base64.b64encode(
        hmac.new(key, b"msg_01JDUP.r1.1795759500." + request.body, hashlib.sha256).digest()).decode()
    assert request.headers == {
        "content-type": "application/cloudevents+json; charset=utf-8",
        "webhook-id": "msg_01JDUP.r1",
        "webhook-timestamp": "1795759500",
        "webhook-signature": f"v1,{expected_sig}",
    }
    # A retry a minute later: same id and body, new timestamp and signature.
    retry = channel.build_request(notice("opened", (the_alert,)), "msg_01JDUP.r1", NOW + timedelta(minutes=1))
    assert retry.body == request.body
    assert retry.headers["webhook-id"] == "msg_01JDUP.r1"
    assert retry.headers["webhook-timestamp"] == "1795759560"
    verify(retry.headers, retry.body, [SECRET], NOW + timedelta(minutes=1))


def test_rotated_secrets_sign_twice_and_either_secret_verifies() -> None:
    channel = WebhookChannel("hq", url="https://hq.example.com/hook", secrets=[SECRET, OLD_SECRET])
    request = channel.build_request(notice(), "m1", NOW)
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    verify(request.headers, request.body, [OLD_SECRET], NOW)
    verify(request.headers, request.body, [SECRET], NOW)


def test_tampered_or_stale_webhook_deliveries_do_not_verify() -> None:
    channel = WebhookChannel("hq", url="https://hq.example.com/hook", secrets=[SECRET])
    request = channel.build_request(notice(), "m1", NOW)
    with pytest.raises(WebhookVerificationError, match="no v1 signature"):
        verify(request.headers, request.body.replace(b"128000", b"1280000"), [SECRET], NOW)
    with pytest.raises(WebhookVerificationError, match="from now"):
        verify(request.headers, request.body, [SECRET], NOW + timedelta(seconds=301))
    with pytest.raises(WebhookVerificationError, match="missing"):
        verify({"webhook-id": "m1"}, request.body, [SECRET], NOW)


def test_our_cloudevent_has_the_shape_of_the_spec_example() -> None:
    example = json.loads((DATA / "cloudevents_v1.0.2_json_object_data.json").read_text(encoding="utf-8"))
    ours = cloudevent(notice(), "m1")
    required_and_used = {"specversion", "type", "source", "id", "time", "datacontenttype", "data", "subject"}
    assert required_and_used <= set(example)
    assert required_and_used == set(ours)
    for key in required_and_used - {"subject"}:
        assert type(ours[key]) is type(example[key]), key
    assert ours["specversion"] == example["specversion"] == "1.0"
    assert ours["datacontenttype"] == example["datacontenttype"]
    assert datetime.fromisoformat(ours["time"]).tzinfo is not None


@pytest.mark.parametrize(("kind", "state", "expected"), [
    ("opened", "open", "settleguard.alert.opened"),
    ("voided", "voided", "settleguard.alert.voided"),
    ("dismissed", "dismissed", "settleguard.alert.dismissed"),
    ("expired", "expired", "settleguard.alert.expired"),
    ("escalated", "escalated", "settleguard.alert.escalated"),
    ("reminder", "open", "settleguard.alert.reminder"),
])
def test_cloudevent_type_names_what_happened_to_the_alert(kind: str, state: str, expected: str) -> None:
    assert cloudevent(notice(kind, (alert(state=state),)), "m")["type"] == expected


def test_the_kind_updated_is_gone_and_a_summary_of_resolutions_is_for_people_only() -> None:
    # "updated" was handled everywhere and produced nowhere; a notice of that kind is now an error.
    with pytest.raises(ValueError, match="notice kind must be one of"):
        notice("update")
    with pytest.raises(ValueError, match="for people"):
        cloudevent(notice("resolved", (alert(state="voided"),)), "m")


def test_webhook_refuses_grouped_and_people_only_notices_without_sending() -> None:
    channel = WebhookChannel("hq", url="https://hq.example.com/hook", secrets=[SECRET])
    sender = RecordingSender()
    two = notice("opened", (alert("000123"), alert("000124", alert_id="01JDUP0000000000000000000B")))
    for bad in (two, notice("digest"), notice("all_clear", ())):
        outcome = channel.send(bad, message_id="m", now=NOW, sender=sender)
        assert outcome.status == "permanent"
    assert sender.sent == []


# ---------------------------------------------------------------------------- HTTP classification


def test_transport_errors_server_errors_and_throttling_are_retried_other_4xx_are_not() -> None:
    assert classify_http(None, HttpFailure("timeout after 10s"), NOW) == Outcome.retry(
        None, "transport: timeout after 10s")
    assert classify_http(HttpResponse(502, {}, b""), None, NOW).status == "retry"  # type: ignore[union-attr]
    assert classify_http(HttpResponse(408, {}, b""), None, NOW).status == "retry"  # type: ignore[union-attr]
    for status in (400, 401, 403, 404, 410, 301):
        outcome = classify_http(HttpResponse(status, {}, b"nope"), None, NOW)
        assert outcome is not None and outcome.status == "permanent", status
    assert classify_http(HttpResponse(204, {}, b""), None, NOW) is None


def test_retry_after_is_read_as_seconds_or_http_date_with_a_floor_and_a_ceiling() -> None:
    now = datetime(2015, 10, 21, 7, 27, 0, tzinfo=UTC)
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now) == 60.0
    assert parse_retry_after("0", now) == 1.0                      # a floor: "now" still means "slow down"
    assert parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now) == 1.0   # a date in the past
    assert parse_retry_after("999999", now) == MAX_RETRY_AFTER
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None
    response = HttpResponse(429, {"Retry-After": "Wed, 21 Oct 2015 07:29:30 GMT"}, b"")
    assert classify_http(response, None, now) == Outcome.retry(150.0, "HTTP 429")


def test_webhook_send_turns_answers_into_outcomes() -> None:
    channel = WebhookChannel("hq", url="https://hq.example.com/hook", secrets=[SECRET])
    sender = RecordingSender([HttpResponse(200, {}, b""), HttpResponse(503, {"retry-after": "30"}, b""),
                              HttpFailure("connection refused"), HttpResponse(422, {}, b"bad schema")])
    assert channel.send(notice(), message_id="m1", now=NOW, sender=sender).status == "ok"
    assert channel.send(notice(), message_id="m2", now=NOW, sender=sender) == Outcome.retry(30.0, "HTTP 503")
    # The server asked for 30 s: the channel holds every message, not only the refused one.
    held = channel.send(notice(), message_id="m3", now=NOW + timedelta(seconds=10), sender=sender)
    assert held.status == "retry" and held.retry_after == pytest.approx(20.0)
    later = NOW + timedelta(seconds=31)
    assert channel.send(notice(), message_id="m3", now=later, sender=sender).reason == (
        "transport: connection refused")
    assert channel.send(notice(), message_id="m4", now=later, sender=sender).status == "permanent"
    assert [r.headers["webhook-id"] for r in sender.sent] == ["m1", "m2", "m3", "m4"]


# ---------------------------------------------------------------------------- WeCom

WECOM_EXPECTED_CONTENT = """### 23:00 前撤销 RMB 1,280.00（14:03，凭证号 000123）
> 重复扣款：同一张卡 622576＊＊＊＊＊＊6691 两次扣款（凭证号 000122、000123）
编号 K7QD · 风险高 · 卡号 622576＊＊＊＊＊＊6691 · 还剩 8 小时 55 分 · 好味道餐饮 静安店 · 11-27 14:04
操作：管理 → 撤销 → 输入原凭证号 000123
撤销后回复：settleguard ack K7QD --voided；如属正常交易：settleguard ack K7QD --legit --note 原因"""


def test_wecom_request_is_the_documented_markdown_body_with_the_key_in_the_url() -> None:
    channel = WecomChannel("shop-group", key="693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa", tz=SH)
    request = channel.build_request(notice(), "m1", NOW)
    assert request.url == ("https://qyapi.weixin.qq.com/cgi-bin/webhook/send"
                           "?key=693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa")
    assert request.headers == {"content-type": "application/json; charset=utf-8"}
    body = json.loads(request.body)
    assert body == {"msgtype": "markdown", "markdown": {"content": WECOM_EXPECTED_CONTENT}}
    assert request.body == json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def test_wecom_bodies_have_the_shape_of_the_published_examples() -> None:
    text_example = json.loads((DATA / "wecom_doc_text_example.json").read_text(encoding="utf-8"))
    assert text_example["msgtype"] == "text" and isinstance(text_example["text"]["content"], str)
    published = (DATA / "wecom_doc_markdown_example_as_published.txt").read_text(encoding="utf-8")
    with pytest.raises(json.JSONDecodeError):   # raw newlines inside the string, as the README says
        json.loads(published)
    example = json.loads(published, strict=False)
    ours = json.loads(WecomChannel("g", key="k").build_request(notice(), "m", NOW).body)
    assert set(ours) == set(example) == {"msgtype", "markdown"}
    assert set(ours["markdown"]) == set(example["markdown"]) == {"content"}
    assert ours["msgtype"] == example["msgtype"] == "markdown"


# Expected outcome for every code in wecom_errors.tsv (status, retry_after).
WECOM_EXPECTED = {
    0: ("ok", None), 45009: ("retry", 60.0), 45033: ("retry", 10.0), 93000: ("permanent", None),
    40058: ("permanent", None), 44004: ("permanent", None), 93004: ("permanent", None),
    93008: ("permanent", None),
}


def test_every_published_wecom_errcode_is_classified() -> None:
    channel = WecomChannel("g", key="k")
    table = rows("wecom_errors.tsv")
    assert {int(r["errcode"]) for r in table} == set(WECOM_EXPECTED)
    for row in table:
        code = int(row["errcode"])
        if row["kind"] == "observed-json-body":
            body = row["observed_text"].encode()          # byte-exact from a public issue thread
        else:
            # Synthetic: only the code and its official description are published (see README §4).
            body = json.dumps({"errcode": code, "errmsg": row["official_description_90313"]}).encode()
        outcome = channel.classify(HttpResponse(200, {}, body), None, NOW)
        assert (outcome.status, outcome.retry_after) == WECOM_EXPECTED[code], code


@pytest.mark.parametrize(("body", "status", "expected"), [
    (b'{"errcode":0,"errmsg":"ok"}', 200, "ok"),
    (b'{"errcode":40008,"errmsg":"invalid message type"}', 200, "permanent"),
    (b'{"errcode":-1,"errmsg":"system busy"}', 200, "retry"),
    (b'{"errcode":12345678,"errmsg":"something new"}', 200, "permanent"),
    (b"<html>captive portal</html>", 200, "retry"),
    (b'{"errmsg":"ok"}', 200, "retry"),
    (b"", 502, "retry"),
])
def test_wecom_answers_inside_a_200_are_read_by_errcode(body: bytes, status: int, expected: str) -> None:
    outcome = WecomChannel("g", key="k").classify(HttpResponse(status, {}, body), None, NOW)
    assert outcome.status == expected


def test_a_long_digest_is_split_into_wecom_messages_of_at_most_4096_bytes_none_left_out() -> None:
    alerts = tuple(alert(f"{n:06d}", 1000 + n, alert_id=f"01J{n:023d}", code=f"K{n // 10}{n % 10}Q".translate(
        str.maketrans("0125", "3479"))) for n in range(40))
    requests = WecomChannel("g", key="k", tz=SH).build_requests(notice("digest", alerts), "m", NOW)
    contents = [json.loads(r.body)["markdown"]["content"] for r in requests]
    assert len(contents) > 1
    assert all(len(c.encode("utf-8")) <= WECOM_MARKDOWN_LIMIT for c in contents)
    assert not any("另有" in c for c in contents)
    joined = "\n".join(contents)
    for n in range(40):
        assert joined.count(f"凭证号 {n:06d}") >= 1, n
    # Largest amount first: the digest is sorted, not in the order the findings came.
    assert joined.index("凭证号 000039") < joined.index("凭证号 000000")
    assert contents[0].splitlines()[0] == f"### 可疑交易 40 条：请在 23:00 前处理（1/{len(contents)}）"


# ---------------------------------------------------------------------------- DingTalk


def test_dingtalk_request_is_signed_on_the_url_with_a_markdown_body() -> None:
    (row,) = (r for r in rows("vectors.tsv") if r["id"] == "dingtalk-5")
    at = datetime.fromtimestamp(int(row["timestamp"]) / 1000, UTC)
    channel = DingtalkChannel("ding", access_token="abc123", secret=row["secret"], tz=SH)
    request = channel.build_request(notice(), "m1", at)
    assert request.url == ("https://oapi.dingtalk.com/robot/send?access_token=abc123"
                           f"&timestamp={row['timestamp']}&sign={row['expected']}")
    body = json.loads(request.body)
    assert body["msgtype"] == "markdown"
    # The vector's clock is in 2020, so the cutoff is on another day and shows its date.
    assert body["markdown"]["title"] == "11-27 23:00 前撤销 RMB 1,280.00（14:03，凭证号 000123）"
    text = body["markdown"]["text"]
    assert text.startswith("### 11-27 23:00 前撤销 RMB 1,280.00（14:03，凭证号 000123）\n\n> 重复扣款：")
    assert DingtalkChannel("ding", access_token="abc123").build_request(notice(), "m1", NOW).url == (
        "https://oapi.dingtalk.com/robot/send?access_token=abc123")


@pytest.mark.parametrize(("code", "expected"), [
    (0, ("ok", None)), (130101, ("retry", 600.0)), (410100, ("retry", 600.0)),
    (310000, ("permanent", None)), (300001, ("permanent", None)),
])
def test_dingtalk_errcodes(code: int, expected: tuple[str, float | None]) -> None:
    answer = ok_json({"errcode": code, "errmsg": "x"})
    outcome = DingtalkChannel("d", access_token="t").classify(answer, None, NOW)
    assert (outcome.status, outcome.retry_after) == expected


def test_dingtalk_throttle_holds_the_robot_for_ten_minutes() -> None:
    channel = DingtalkChannel("d", access_token="t")
    sender = RecordingSender([ok_json({"errcode": 130101, "errmsg": "send too fast"})])
    assert channel.send(notice(), message_id="m1", now=NOW, sender=sender).retry_after == 600.0
    held = channel.send(notice(), message_id="m2", now=NOW + timedelta(minutes=9), sender=sender)
    assert held.status == "retry" and held.retry_after == pytest.approx(60.0)
    assert len(sender.sent) == 1
    after = NOW + timedelta(minutes=10)
    assert channel.send(notice(), message_id="m2", now=after, sender=sender).status == "ok"


# ---------------------------------------------------------------------------- Feishu


def test_feishu_body_carries_timestamp_sign_and_a_chinese_post() -> None:
    (row,) = (r for r in rows("vectors.tsv") if r["id"] == "feishu-1")
    at = datetime.fromtimestamp(int(row["timestamp"]), UTC)
    channel = FeishuChannel("lark", token="hook-token", secret=row["secret"], tz=SH)
    request = channel.build_request(notice(), "m1", at)
    assert request.url == "https://open.feishu.cn/open-apis/bot/v2/hook/hook-token"
    body = json.loads(request.body)
    assert list(body) == ["timestamp", "sign", "msg_type", "content"]
    assert body["timestamp"] == row["timestamp"] and body["sign"] == row["expected"]
    assert body["msg_type"] == "post"
    post = body["content"]["post"]["zh_cn"]
    assert post["title"] == "11-27 23:00 前撤销 RMB 1,280.00（14:03，凭证号 000123）"
    texts = [element["text"] for paragraph in post["content"] for element in paragraph]
    assert all(len(p) == 1 and p[0]["tag"] == "text" for p in post["content"])
    assert texts[0] == "重复扣款：同一张卡 622576******6691 两次扣款（凭证号 000122、000123）"
    unsigned = json.loads(FeishuChannel("lark", token="t").build_request(notice(), "m1", NOW).body)
    assert list(unsigned) == ["msg_type", "content"]


@pytest.mark.parametrize(("answer", "status", "expected"), [
    ({"code": 0, "msg": "success", "data": {}}, 200, ("ok", None)),
    ({"StatusCode": 0, "StatusMessage": "success"}, 200, ("ok", None)),
    ({"code": 11232, "msg": "frequency limited"}, 200, ("retry", 60.0)),
    ({"code": 9499, "msg": "Too Many Requests"}, 200, ("retry", 60.0)),
    ({"code": 19021, "msg": "sign match fail or timestamp is not within one hour from current time"}, 200,
     ("permanent", None)),
    ({"code": 19022, "msg": "Ip Not Allowed"}, 400, ("permanent", None)),
    ({"code": 19024, "msg": "Key Words Not Found"}, 200, ("permanent", None)),
])
def test_feishu_codes(answer: dict[str, Any], status: int, expected: tuple[str, float | None]) -> None:
    outcome = FeishuChannel("f", token="t").classify(ok_json(answer, status), None, NOW)
    assert (outcome.status, outcome.retry_after) == expected


def test_feishu_posts_split_below_the_limit_and_keep_every_alert() -> None:
    alerts = tuple(alert(f"{n:06d}", 1000 + n, alert_id=f"01J{n:023d}") for n in range(400))
    posts = to_feishu_posts(compose(notice("review", alerts), NOW, SH), limit_bytes=8000)
    assert len(posts) > 1
    for post in posts:
        assert len(json.dumps(post, ensure_ascii=False, separators=(",", ":")).encode()) <= 8000
    texts = [el["text"] for post in posts for p in post["zh_cn"]["content"] for el in p]
    assert not any("另有" in t for t in texts)
    assert sum(1 for t in texts if "撤销 RMB" in t) == 400
    requests = FeishuChannel("f", token="t", secret="s", tz=SH).build_requests(notice("review", alerts), "m", NOW)
    assert all(len(r.body) <= FEISHU_BODY_LIMIT for r in requests)


# ---------------------------------------------------------------------------- wiring


@dataclass
class Settings:
    name: str
    type: str
    url: str | None = None
    key: str | None = None
    secret: str | None = None
    secrets: list[str] = field(default_factory=list)
    printer: dict[str, Any] = field(default_factory=dict)
    languages: list[str] = field(default_factory=lambda: ["zh"])


def test_make_channel_builds_every_configured_type(tmp_path: Path) -> None:
    built = [
        make_channel(Settings("hq", "webhook", url="https://hq.example.com/h", secret=SECRET,
                              secrets=[OLD_SECRET])),
        make_channel(Settings("g", "wecom", key="k"), tz=SH),
        make_channel(Settings("d", "dingtalk", key="t", secret="s"), tz=SH),
        make_channel(Settings("f", "feishu", url="http://127.0.0.1:8080/hook"), tz=SH),
        make_channel(Settings("p", "printer", printer={"kind": "file", "path": str(tmp_path / "lp")})),
    ]
    assert [(c.type, c.groups) for c in built] == [
        ("webhook", False), ("wecom", True), ("dingtalk", True), ("feishu", True), ("printer", True)]
    assert isinstance(built[0], WebhookChannel) and len(built[0].secrets) == 2
    assert isinstance(built[3], FeishuChannel) and built[3].url == "http://127.0.0.1:8080/hook"
    with pytest.raises(ValueError, match="needs key"):
        make_channel(Settings("g", "wecom"))
