"""``settleguard fleet`` on a real nats-server with JetStream (issue 19): head office's view of the chain.

The messages are published here exactly as a till's nats channel would (tests/fleet_support.py), and the
real installed entry point reads them, as a table and as JSON.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from agent.fleet.stream import Entry
from agent.fleet.view import NO_HEARTBEAT, OK, STALE, UNHEALTHY, build, parse_factor
from tests.fleet_support import alert, heartbeat, now, publish, run_cli
from tests.nats_support import NatsServer


def _chain(url: str) -> datetime:
    """3 tills of 2 shops: hwd/t1 fresh, hwd/t2 silent for an hour (stale), lmk/t1 fresh with dead letters."""
    t = now()
    deadline_b = (t + timedelta(hours=3)).isoformat()
    deadline_c = (t - timedelta(minutes=5)).isoformat()     # passed: shown as overdue
    publish(url, [
        heartbeat("hwd", "t1", t - timedelta(minutes=50), names=("好味道 静安店", "1号收银")),   # older one
        heartbeat("hwd", "t1", t - timedelta(seconds=20), open_alerts=1, names=("好味道 静安店", "1号收银")),
        heartbeat("hwd", "t2", t - timedelta(hours=1), names=("好味道 静安店", "2号收银")),
        heartbeat("lmk", "t1", t - timedelta(seconds=40), dead=2, pending=1, open_alerts=1),
        alert("hwd", "t1", "01JAAA", 1, "open", code="AAAA"),
        alert("hwd", "t1", "01JAAA", 2, "voided", code="AAAA", kind="voided"),     # final: not open
        alert("hwd", "t1", "01JBBB", 1, "open", code="BBBB", deadline=deadline_b, amount=4500),
        alert("lmk", "t1", "01JCCC", 1, "open", code="CCCC", deadline=deadline_c),
        alert("lmk", "t1", "01JCCC", 2, "escalated", code="CCCC", deadline=deadline_c, kind="escalated"),
    ], create=True)
    return t


def test_fleet_shows_three_tills_of_two_shops_with_the_silent_one_stale(nats_server: NatsServer) -> None:
    _chain(nats_server.url)
    got = run_cli("fleet", "--url", nats_server.url, "--json")
    assert got.returncode == 0, got.stderr
    view = json.loads(got.stdout)
    tills = {(t["shop_id"], t["till_id"]): t for t in view["tills"]}
    assert sorted(tills) == [("hwd", "t1"), ("hwd", "t2"), ("lmk", "t1")]
    assert view["summary"] == {"shops": 2, "tills": 3, "stale": 1, "unhealthy": 0, "open_alerts": 2,
                               "dead_letters": 2}
    assert tills[("hwd", "t2")]["status"] == "stale" and tills[("hwd", "t2")]["stale"] is True
    assert tills[("hwd", "t2")]["stale_after_s"] == 180 and tills[("hwd", "t2")]["age_s"] >= 3600
    # The last heartbeat per till, not the first: hwd/t1's older one (50 min ago) would be stale.
    assert tills[("hwd", "t1")]["status"] == "ok" and tills[("hwd", "t1")]["age_s"] < 180
    assert tills[("hwd", "t1")]["shop"] == "好味道 静安店"
    assert tills[("lmk", "t1")]["status"] == "ok"
    # Open alerts by shop, the latest revision of each: A was voided (final), C escalated (still open).
    opened = [(a["shop_id"], a["code"], a["state"], a["revision"]) for a in view["open_alerts"]]
    assert opened == [("hwd", "BBBB", "open", 1), ("lmk", "CCCC", "escalated", 2)]
    by_code = {a["code"]: a for a in view["open_alerts"]}
    assert by_code["BBBB"]["amount_minor"] == 4500 and by_code["BBBB"]["overdue"] is False
    assert by_code["CCCC"]["overdue"] is True and by_code["CCCC"]["deadline"] is not None
    assert view["dead_letters"] == [{"shop_id": "lmk", "till_id": "t1", "dead": 2, "pending": 1,
                                     "oldest_pending": None}]

    table = run_cli("fleet", "--url", nats_server.url)
    assert table.returncode == 0, table.stderr
    out = table.stdout
    stale_row = next(line for line in out.splitlines() if "失联 stale" in line)
    assert "2号收银" in stale_row          # the stale row is hwd/t2's (display name on the row's first line)
    assert out.count("失联 stale") == 1 and out.count("正常 ok") == 2
    assert "BBBB" in out and "CCCC" in out and "AAAA" not in out and "已过期 overdue" in out
    assert "lmk/t1: 2 dead, 1 pending" in out


def test_a_larger_factor_makes_the_same_till_fresh(nats_server: NatsServer) -> None:
    _chain(nats_server.url)
    got = run_cli("fleet", "--url", nats_server.url, "--json", "--stale", "70x")
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["summary"]["stale"] == 0


def test_a_missing_stream_or_server_is_a_clear_error(nats_server: NatsServer) -> None:
    got = run_cli("fleet", "--url", nats_server.url)
    assert got.returncode == 1 and "no stream SETTLEGUARD" in got.stderr
    nats_server.stop()
    got = run_cli("fleet", "--url", nats_server.url, "--timeout", "1")
    assert got.returncode == 1 and "cannot reach NATS" in got.stderr
    bad = run_cli("fleet", "--url", nats_server.url, "--stale", "1x")
    assert bad.returncode == 2 and "--stale" in bad.stderr


def test_token_comes_from_the_environment_never_from_argv(tmp_path) -> None:   # type: ignore[no-untyped-def]
    server = NatsServer(tmp_path / "nats", extra=("--auth", "s3cret-token")).start()
    try:
        publish(server.url, [heartbeat("hwd", "t1", now())], create=True, token="s3cret-token")
        literal = run_cli("fleet", "--url", server.url, "--token", "s3cret-token")
        assert literal.returncode == 1 and "env:NAME" in literal.stderr
        missing = run_cli("fleet", "--url", server.url, "--timeout", "2")
        assert missing.returncode == 1
        by_ref = run_cli("fleet", "--url", server.url, "--json", "--token", "env:HQ_TOKEN",
                         env={"HQ_TOKEN": "s3cret-token"})
        assert by_ref.returncode == 0, by_ref.stderr
        by_default_env = run_cli("fleet", "--url", server.url, "--json", env={"SETTLEGUARD_NATS_TOKEN": "s3cret-token"})
        assert json.loads(by_default_env.stdout)["summary"]["tills"] == 1
    finally:
        server.stop()


# -- the judgements, exactly (no server) ------------------------------------------------------------

def _entry(subject: str, data: dict, seq: int = 1) -> Entry:   # type: ignore[type-arg]
    return Entry(subject, seq, {"data": data})


def test_status_of_each_till_from_its_own_interval() -> None:
    t = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    beats = [_entry(s, e["data"]) for s, _, e in (
        heartbeat("a", "fast", t - timedelta(seconds=61), interval_s=20),      # 3 x 20s = 60s: stale
        heartbeat("a", "slow", t - timedelta(seconds=61), interval_s=300),     # 15 min: fine
        heartbeat("b", "sick", t - timedelta(seconds=5), healthy=False, problems=("终端无数据",)),
    )] + [_entry("settleguard.b.undated.heartbeat", {"interval_s": 60})]
    subjects = {"settleguard.a.fast.heartbeat": 1, "settleguard.c.quiet.alert": 1, "other.subject": 3}
    view = build(t, "S", 3.0, subjects, beats, [])
    status = {(x.shop_id, x.till_id): x.status for x in view.tills}
    assert status == {("a", "fast"): STALE, ("a", "slow"): OK, ("b", "sick"): UNHEALTHY,
                      ("b", "undated"): STALE, ("c", "quiet"): NO_HEARTBEAT}


def test_latest_revision_wins_whatever_the_arrival_order() -> None:
    t = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    rev2 = alert("a", "t1", "X", 2, "dismissed")
    rev1 = alert("a", "t1", "X", 1, "open")
    same_id_other_till = alert("a", "t2", "X", 1, "open")
    view = build(t, "S", 3.0, {}, [], [_entry(rev2[0], rev2[2]["data"], 5), _entry(rev1[0], rev1[2]["data"], 9),
                                       _entry(same_id_other_till[0], same_id_other_till[2]["data"], 10),
                                       Entry("settleguard.a.t1.alert", 11, None)])
    assert [(a.till_id, a.alert["state"]) for a in view.alerts] == [("t2", "open")]
    assert view.skipped == 1


def test_a_chain_alert_no_till_will_close_leaves_the_list_a_day_after_its_deadline() -> None:
    """CHAIN-001 comes from `fleet watch`: no till publishes its end. A till's own alert past its deadline
    stays (the till says when it expired or escalated)."""
    t = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    entries = []
    cases = [("CHAIN-001", t - timedelta(hours=23)), ("CHAIN-001", t - timedelta(hours=25)),
             ("DUP-001", t - timedelta(days=3))]
    for i, (rule, deadline) in enumerate(cases):
        subj, _, event = alert("a", "t1", f"A{i}", 1, "open", deadline=deadline.isoformat())
        event["data"]["rule"] = rule
        entries.append(_entry(subj, event["data"], i + 1))
    view = build(t, "S", 3.0, {}, [], entries)
    assert sorted(a.alert["id"] for a in view.alerts) == ["A0", "A2"]


@pytest.mark.parametrize("text", ["0", "1", "x", "-3x", "abc"])
def test_stale_factor_refuses_nonsense(text: str) -> None:
    with pytest.raises(ValueError, match="--stale"):
        parse_factor(text)


def test_stale_factor_forms() -> None:
    assert parse_factor("3x") == 3.0 and parse_factor("2.5") == 2.5 and parse_factor(" 4X ") == 4.0
