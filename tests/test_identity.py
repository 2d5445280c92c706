"""Who a webhook comes from: the CloudEvents ``source`` (issue 14, observation 6).

A till named ``收银台 1#A`` used to give ``settleguard://shop/收银台 1#A``: not a URI reference (the
CloudEvents schema refused 90 of 90 deliveries) and, for every all-Chinese shop name, the same ``shop``.
Now the source is built from slugs: configured ``[shop] id`` / ``till_id``, or derived from the names.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.cli import main as cli_main
from agent.config import parse_config
from agent.delivery.channels.base import Notice
from agent.delivery.channels.webhook import WebhookChannel
from agent.identity import SLUG_RE, derive_id, host_name
from agent.service.daemon import Daemon
from agent.sim.sink import WebhookSink
from agent.sim.terminal import PtyTerminal, encode_event
from drivers.clock import SYSTEM_CLOCK
from tests.cloudevents_schema import problems
from tests.helpers import SHANGHAI, sale

DAEMON_CONFIG = """
[shop]
name = "好味道餐饮 静安店"
till = "收银台 1#A"
timezone = "Asia/Shanghai"

[[source]]
name = "terminal"
protocol = "jsonl"
port = "{device}"
baudrate = 115200

[[channel]]
name = "hook"
type = "webhook"
url = "{url}"
"""


def test_a_till_named_in_chinese_delivers_cloudevents_the_schema_accepts(tmp_path: Path) -> None:
    """The issue's till name, through a real daemon on a pty, to a receiver that checks the schema."""
    sink = WebhookSink().start()
    term = PtyTerminal()
    loaded = parse_config(DAEMON_CONFIG.format(device=term.device, url=sink.url))
    daemon = Daemon(loaded, tmp_path, use_scheduler=False)
    daemon.start()
    try:
        first = SYSTEM_CLOCK.now().astimezone(SHANGHAI).replace(microsecond=0) - timedelta(minutes=2)
        for voucher, at in (("000122", first), ("000123", first + timedelta(minutes=1))):
            term.write(encode_event("jsonl", sale(voucher, 12800, at)))
        arrived = sink.wait_for(lambda got: any(r.body["data"]["rule"] == "DUP-001" for r in got), timeout=10)
    finally:
        daemon.stop()
        term.close()
        sink.stop()
    assert sink.invalid == [], sink.invalid[:1]
    assert arrived
    sources = {r.body["source"] for r in sink.received}
    assert sources == {loaded.config.shop.event_source}
    assert all(problems(r.body) == [] for r in sink.received)
    (source,) = sources
    assert source.startswith("settleguard://shop-") and source != "settleguard://shop/till-1"


def test_all_chinese_shop_names_do_not_collapse_into_one_source() -> None:
    names = ["好味道餐饮 静安店", "好味道餐饮 徐汇店", "好味道餐饮 浦东店"]
    sources = {parse_config(f'[shop]\nname = "{n}"\ntill = "t1"\n').config.shop.event_source for n in names}
    assert len(sources) == 3
    # Stable: the derived id is part of a contract with the receivers, so it must not drift between
    # versions. (A change here changes every unconfigured shop's source.)
    assert derive_id("好味道餐饮 静安店", "shop") == "shop-4fd74187"
    assert derive_id("收银台 1#A", "till") == "1-a-be263259"
    assert derive_id("till-1", "till") == "till-1"          # a name that is already a slug stays itself


def test_configured_ids_make_the_source_and_the_names_stay_data() -> None:
    loaded = parse_config('[shop]\nname = "好味道餐饮 静安店"\ntill = "收银台 1#A"\n'
                          'id = "haowei-jingan"\ntill_id = "till-1"\n')
    shop = loaded.config.shop
    assert shop.event_source == "settleguard://haowei-jingan/till-1"
    assert not shop.ids_derived
    assert (shop.name, shop.till) == ("好味道餐饮 静安店", "收银台 1#A")


@pytest.mark.parametrize(("line", "field", "suggestion"), [
    ('id = "好味道 Jing\'an"', "shop.id", "jing-an"),
    ('id = "HaoWei_JingAn"', "shop.id", "haowei-jingan"),
    ('id = "静安店"', "shop.id", "shop-"),
    ('till_id = "收银台 1#A"', "shop.till_id", "1-a"),
    ('till_id = "-till-"', "shop.till_id", "till"),
    (f'id = "{"a" * 64}"', "shop.id", "a" * 63),
])
def test_check_config_refuses_an_id_that_is_not_a_slug_and_suggests_one(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, field: str, suggestion: str) -> None:
    path = tmp_path / "shop.toml"
    path.write_text(f'[shop]\nname = "好味道餐饮 静安店"\ntill = "t1"\n{line}\n', encoding="utf-8")
    assert cli_main(["check-config", str(path)]) == 78
    message = capsys.readouterr().err
    assert f"{path}, line 4: {field}: must be lowercase ASCII letters, digits and '-'" in message
    assert f'try "{suggestion}' in message


def test_check_config_shows_the_source_and_says_when_it_is_derived(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "shop.toml"
    path.write_text('[shop]\nname = "好味道餐饮 静安店"\ntill = "收银台 1#A"\n', encoding="utf-8")
    assert cli_main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    # The till id comes from the host name, not the display name (which repeats in every shop of a chain).
    till = derive_id(host_name(), "till")
    assert 'shop id shop-4fd74187 (derived from [shop] name; set [shop] id = "shop-4fd74187"' in out
    assert f'till id {till} (derived from the host name; set [shop] till_id = "{till}"' in out
    assert f"event source settleguard://shop-4fd74187/{till}\n" in out


def test_check_config_prints_configured_ids_without_a_hint(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "shop.toml"
    path.write_text('[shop]\nname = "好味道餐饮 静安店"\nid = "haowei-jingan"\ntill_id = "till-1"\n', encoding="utf-8")
    assert cli_main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "shop id haowei-jingan\ntill id till-1\nevent source settleguard://haowei-jingan/till-1\n" in out


def test_an_unset_till_id_is_the_host_name_whatever_the_display_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two shops' "收银台 1" on hosts jingan-1 and xuhui-1: two till ids, stable across a rename of the till."""
    monkeypatch.setattr(socket, "gethostname", lambda: "jingan-1")
    first = parse_config('[shop]\nname = "A"\ntill = "收银台 1"\n').config.shop
    renamed = parse_config('[shop]\nname = "A"\ntill = "前台"\n').config.shop
    assert first.till_slug == renamed.till_slug == "jingan-1"
    monkeypatch.setattr(socket, "gethostname", lambda: "Till_02.local")
    other = parse_config('[shop]\nname = "A"\ntill = "收银台 1"\n').config.shop
    assert other.till_slug == derive_id("Till_02.local", "till")


@settings(max_examples=300, deadline=None)
@given(shop=st.text(max_size=40), till=st.text(max_size=40))
def test_any_names_give_a_source_that_is_a_uri_reference(shop: str, till: str) -> None:
    toml = f"[shop]\nname = {json.dumps(shop)}\ntill = {json.dumps(till)}\n"
    try:
        loaded = parse_config(toml)
    except Exception:   # a name TOML cannot carry (a lone surrogate) is not this test's business
        return
    config = loaded.config.shop
    assert SLUG_RE.fullmatch(config.shop_id) and SLUG_RE.fullmatch(config.till_slug)
    event = {"specversion": "1.0", "id": "m1", "type": "settleguard.alert.opened", "source": config.event_source}
    assert problems(event) == []


# -- the suite-wide check bites ---------------------------------------------------------------------


def _notice(source: str) -> Notice:
    alert = {"type": "alert", "id": "01J0", "revision": 1, "rule": "DUP-001", "state": "open"}
    return Notice(kind="opened", alerts=(alert,), shop="x", source=source, created=SYSTEM_CLOCK.now())


def test_the_suite_wide_check_catches_an_invalid_event_a_channel_builds(every_cloudevent_is_valid: list[str]) -> None:
    channel = WebhookChannel("hook", url="http://127.0.0.1:9/hook")
    channel.build_request(_notice("settleguard://shop/收银台 1#A"), "m1", SYSTEM_CLOCK.now())
    assert len(every_cloudevent_is_valid) == 1 and "is not a 'uri-reference'" in every_cloudevent_is_valid[0]
    every_cloudevent_is_valid.clear()   # seen: the point of this test, not a failure of it


def test_a_sink_refuses_an_invalid_cloudevent_with_400(every_cloudevent_is_valid: list[str]) -> None:
    sink = WebhookSink().start()
    body = {"specversion": "1.0", "id": "m1", "type": "t", "source": "settleguard://shop/收银台 1#A",
            "time": "not a time"}
    request = urllib.request.Request(sink.url, data=json.dumps(body).encode(), method="POST",
                                     headers={"content-type": "application/cloudevents+json; charset=utf-8"})
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        refused.value.close()
    finally:
        sink.stop()
    assert refused.value.code == 400 and sink.received == []
    # Recorded before the answer went out, so there is nothing to wait for.
    assert "uri-reference" in sink.invalid[0][1] and "date-time" in sink.invalid[0][1]
    assert len(every_cloudevent_is_valid) == 1
    every_cloudevent_is_valid.clear()
