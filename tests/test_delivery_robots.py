"""People channels through Delivery: fake WeCom/DingTalk/Feishu robots on 127.0.0.1, grouping, the printer slip.

The robots answer HTTP 200 with an errcode body even when they throttle or
reject, exactly like the real ones. Everything runs on simulated time; the
servers stamp each request with it, so limits are counted per simulated
minute.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from agent.cli import main as cli_main
from agent.delivery.channels.base import HttpChannel
from agent.delivery.channels.dingtalk import DingtalkChannel
from agent.delivery.channels.feishu import FeishuChannel
from agent.delivery.channels.printer import PrinterChannel
from agent.delivery.channels.wecom import WecomChannel
from agent.delivery.loop import Delivery
from agent.messages import Command
from drivers.pan import contains_full_pan
from drivers.protocols.escpos import EscposDecoder
from tests.helpers import SHANGHAI, Harness, sale
from tests.test_delivery_servers import (
    Hit,
    Reply,
    ScriptedServer,
    close_all,
    drain,
    make_delivery,
    robot_reply,
    states,
)


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    close_all()


def at(hh: int, mm: int, ss: int = 0) -> datetime:
    return datetime(2026, 11, 27, hh, mm, ss, tzinfo=SHANGHAI)


def wecom(server: ScriptedServer) -> HttpChannel:
    return WecomChannel("robot", key="k-123", url=server.url, tz=SHANGHAI)


def dingtalk(server: ScriptedServer) -> HttpChannel:
    return DingtalkChannel("robot", access_token="t-123", url=server.url, secret="SEC0123", tz=SHANGHAI)


def feishu(server: ScriptedServer) -> HttpChannel:
    return FeishuChannel("robot", url=server.url, secret="s3cr3t", tz=SHANGHAI)


ROBOTS: dict[str, tuple[Callable[[ScriptedServer], HttpChannel], Reply]] = {
    "wecom": (wecom, robot_reply(errcode=0, errmsg="ok")),
    "dingtalk": (dingtalk, robot_reply(errcode=0, errmsg="ok")),
    "feishu": (feishu, robot_reply(code=0, msg="success", data={})),
}


def duplicate(h: Harness, voucher: int, when: datetime, card: str = "622576******6691") -> None:
    h.feed(sale(f"{voucher:06d}", 12800, when, card=card),
           sale(f"{voucher + 1:06d}", 12800, when + timedelta(minutes=1), card=card))


def text(hit: Hit) -> str:
    return hit.body.decode("utf-8")


def most_in_any_window(hits: list[Hit], seconds: float) -> int:
    times = sorted(h.at for h in hits if h.at is not None)
    span = timedelta(seconds=seconds)
    return max((sum(1 for t in times[i:] if t - start < span) for i, start in enumerate(times)), default=0)


# -- classification: an error inside a 200 ---------------------------------------------------------

@pytest.mark.parametrize(("robot", "answer", "gap"), [
    ("wecom", robot_reply(errcode=45009, errmsg="api freq out of limit"), 60),
    ("dingtalk", robot_reply(errcode=130101, errmsg="send too fast, exceed 20 times per minute"), 600),
    ("feishu", robot_reply(code=11232, msg="frequency limited psm[lark.oapi.app_platform_runtime]"), 60),
])
def test_a_throttling_robot_is_retried_later_and_not_hammered_meanwhile(
        tmp_path: Path, robot: str, answer: Reply, gap: int) -> None:
    h = Harness(tmp_path, channels=("robot",))
    make, ok = ROBOTS[robot]
    with ScriptedServer(lambda n: answer if n == 1 else ok, clock=h.clock) as server:
        d = make_delivery(tmp_path, h, [make(server)])
        duplicate(h, 122, at(14, 3))
        for _ in range(3):                               # more messages waiting behind the throttled one
            h.clock.advance(1)
            h.pipeline.process([Command("review")])
        drain(h, d)
        assert states(d) == ["sent"] * 4
        first, second = server.hits[0].at, server.hits[1].at
        assert first is not None and second is not None
        assert second - first >= timedelta(seconds=gap)   # nothing at all in between, for any message
        assert len(server.hits) == 5


@pytest.mark.parametrize(("robot", "answer", "code"), [
    ("wecom", robot_reply(errcode=93000, errmsg="invalid webhook url"), "93000"),
    ("dingtalk", robot_reply(errcode=310000, errmsg="sign not match"), "310000"),
    ("dingtalk", robot_reply(errcode=300001, errmsg="token is not exist"), "300001"),
    ("feishu", robot_reply(code=19021, msg="sign match fail or timestamp is not within one hour"), "19021"),
])
def test_a_robot_that_rejects_the_key_or_signature_dead_letters_at_once(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], robot: str, answer: Reply, code: str) -> None:
    h = Harness(tmp_path, channels=("robot",))
    make, _ = ROBOTS[robot]
    with ScriptedServer(lambda n: answer, clock=h.clock) as server:
        d = make_delivery(tmp_path, h, [make(server)])
        duplicate(h, 122, at(14, 3))
        drain(h, d)
        assert len(server.hits) == 1 and states(d) == ["dead"]
        assert code in d.outbox.dead_letters()[0]["last_error"]
        h.journal.close()
        assert cli_main(["alerts", "--state", str(tmp_path)]) == 0
        assert "1 message(s) could not be delivered (dead letters)" in capsys.readouterr().out


# -- throttling below the documented limits ------------------------------------------------------------

@pytest.mark.parametrize(("robot", "messages", "limits"), [
    ("wecom", 45, [(60, 20)]),
    ("dingtalk", 45, [(60, 20)]),
    ("feishu", 130, [(1, 5), (60, 100)]),
])
def test_a_burst_is_spread_below_each_robots_documented_limit_without_counting_as_failures(
        tmp_path: Path, robot: str, messages: int, limits: list[tuple[int, int]]) -> None:
    h = Harness(tmp_path, channels=("robot",))
    make, ok = ROBOTS[robot]
    with ScriptedServer(lambda n: ok, clock=h.clock) as server:
        channel = make(server)
        d = make_delivery(tmp_path, h, [channel])
        assert d.limiters["robot"] is channel.limiter
        duplicate(h, 122, at(14, 3))
        for _ in range(messages - 1):                   # reviews go out one by one: a real burst
            h.clock.advance(1)                   # (a review's message id is to the second)
            h.pipeline.process([Command("review")])
        h.clock.advance(10)
        drain(h, d)
        assert len(server.hits) == messages
        for seconds, documented in limits:
            assert most_in_any_window(server.hits, seconds) < documented
        # Held back by the limiter is not a failure: one attempt per message, no backoff, no error.
        attempts = [r[0] for r in d.outbox.conn.execute("SELECT attempts FROM outbox")]
        assert attempts == [1] * messages and d.failures["robot"] == 0


def test_a_send_the_limiter_would_refuse_is_not_attempted_and_costs_nothing(tmp_path: Path) -> None:
    h = Harness(tmp_path, channels=("robot",))
    with ScriptedServer(lambda n: ROBOTS["wecom"][1], clock=h.clock) as server:
        channel = wecom(server)
        d = make_delivery(tmp_path, h, [channel])
        duplicate(h, 122, at(14, 3))
        for i in range(18):                              # the minute's budget already spent elsewhere
            channel.limiter.record(h.clock.now() - timedelta(seconds=30 - i))
        h.clock.advance(11)
        wait = d.step()
        assert server.hits == [] and 0 < wait <= 30
        row = d.outbox.conn.execute("SELECT attempts, state, last_error FROM outbox").fetchone()
        assert tuple(row) == (0, "pending", None)
        drain(h, d)
        assert len(server.hits) == 1 and states(d) == ["sent"]
        assert d.outbox.conn.execute("SELECT attempts FROM outbox").fetchone()[0] == 1


# -- grouping ---------------------------------------------------------------------------------------------

Grouped = tuple[Harness, ScriptedServer, Delivery]


@pytest.fixture
def grouped(tmp_path: Path) -> Iterator[Grouped]:
    """A WeCom robot behind Delivery, from 14:00; each test feeds its own findings."""
    h = Harness(tmp_path, channels=("robot",), start=at(14, 0))
    with ScriptedServer(lambda n: ROBOTS["wecom"][1], clock=h.clock) as server:
        yield h, server, make_delivery(tmp_path, h, [wecom(server)])


def test_first_findings_wait_group_wait_then_go_out_as_one_digest(grouped: Grouped) -> None:
    h, server, d = grouped
    duplicate(h, 122, at(14, 3))
    opened_at = h.clock.now()
    d.step()
    h.clock.advance(4)
    duplicate(h, 200, h.clock.now() - timedelta(minutes=1), card="436742******1234")
    drain(h, d, until=opened_at + timedelta(seconds=9))
    assert server.hits == []                         # still inside group_wait
    drain(h, d, until=opened_at + timedelta(seconds=30))
    assert len(server.hits) == 1
    assert server.hits[0].at is not None and server.hits[0].at - opened_at < timedelta(seconds=10.5)
    body = text(server.hits[0])
    assert "可疑交易 2 条" in body and "000123" in body and "000201" in body


def test_later_findings_go_out_at_most_once_per_group_interval(grouped: Grouped) -> None:
    h, server, d = grouped
    duplicate(h, 122, at(14, 3))
    drain(h, d)
    first = server.hits[0].at
    assert first is not None
    for i, voucher in enumerate((200, 300, 400)):   # three more findings over the next 40 s
        h.clock.advance(12)
        duplicate(h, voucher, h.clock.now() - timedelta(minutes=1), card=f"43674{i}******1234")
        d.step()
    assert len(server.hits) == 1
    drain(h, d)
    assert len(server.hits) == 2
    second = server.hits[1].at
    assert second is not None and second - first >= timedelta(seconds=60)
    assert "可疑交易 3 条" in text(server.hits[1])


def test_a_review_goes_out_on_its_own_without_waiting_for_the_group(grouped: Grouped) -> None:
    h, server, d = grouped
    duplicate(h, 122, at(14, 3))
    drain(h, d)
    h.clock.advance(5)
    duplicate(h, 200, h.clock.now() - timedelta(minutes=1), card="436742******1234")
    h.pipeline.process([Command("review")])
    d.step()
    assert len(server.hits) == 2 and "结算前复核" in text(server.hits[1])
    assert "可疑交易" not in text(server.hits[1])
    drain(h, d)
    assert len(server.hits) == 3 and "000201" in text(server.hits[2])


def test_an_unacknowledged_alert_repeats_at_repeat_interval_and_never_after_it_resolves(grouped: Grouped) -> None:
    h, server, d = grouped
    duplicate(h, 122, at(14, 3))
    drain(h, d)
    alert = h.opened()[0].alert
    h.clock.advance(timedelta(minutes=20))
    assert h.command("reminders") == {"ok": True, "reminded": 0}
    h.clock.advance(timedelta(minutes=11))                      # 31 min after the alert: one reminder
    h.pipeline.process([Command("reminders")])
    drain(h, d)
    assert len(server.hits) == 2 and "提醒：23:00 前撤销" in text(server.hits[1])
    h.pipeline.process([Command("ack", {"id": alert.id, "answer": "voided", "by": "店长"})])
    drain(h, d)
    # The answer is announced naming who gave it (no terminal line in this shop: the word is the void).
    assert len(server.hits) == 3 and "店长 已撤销" in text(server.hits[2])
    h.clock.advance(timedelta(hours=2))
    h.pipeline.process([Command("reminders")])
    drain(h, d)
    assert len(server.hits) == 3                     # resolved: no more reminders, no second resolution


def test_a_reminder_still_pending_when_the_alert_resolves_is_superseded_not_sent(grouped: Grouped) -> None:
    h, server, d = grouped
    duplicate(h, 122, at(14, 3))
    drain(h, d)
    alert = h.opened()[0].alert
    h.clock.advance(timedelta(minutes=31))
    h.pipeline.process([Command("reminders")])
    h.clock.advance(20)                      # inside group_interval: the reminder waits ...
    h.pipeline.process([Command("ack", {"id": alert.id, "answer": "voided"})])
    drain(h, d)                                      # ... and the void overtakes it
    kinds = [r[0] for r in d.outbox.conn.execute("SELECT kind || ':' || state FROM outbox ORDER BY id")]
    assert kinds == ["opened:sent", "reminder:superseded", "voided:sent"]
    assert len(server.hits) == 2 and "提醒" not in text(server.hits[1]) and "已撤销" in text(server.hits[1])


def test_a_finding_voided_before_it_went_out_is_announced_once_as_resolved(grouped: Grouped) -> None:
    h, server, d = grouped
    duplicate(h, 122, at(14, 3))                     # the second charge opens a finding ...
    duplicate(h, 200, at(14, 3, 30), card="436742******1234")
    h.feed(sale("000124", 12800, at(14, 4, 5), kind="void", original="000123"))  # ... voided at once
    drain(h, d)
    kinds = [r[0] for r in d.outbox.conn.execute("SELECT kind || ':' || state FROM outbox ORDER BY id")]
    assert kinds == ["opened:superseded", "opened:sent", "voided:sent"]
    assert len(server.hits) == 2                     # findings first, resolutions in their own message
    assert "000201" in text(server.hits[0]) and "000123" not in text(server.hits[0])
    assert "已撤销" in text(server.hits[1]) and "000123" in text(server.hits[1])


# -- the printer slip --------------------------------------------------------------------------------------

def test_an_alert_prints_a_slip_the_escpos_decoder_reads_back(tmp_path: Path) -> None:
    h = Harness(tmp_path, channels=("slip",))
    paper = tmp_path / "printer.bin"
    paper.touch()
    printer = PrinterChannel("slip", printer={"kind": "file", "path": str(paper)}, tz=SHANGHAI)
    d = make_delivery(tmp_path, h, [printer])
    h.feed(sale("000122", 12800, at(14, 3), card="622576******6691"),
           sale("000123", 12800, at(14, 4), card="622576******6691"))
    alert = h.opened()[0].alert
    drain(h, d)
    h.pipeline.process([Command("ack", {"id": alert.id, "answer": "voided"})])
    drain(h, d)                                          # a resolution needs nothing at the till
    assert states(d) == ["sent", "sent"]
    data = paper.read_bytes()
    decoder = EscposDecoder(tz=SHANGHAI, reference=h.clock.now())
    receipts = decoder.feed(data) + decoder.flush()
    assert len(receipts) == 1
    lines = [line.strip() for line in receipts[0].lines]  # type: ignore[union-attr]
    assert lines[0] == "!! 请撤销"
    assert lines[1].startswith("23:00 前撤销 RMB 128.00（") and lines[1].endswith("凭证号 000123）")
    assert "卡号 622576******6691" in lines
    assert not contains_full_pan(data.decode("gb18030", errors="replace"))
