"""``settleguard fleet watch``: CHAIN-001, the same card charged the same amount at two tills of the chain
within a window, computed by a durable consumer on a real nats-server and published back as alerts."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from agent.fleet.chain import RULE, ChainWindow, Seen, alert_events, charge
from tests.fleet_support import heartbeat, now, publish, run_cli, sale, stored
from tests.nats_support import NatsServer

WINDOW = timedelta(minutes=10)


def _seen(shop: str, till: str, voucher: str, when: datetime, **kw) -> Seen:   # type: ignore[no-untyped-def]
    subj, _, event = sale(shop, till, voucher, when, **kw)
    got = charge(subj, event)
    assert got is not None
    return got


# -- the rule, exactly (no server) ---------------------------------------------------------------------

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def test_same_card_same_amount_at_two_tills_within_the_window_is_one_finding() -> None:
    w = ChainWindow(WINDOW)
    assert w.add(_seen("hwd", "t1", "000001", T0)) == []
    found = w.add(_seen("lmk", "t1", "000077", T0 + timedelta(minutes=4)))
    assert [(f.first.till, f.second.till) for f in found] == [(("hwd", "t1"), ("lmk", "t1"))]
    # A 6+4 mask at one till and a last-4 mask at the other can be the same card.
    w2 = ChainWindow(WINDOW)
    w2.add(_seen("hwd", "t1", "000001", T0, card="622576******6691"))
    assert len(w2.add(_seen("hwd", "t2", "000002", T0 + timedelta(minutes=1), card="************6691"))) == 1


def test_two_terminals_with_clocks_off_are_judged_on_when_their_tills_received_the_charges() -> None:
    """One terminal 40 minutes slow, the other right: the charges reached their tills 2 minutes apart, so
    they are one customer charged twice, whatever the terminals printed. A CloudEvent without a usable
    time falls back to the terminal's."""
    subj, _, slow = sale("hwd", "t1", "000001", T0 - timedelta(minutes=40))
    slow["time"] = T0.isoformat()                       # received now, by the till's own clock
    w = ChainWindow(WINDOW)
    first = charge(subj, slow)
    assert first is not None and first.time == T0
    w.add(first)
    assert len(w.add(_seen("lmk", "t1", "000077", T0 + timedelta(minutes=2)))) == 1
    subj, _, no_time = sale("hwd", "t2", "000002", T0 + timedelta(minutes=5))
    no_time["time"] = "not a time"
    got = charge(subj, no_time)
    assert got is not None and got.time == T0 + timedelta(minutes=5)


def test_not_within_one_till_not_outside_the_window_not_another_amount_or_card() -> None:
    w = ChainWindow(WINDOW)
    w.add(_seen("hwd", "t1", "000001", T0))
    assert w.add(_seen("hwd", "t1", "000002", T0 + timedelta(minutes=1))) == []          # the till's own DUP
    assert w.add(_seen("lmk", "t1", "000003", T0 + timedelta(minutes=12))) == []         # 11 min after the last
    assert w.add(_seen("lmk", "t2", "000004", T0 + timedelta(minutes=2), amount=3801)) == []
    assert w.add(_seen("lmk", "t3", "000005", T0 + timedelta(minutes=2), card="622576******6692")) == []
    refund = sale("lmk", "t4", "000006", T0 + timedelta(minutes=2), kind="refund")
    assert charge(refund[0], refund[2]) is None                                            # money back is no charge
    # A third till pairs with each same-card charge of other tills within 10 min (hwd/t1's two, lmk/t1's
    # at 12:12); redelivery of a message already judged is not a second finding.
    again = _seen("lmk", "t9", "000009", T0 + timedelta(minutes=3))
    found = w.add(again)
    assert sorted(f.first.data["voucher_no"] + "+" + f.second.data["voucher_no"] for f in found) == [
        "000001+000009", "000002+000009", "000009+000003"]
    assert w.add(again) == []


def test_memory_is_bounded_by_the_window() -> None:
    w = ChainWindow(WINDOW, late=timedelta(minutes=5))
    for i in range(2000):   # one charge a minute for 33 hours
        w.add(_seen("hwd", f"t{i % 3}", f"{i:06d}", T0 + timedelta(minutes=i), amount=100 + i))
    assert len(w) <= 16     # window 10 min + late 5 min at one a minute


def test_the_alert_is_shaped_like_the_alert_json_with_both_transactions_and_stable_ids() -> None:
    w = ChainWindow(WINDOW)
    w.add(_seen("hwd", "t1", "000001", T0))
    (finding,) = w.add(_seen("lmk", "t1", "000077", T0 + timedelta(seconds=200)))
    cutoff = "2026-11-30T23:00:00+08:00"
    events = alert_events(finding, T0, {("hwd", "t1"): cutoff}, WINDOW)
    assert [e[0] for e in events] == ["settleguard.hwd.t1.alert", "settleguard.lmk.t1.alert"]
    mine = events[0][2]
    assert mine["type"] == "settleguard.alert.opened" and mine["source"] == "settleguard://hwd/t1"
    data = mine["data"]
    assert set(data) == {"type", "id", "code", "revision", "rule", "rule_version", "severity", "certainty",
                         "state", "reason", "reason_zh", "evidence", "transactions", "suggestion", "created", "updated",
                         "answer"}
    assert data["rule"] == RULE and data["state"] == "open" and data["certainty"] == "verify"
    assert [t["voucher_no"] for t in data["transactions"]] == ["000001", "000077"]
    assert data["suggestion"]["deadline"] == cutoff and events[1][2]["data"]["suggestion"]["deadline"] is None
    assert "lmk/t1" in data["reason_zh"] and "3 分 20 秒" in data["reason_zh"]
    # Deterministic: the same finding later gives the same message ids and alert ids.
    later = alert_events(finding, T0 + timedelta(hours=2), {}, WINDOW)
    assert [e[1] for e in later] == [e[1] for e in events]
    assert [e[2]["data"]["id"] for e in later] == [e[2]["data"]["id"] for e in events]
    assert events[0][2]["data"]["id"] != events[1][2]["data"]["id"]


# -- on the real server, through the real entry point ----------------------------------------------------

def _shop_day(url: str) -> datetime:
    t = now() - timedelta(minutes=30)
    publish(url, [
        heartbeat("hwd", "t1", now(), next_cutoff="2026-12-01T23:00:00+08:00"),
        sale("hwd", "t1", "000001", t),                                                   # the pair: ...
        sale("lmk", "t1", "000077", t + timedelta(minutes=3)),                            # ... another shop
        sale("hwd", "t2", "000010", t, amount=990),                                       # one till twice:
        sale("hwd", "t2", "000011", t + timedelta(minutes=1), amount=990),                # its own DUP's job
        sale("hwd", "t1", "000020", t, amount=5000, card="622576******1111"),             # 20 min apart
        sale("lmk", "t1", "000021", t + timedelta(minutes=20), amount=5000, card="622576******1111"),
        sale("hwd", "t2", "000030", t, amount=2000, card="622576******2222"),             # other amount
        sale("lmk", "t1", "000031", t + timedelta(minutes=1), amount=2001, card="622576******2222"),
    ], create=True)
    return t


def test_watch_finds_the_cross_till_pair_and_publishes_it_back_as_alerts(nats_server: NatsServer) -> None:
    _shop_day(nats_server.url)
    got = run_cli("fleet", "watch", "--url", nats_server.url, "--window", "10m", "--once")
    assert got.returncode == 0, got.stderr
    assert "read 8 transaction message(s), 1 finding(s), 2 alert(s) published" in got.stderr
    alerts = stored(nats_server.url, "settleguard.*.*.alert")
    assert [s for s, _, _ in alerts] == ["settleguard.hwd.t1.alert", "settleguard.lmk.t1.alert"]
    for _, event, headers in alerts:
        assert headers["Nats-Msg-Id"] == event["id"]
        assert event["data"]["rule"] == "CHAIN-001"
        assert [t["voucher_no"] for t in event["data"]["transactions"]] == ["000001", "000077"]
    assert alerts[0][1]["data"]["suggestion"]["deadline"] == "2026-12-01T23:00:00+08:00"
    # Head office's view shows them as open alerts of both tills.
    view = json.loads(run_cli("fleet", "--url", nats_server.url, "--json").stdout)
    assert sorted((a["shop_id"], a["till_id"], a["rule"]) for a in view["open_alerts"]) == [
        ("hwd", "t1", "CHAIN-001"), ("lmk", "t1", "CHAIN-001")]


def test_a_restarted_watcher_does_not_publish_again(nats_server: NatsServer) -> None:
    t = _shop_day(nats_server.url)
    assert run_cli("fleet", "watch", "--url", nats_server.url, "--once").returncode == 0
    first = stored(nats_server.url, "settleguard.*.*.alert")
    # Resumed: the durable consumer starts after what it acknowledged.
    again = run_cli("fleet", "watch", "--url", nats_server.url, "--once")
    assert again.returncode == 0 and "read 0 transaction message(s)" in again.stderr
    # A watcher that lost its place (a new durable) judges everything again: the server drops the repeats.
    lost = run_cli("fleet", "watch", "--url", nats_server.url, "--once", "--durable", "other")
    assert "1 finding(s), 0 alert(s) published, 2 already in the stream" in lost.stderr
    assert stored(nats_server.url, "settleguard.*.*.alert") == first
    # A pair split across a restart is still found: the window is warmed from what was judged before.
    publish(nats_server.url, [sale("lmk", "t2", "000099", t + timedelta(minutes=25), amount=5000,
                                   card="622576******1111")])
    split = run_cli("fleet", "watch", "--url", nats_server.url, "--once")
    assert "read 1 transaction message(s), 1 finding(s), 2 alert(s) published" in split.stderr, split.stderr
    pairs = {(s, e["data"]["transactions"][0]["voucher_no"], e["data"]["transactions"][1]["voucher_no"])
             for s, e, _ in stored(nats_server.url, "settleguard.*.*.alert")[2:]}
    assert pairs == {("settleguard.lmk.t1.alert", "000021", "000099"), ("settleguard.lmk.t2.alert", "000021", "000099")}


def test_watch_says_so_when_the_stream_is_missing(nats_server: NatsServer) -> None:
    got = run_cli("fleet", "watch", "--url", nats_server.url, "--once")
    assert got.returncode == 1 and "no stream SETTLEGUARD" in got.stderr


def test_watch_runs_until_signalled_and_judges_what_arrives_meanwhile(nats_server: NatsServer) -> None:
    import signal
    import subprocess

    from tests.fleet_support import ENTRY
    from tests.helpers import wait_until

    publish(nats_server.url, [heartbeat("hwd", "t1", now())], create=True)
    proc = subprocess.Popen([ENTRY, "fleet", "watch", "--url", nats_server.url], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        t = now()
        publish(nats_server.url, [sale("hwd", "t1", "000001", t),
                                  sale("lmk", "t1", "000002", t + timedelta(minutes=2))])
        wait_until(lambda: len(stored(nats_server.url, "settleguard.*.*.alert")) == 2, "two CHAIN-001 alerts",
                   timeout=30, pace=0.2)
        proc.send_signal(signal.SIGTERM)
        out, errors = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, errors
    assert "CHAIN-001 622576******6691 RMB 38.00: hwd/t1" in out
    assert "1 finding(s), 2 alert(s) published" in errors


def test_connection_options_may_come_before_or_after_watch() -> None:
    from agent.cli import build_parser

    parser = build_parser()
    before = parser.parse_args(["fleet", "--url", "nats://hq:4222", "--stream", "S2", "watch", "--once"])
    after = parser.parse_args(["fleet", "watch", "--url", "nats://hq:4222", "--stream", "S2", "--once"])
    for args in (before, after):
        assert (args.url, args.stream, args.once, args.func.__name__) == ("nats://hq:4222", "S2", True, "cmd_watch")
