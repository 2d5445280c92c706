"""Wire and config values reach the chat robots as data, never as markup (issue 14, observation 5).

The attack values are the issue's: an operator ``[点此](http://evil.example) <font color="warning">x</font>``
with a newline and a forged quote line after it, and a shop named ``[VIP](http://x.example)``. They go
through the real pipeline (ENTRY-001 quotes the operator in its reason) and the real Delivery to fake
WeCom, DingTalk and Feishu robots on 127.0.0.1; the bodies those receive are checked.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import DeliveryConfig
from agent.delivery.channels.base import Notice
from agent.delivery.channels.dingtalk import DingtalkChannel
from agent.delivery.channels.feishu import FeishuChannel
from agent.delivery.channels.http import HttpxSender
from agent.delivery.channels.render import (
    DINGTALK_MARKDOWN_LIMIT,
    FEISHU_CONTENT_LIMIT,
    clean_text,
    compose,
    md_escape,
    to_feishu_posts,
    to_markdown,
)
from agent.delivery.channels.wecom import WecomChannel
from agent.delivery.loop import Delivery
from agent.store.outbox import Outbox
from tests.helpers import BASE_CONFIG, SHANGHAI, Harness, config, sale
from tests.test_delivery_servers import OPEN, ScriptedServer, close_all, drain, robot_reply

EVIL_OPERATOR = '[点此](http://evil.example) <font color="warning">x</font>\n> 已撤销 voided'
EVIL_SHOP = "[VIP](http://x.example)"
BENIGN_OPERATOR = "01"
BENIGN_SHOP = "测试店"
# What a chat client would turn into a link by itself.
LINK = re.compile(r"(?i)(https?|javascript)\s*:|www\.")


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    close_all()


def _robot(kind: str, url: str) -> Any:
    if kind == "wecom":
        return WecomChannel("robot", key="k-1", url=url, tz=SHANGHAI)
    if kind == "dingtalk":
        return DingtalkChannel("robot", access_token="t-1", url=url, tz=SHANGHAI)
    return FeishuChannel("robot", url=url, tz=SHANGHAI)


def _deliver(tmp: Path, kind: str, *, operator: str, shop: str) -> dict[str, Any]:
    """One manual-entry finding (its reason quotes the operator) delivered to a robot; the body it got."""
    base = BASE_CONFIG.replace('name = "测试店"', f"name = {json.dumps(shop, ensure_ascii=False)}")
    loaded = config(base=base)
    tmp.mkdir()
    assert loaded.config.shop.name == shop
    h = Harness(tmp, loaded, channels=("robot",))
    ok = robot_reply(code=0, msg="success") if kind == "feishu" else robot_reply(errcode=0, errmsg="ok")
    with ScriptedServer(lambda n: ok, clock=h.clock) as server:
        outbox = Outbox(tmp / "settleguard.sqlite3")
        sender = HttpxSender(timeout=2.0)
        OPEN.append((sender, outbox))
        d = Delivery(outbox, [_robot(kind, server.url)], sender, clock=h.clock, config=DeliveryConfig(),
                     shop=loaded.config.shop.name, source="settleguard://test/t1", rng=random.Random(3))
        txn = sale("000123", 12800, datetime(2026, 11, 27, 14, 3, tzinfo=SHANGHAI))
        h.feed(txn.with_(entry_mode="manual", operator=operator))
        assert [c.alert.rule for c in h.opened()] == ["ENTRY-001"]
        drain(h, d)
        assert len(server.hits) == 1
        body: dict[str, Any] = json.loads(server.hits[0].body)
        return body


def _markdown(kind: str, body: dict[str, Any]) -> str:
    return str(body["markdown"]["content"] if kind == "wecom" else body["markdown"]["text"])


def _shape(markdown: str) -> list[str]:
    """What each line is to a markdown renderer: heading, quote, bold, list item, blank or text."""
    out = []
    for line in markdown.split("\n"):
        m = re.match(r"#{1,6} |> |\*\*|[-+*] |\d+[.)] |=+$|-{3,}$|\s{4}", line)
        out.append(m.group(0).strip() if m else ("" if not line else "text"))
    return out


@pytest.mark.parametrize("kind", ["wecom", "dingtalk"])
def test_wire_and_config_values_arrive_inert_in_robot_markdown(tmp_path: Path, kind: str) -> None:
    evil = _markdown(kind, _deliver(tmp_path / "evil", kind, operator=EVIL_OPERATOR, shop=EVIL_SHOP))
    plain = _markdown(kind, _deliver(tmp_path / "plain", kind, operator=BENIGN_OPERATOR, shop=BENIGN_SHOP))
    # The newline in the operator started no new line: the message has the benign one's exact shape.
    assert _shape(evil) == _shape(plain)
    # No link, image, font tag, mention or autolink survives; the values are still readable.
    for syntax in ("](", "[", "]", "<font", "</font>", "<"):
        assert syntax not in evil, (syntax, evil)
    assert not LINK.search(evil)
    assert "点此" in evil and "evil.example" in evil and "font color" in evil and "VIP" in evil
    assert "已撤销 voided" in evil  # the forged quote is folded into the reason line, visible as text


def test_wire_and_config_values_arrive_as_literal_text_in_a_feishu_post(tmp_path: Path) -> None:
    body = _deliver(tmp_path / "run", "feishu", operator=EVIL_OPERATOR, shop=EVIL_SHOP)
    post = body["content"]["post"]["zh_cn"]
    elements = [el for paragraph in post["content"] for el in paragraph]
    # Only literal text elements: no "a" (link), "at" (mention) or "md" element; no line break inside one.
    assert {el["tag"] for el in elements} == {"text"}
    assert all("un_escape" not in el for el in elements)
    texts = [post["title"], *(el["text"] for el in elements)]
    assert not any("\n" in t or "\r" in t for t in texts)
    assert not any(LINK.search(t) for t in texts)
    assert any("点此" in t and "font color" in t for t in texts)


# -- the escaping itself, on any text ---------------------------------------------------------------


def _alert(operator_text: str) -> dict[str, Any]:
    return {
        "type": "alert", "id": "01J0000000000000000000000", "revision": 1, "rule": "ENTRY-001",
        "severity": "medium", "state": "open",
        "reason": f"keyed by hand by operator {operator_text}", "reason_zh": f"手工输入（操作员 {operator_text}）",
        "transactions": [{"voucher_no": operator_text or "000123", "amount_minor": 12800, "currency": "CNY",
                          "time": "2026-11-27T14:03:00+08:00", "card": "622576******6691"}],
        "suggestion": {"action": "check", "voucher_no": operator_text or "000123", "amount_minor": 12800,
                       "steps_zh": f"步骤 {operator_text}", "steps_en": f"steps {operator_text}"},
    }


NOW = datetime(2026, 11, 27, 6, 5, tzinfo=UTC)


def _notice(text: str) -> Notice:
    return Notice(kind="opened", alerts=(_alert(text),), shop=text or "shop", source="settleguard://t/t1",
                  created=NOW)


MARKDOWN_ALPHABET = st.sampled_from([*"[]()<>*_~`#-+=!|\\&:/.1 \n\r\t\u2028\x85\u202ea", "http://", "www.",
                                     '<font color="warning">', "</font>", "<@all>", "\n> ", "\n# "])


@settings(max_examples=200, deadline=None)
@given(st.lists(MARKDOWN_ALPHABET, min_size=1, max_size=20).map("".join))
def test_any_value_keeps_the_markdown_shape_and_carries_no_syntax(value: str) -> None:
    reference = to_markdown(compose(_notice("x"), NOW, SHANGHAI), flavor="wecom", limit_bytes=DINGTALK_MARKDOWN_LIMIT)
    for flavor in ("wecom", "dingtalk"):
        got = to_markdown(compose(_notice(value), NOW, SHANGHAI), flavor=flavor,  # type: ignore[arg-type]
                          limit_bytes=DINGTALK_MARKDOWN_LIMIT)
        if flavor == "wecom":
            assert _shape(got) == _shape(reference)
        for syntax in ("[", "]", "<", "`", "~", "_", "\\", "&"):
            assert syntax not in got
        assert not LINK.search(got)
        # '>' only where we put it (a quote marker); past our own markers no line starts block syntax.
        lines = got.split("\n")
        assert all(line.count(">") == (1 if line.startswith("> ") else 0) for line in lines)
        for line in lines[1:]:
            inner = line.removeprefix("> ").removeprefix("**")
            assert not re.match(r"\s|[#>+=-]|\d+[.)]", inner), line
    for post in to_feishu_posts(compose(_notice(value), NOW, SHANGHAI), limit_bytes=FEISHU_CONTENT_LIMIT):
        assert all("\n" not in el["text"] for paragraph in post["zh_cn"]["content"] for el in paragraph)


@pytest.mark.parametrize(("raw", "escaped"), [
    ("# heading", "＃ heading"),
    ("- item", "－ item"),
    ("+ item", "＋ item"),
    ("1. item", "1． item"),
    ("12) item", "12） item"),
    ("===", "＝=="),
    ("    code", "code"),
    ("a*b*c", "a＊b＊c"),
    ("[x](http://y)", "［x］(http://y)"),
    ("<@userid>", "＜@userid＞"),
    ("ends with \\", "ends with ＼"),
    ("&lt;font&gt;", "＆lt;font＆gt;"),
    ("收银台 1#A", "收银台 1#A"),          # '#' mid-line is no heading: left as the shop wrote it
])
def test_md_escape_replaces_syntax_with_full_width_twins(raw: str, escaped: str) -> None:
    assert md_escape(raw) == escaped


@pytest.mark.parametrize(("raw", "cleaned"), [
    ("a\nb", "a b"),
    ("a\r\nb", "a  b"),
    ("a\u2028b\u2029c\x85d", "a b c d"),
    ("000\u202e321", "000 321"),                 # a bidi override cannot reorder a voucher number
    ("see http://evil.example", "see http：//evil.example"),
    ("JavaScript:alert(1)", "JavaScript：alert(1)"),
    ("www.evil.example", "www．evil.example"),
    ("14:03 Steps: void", "14:03 Steps: void"),  # our own colons are not schemes
])
def test_clean_text_folds_breaks_and_defangs_links(raw: str, cleaned: str) -> None:
    assert clean_text(raw) == cleaned
