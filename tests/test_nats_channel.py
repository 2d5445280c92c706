"""The nats channel against a real nats-server with JetStream (issue 19): the stream is read back with nats-py.

Simulated time drives the delivery loop (backoff is jumped, never slept); the NATS client and server run on
real time, so the tests wait for conditions (wait_until), never for fixed durations.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from agent.alerts.lifecycle import NoticeKind
from agent.config import DeliveryConfig, parse_config
from agent.delivery.channels.base import Notice
from agent.delivery.channels.factory import build_channels, event_routing, routing
from agent.delivery.channels.nats import NatsAuth, NatsChannel, StreamLimits
from agent.delivery.loop import Delivery
from agent.sim.terminal import PtyTerminal
from agent.store.outbox import Outbox
from tests.helpers import BASE_CONFIG, SHANGHAI, Harness, daemon_on_pty, sale, sale_line, wait_until
from tests.nats_support import NatsServer

REPO = Path(__file__).resolve().parent.parent


def at(hh: int, mm: int, ss: int = 0) -> datetime:
    return datetime(2026, 11, 27, hh, mm, ss, tzinfo=SHANGHAI)


@dataclass
class Stored:
    seq: int
    subject: str
    msg_id: str | None
    event: dict[str, Any]


def read_stream(url: str, stream: str = "SETTLEGUARD", **auth: Any) -> list[Stored]:
    """Every message in the stream, in stream order, read with nats-py as a head office would."""
    import nats

    async def read() -> list[Stored]:
        nc = await nats.connect(url, **auth)
        try:
            js = nc.jetstream()
            info = await js.stream_info(stream)
            out = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1) if info.state.messages else ():
                msg = await js.get_msg(stream, seq)
                out.append(Stored(seq, msg.subject or "", (msg.headers or {}).get("Nats-Msg-Id"),
                                  json.loads(msg.data or b"null")))
            return out
        finally:
            await nc.close()

    return asyncio.run(read())


def nats_config(url: str, extra: str = "") -> str:
    return f'\n[[channel]]\nname = "hq"\ntype = "nats"\nurl = "{url}"\ncreate_stream = true\n{extra}'


def make(tmp_path: Path, url: str, extra: str = "") -> tuple[Harness, Delivery, NatsChannel]:
    """A pipeline and a delivery loop wired as the daemon wires them, from a real [[channel]] type = "nats"."""
    loaded = parse_config(BASE_CONFIG + nats_config(url, extra), "<test>")
    channels = build_channels(loaded.config, tz=loaded.tz)
    primary, people = routing(loaded.config, channels)
    h = Harness(tmp_path, loaded, channels=tuple(primary))
    h.pipeline.announcer.route(None, people, event_routing(loaded.config, channels))
    d = Delivery(Outbox(tmp_path / "settleguard.sqlite3"), channels, sender=None,  # type: ignore[arg-type]
                 clock=h.clock, config=DeliveryConfig(), shop=loaded.config.shop.name,
                 source=loaded.config.shop.event_source, rng=random.Random(1))
    channel = channels[0]
    assert isinstance(channel, NatsChannel)
    return h, d, channel


def drain(h: Harness, d: Delivery, *, timeout: float = 20.0) -> None:
    """Delivery steps until nothing is pending, jumping simulated time over backoff (the NATS client
    reconnects on real time, so this waits for a condition, bounded)."""
    def done() -> bool:
        wait = d.step()
        if d.outbox.next_due() is None:
            return True
        h.clock.advance(max(wait, 0.001))   # the head row's retry time: later rows wait behind it
        return False

    wait_until(done, "the outbox to drain to the stream", timeout=timeout, pace=0.01,
               detail=lambda: (d.outbox.pending("hq")[:1], d.failures, h.clock.now()))


def two_duplicates_and_a_void(h: Harness) -> None:
    """Two duplicate pairs (two DUP alerts), then the second charge of the first pair voided: a new revision."""
    h.feed(sale("000122", 12800, at(14, 3)), sale("000123", 12800, at(14, 4)))
    h.feed(sale("000200", 5000, at(15, 0), card="436742******1234"),
           sale("000201", 5000, at(15, 1), card="436742******1234"))
    h.feed(sale("000300", 12800, at(15, 10), kind="void", original="000123"))


def alert_revisions(h: Harness) -> list[str]:
    return [f"{c.alert.id}.{c.alert.revision}" for c in h.changes if hasattr(c, "alert")]


def test_each_alert_revision_arrives_once_as_a_cloudevent_on_its_subject(tmp_path: Path,
                                                                        nats_server: NatsServer) -> None:
    h, d, channel = make(tmp_path, nats_server.url)
    try:
        two_duplicates_and_a_void(h)
        expected = alert_revisions(h)
        assert len(expected) >= 3 and len(set(expected)) == len(expected)   # 2 opened + 1 resolved at least
        drain(h, d)
        drain(h, d)   # nothing more: a second pass sends nothing again
        stored = read_stream(nats_server.url)
        shop = h.pipeline.config.shop
        assert [s.msg_id for s in stored] == expected
        assert {s.subject for s in stored} == {f"settleguard.{shop.shop_id}.{shop.till_slug}.alert"}
        for s in stored:
            assert s.event["id"] == s.msg_id and s.event["specversion"] == "1.0"
            assert s.event["source"] == shop.event_source
            assert s.event["type"].startswith("settleguard.alert.")
            assert s.event["data"]["id"] + "." + str(s.event["data"]["revision"]) == s.msg_id
        assert d.outbox.outbox_stats(h.clock.now())["pending"] == 0
    finally:
        channel.close()


KILLED_CHILD = textwrap.dedent("""
    # Delivers the outbox to NATS and is killed (SIGKILL, by itself: deterministic) right after the
    # server acknowledged message number KILL_AT, before the outbox row is marked sent.
    import os, random, signal, sys
    from datetime import datetime
    from agent.config import DeliveryConfig
    from agent.delivery.channels.nats import NatsChannel, StreamLimits
    from agent.delivery.loop import Delivery
    from agent.store.outbox import Outbox
    from drivers.clock import ManualClock

    url, journal, kill_at, now = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]

    class KilledAfterAck(NatsChannel):
        sent = 0
        def send(self, notice, **kw):
            outcome = super().send(notice, **kw)
            assert outcome.status == "ok", outcome
            KilledAfterAck.sent += 1
            if KilledAfterAck.sent == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return outcome

    channel = KilledAfterAck("hq", servers=[url], stream=StreamLimits(create=True), timeout=5.0)
    d = Delivery(Outbox(journal), [channel], None, clock=ManualClock(datetime.fromisoformat(now)),
                 config=DeliveryConfig(), shop="s", source=sys.argv[5], rng=random.Random(1))
    while True:
        d.step()
""")


def test_kill_9_between_the_ack_and_the_outbox_mark_leaves_one_copy_of_each(tmp_path: Path,
                                                                             nats_server: NatsServer) -> None:
    h, d, channel = make(tmp_path, nats_server.url)
    try:
        two_duplicates_and_a_void(h)
        expected = alert_revisions(h)
        script = tmp_path / "killed.py"
        script.write_text(KILLED_CHILD)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        child = subprocess.run([sys.executable, str(script), nats_server.url, str(tmp_path / "settleguard.sqlite3"),
                                "2", h.clock.now().isoformat(), h.pipeline.config.shop.event_source],
                               cwd=REPO, env=env, timeout=60, capture_output=True)
        assert child.returncode == -9, child.stderr.decode()[-2000:]
        # The second message is in the stream, but the journal still says it is being sent.
        assert [s.msg_id for s in read_stream(nats_server.url)] == expected[:2]
        stats = d.outbox.outbox_stats(h.clock.now())
        assert stats["pending"] == len(expected) - 1   # 'sending' counts as not delivered yet

        # The restart: recover() puts the interrupted row back, and it is sent again.
        assert d.outbox.recover() == 1
        drain(h, d)
        stored = read_stream(nats_server.url)
        assert [s.msg_id for s in stored] == expected    # each exactly once: the server dropped the re-send
        assert [s.seq for s in stored] == list(range(1, len(expected) + 1))
    finally:
        channel.close()


def test_server_down_for_a_while_then_back_loses_nothing_and_keeps_order(tmp_path: Path,
                                                                         nats_server: NatsServer) -> None:
    h, d, channel = make(tmp_path, nats_server.url)
    try:
        h.feed(sale("000122", 12800, at(14, 3)), sale("000123", 12800, at(14, 4)))
        drain(h, d)
        nats_server.stop()
        h.feed(sale("000200", 5000, at(15, 0), card="436742******1234"),
               sale("000201", 5000, at(15, 1), card="436742******1234"))
        h.feed(sale("000300", 12800, at(15, 10), kind="void", original="000123"))
        for _ in range(5):   # attempts while the server is away: each a quick retry, none lost
            h.clock.advance(max(d.step(), 0.001))
        failures = d.failures["hq"]
        assert failures >= 1
        assert d.outbox.outbox_stats(h.clock.now())["pending"] >= 2
        nats_server.start()
        drain(h, d)
        stored = read_stream(nats_server.url)
        assert [s.msg_id for s in stored] == alert_revisions(h)   # everything, once, in the till's order
    finally:
        channel.close()


def test_a_server_never_reached_is_a_quick_retry_not_a_dead_letter(tmp_path: Path) -> None:
    from tests.nats_support import free_port

    port = free_port()
    channel = NatsChannel("hq", servers=[f"nats://bob:s3cret@127.0.0.1:{port}"], timeout=2.0)
    try:
        outcome = channel.send(heartbeat(), message_id="heartbeat.x", now=at(14, 0), sender=None)  # type: ignore[arg-type]
        assert outcome.status == "retry", outcome
        # Said as what it is (nothing answers there), not as a slow stream, and without the password.
        assert "PubAck" not in outcome.reason and f"127.0.0.1:{port}" in outcome.reason, outcome
        assert "s3cret" not in outcome.reason
    finally:
        channel.close()


def heartbeat() -> Notice:
    return Notice(kind=NoticeKind.HEARTBEAT, alerts=(), shop="测试店", source="settleguard://shop-a/till-1",
                  created=at(14, 0), data={"shop_id": "shop-a", "till_id": "till-1"})


@pytest.mark.parametrize("mode", ["user", "token"])
def test_a_server_with_auth_accepts_the_right_credentials_and_the_wrong_ones_are_said_clearly(
        tmp_path: Path, mode: str) -> None:
    extra = ("--user", "till", "--pass", "s3cret") if mode == "user" else ("--auth", "s3cret")
    server = NatsServer(tmp_path / "nats", extra=extra).start()
    right = NatsAuth(user="till", password="s3cret") if mode == "user" else NatsAuth(token="s3cret")
    wrong = NatsAuth(user="till", password="nope") if mode == "user" else NatsAuth(token="nope")
    good = NatsChannel("hq", servers=[server.url], auth=right, stream=StreamLimits(create=True), timeout=3.0)
    bad = NatsChannel("hq", servers=[server.url], auth=wrong, stream=StreamLimits(create=True), timeout=3.0)
    try:
        refused = bad.send(heartbeat(), message_id="heartbeat.1", now=at(14, 0), sender=None)  # type: ignore[arg-type]
        assert refused.status == "retry"   # fixed by a person; the backlog then flows (see nats.py)
        assert "authorization refused" in refused.reason and "拒绝登录" in refused.reason
        assert "s3cret" not in refused.reason and "nope" not in refused.reason
        ok = good.send(heartbeat(), message_id="heartbeat.1", now=at(14, 0), sender=None)  # type: ignore[arg-type]
        assert ok.status == "ok", ok
        creds = {"user": "till", "password": "s3cret"} if mode == "user" else {"token": "s3cret"}
        assert [s.subject for s in read_stream(server.url, **creds)] == ["settleguard.shop-a.till-1.heartbeat"]
    finally:
        good.close()
        bad.close()
        server.stop()


def test_secrets_come_from_env_as_for_every_channel(tmp_path: Path, nats_server: NatsServer,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = parse_config(BASE_CONFIG + nats_config(nats_server.url, 'token = "env:SG_NATS_TOKEN"'), "<test>")
    with pytest.raises(Exception, match="SG_NATS_TOKEN"):
        build_channels(loaded.config)
    monkeypatch.setenv("SG_NATS_TOKEN", "from-env")
    (channel,) = build_channels(loaded.config)
    assert isinstance(channel, NatsChannel) and channel.auth.token == "from-env"
    assert build_channels(loaded.config, sending=False)[0].auth.token == "replay-sends-nothing"  # type: ignore[attr-defined]


def test_events_on_a_transaction_arrives_on_its_subject_with_the_masked_card_only(tmp_path: Path,
                                                                                  nats_server: NatsServer) -> None:
    h, d, channel = make(tmp_path, nats_server.url, "events = true")
    try:
        h.feed(sale("000122", 12800, at(14, 3), card="622576******6691"))
        h.feed(sale("000122", 12800, at(14, 3), card="622576******6691"))   # the same charge again: one event
        drain(h, d)
        stored = read_stream(nats_server.url)
        shop = h.pipeline.config.shop
        (txn,) = stored
        assert txn.subject == f"settleguard.{shop.shop_id}.{shop.till_slug}.transaction"
        assert txn.event["type"] == "settleguard.transaction"
        assert txn.event["data"]["card"] == "622576******6691"
        assert txn.event["data"]["amount_minor"] == 12800
        assert txn.msg_id == txn.event["id"] and shop.shop_id in (txn.msg_id or "")
        raw = json.dumps(txn.event)
        assert re.fullmatch(r"\d{6}\*{6}\d{4}", txn.event["data"]["card"])
        assert re.search(r"622576\d{6}", raw) is None   # no digits in the masked middle, anywhere
    finally:
        channel.close()


def test_an_event_is_stamped_when_the_till_received_it_not_when_a_backlog_was_worked_off(
        tmp_path: Path, nats_server: NatsServer) -> None:
    """CHAIN-001 compares tills on the CloudEvent's time: a read processed an hour late (a spool read at start,
    a journal stall) keeps the time it was received."""
    from datetime import timedelta

    from agent.messages import EventBatch

    h, d, channel = make(tmp_path, nats_server.url, "events = true")
    try:
        h.clock.set(at(15, 3))
        read = EventBatch("terminal", (sale("000122", 12800, at(14, 3)),), at(14, 3) + timedelta(seconds=2))
        h.pipeline.process([read])
        drain(h, d)
        (txn,) = read_stream(nats_server.url)
        assert datetime.fromisoformat(txn.event["time"]) == at(14, 3) + timedelta(seconds=2)
    finally:
        channel.close()


def test_events_off_sends_no_transaction(tmp_path: Path, nats_server: NatsServer) -> None:
    h, d, channel = make(tmp_path, nats_server.url)
    try:
        h.feed(sale("000122", 12800, at(14, 3)), sale("000123", 12800, at(14, 4)))
        drain(h, d)
        assert {s.subject.rsplit(".", 1)[1] for s in read_stream(nats_server.url)} == {"alert"}
    finally:
        channel.close()


def test_the_daemon_routes_events_to_a_channel_with_events_on(tmp_path: Path, nats_server: NatsServer) -> None:
    term = PtyTerminal()
    daemon = daemon_on_pty(tmp_path, term, nats_config(nats_server.url, "events = true"))
    try:
        term.write(sale_line("000001"))

        def arrived() -> bool:
            try:
                return any(s.subject.endswith(".transaction") for s in read_stream(nats_server.url))
            except Exception:   # the stream is created at the first send
                return False

        wait_until(arrived, "the transaction in the stream", timeout=20.0, pace=0.2)
    finally:
        daemon.stop()
        term.close()


def test_an_nkey_user_logs_in_with_its_seed_and_a_wrong_seed_is_refused(tmp_path: Path) -> None:
    import nkeys

    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER).decode()
    public = nkeys.from_seed(bytearray(seed.encode())).public_key.decode()
    other = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER).decode()
    conf = tmp_path / "nkey.conf"
    conf.write_text(f'authorization {{ users = [ {{ nkey: "{public}" }} ] }}\n')
    server = NatsServer(tmp_path / "nats", extra=("-c", str(conf))).start()
    good = NatsChannel("hq", servers=[server.url], auth=NatsAuth(nkey_seed=seed), stream=StreamLimits(create=True),
                       timeout=3.0)
    bad = NatsChannel("hq", servers=[server.url], auth=NatsAuth(nkey_seed=other), timeout=3.0)
    try:
        assert good.send(heartbeat(), message_id="heartbeat.1", now=at(14, 0), sender=None).status == "ok"  # type: ignore[arg-type]
        refused = bad.send(heartbeat(), message_id="heartbeat.2", now=at(14, 0), sender=None)  # type: ignore[arg-type]
        assert refused.status == "retry" and "authorization refused" in refused.reason
        assert other not in refused.reason
    finally:
        good.close()
        bad.close()
        server.stop()


def test_tls_with_the_servers_ca_is_accepted_and_an_unknown_ca_is_refused(tmp_path: Path) -> None:
    import shutil

    openssl = shutil.which("openssl")
    assert openssl is not None, "this test makes a certificate with openssl: sudo apt-get install -y openssl"
    for name in ("server", "other"):
        subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-keyout", str(tmp_path / f"{name}.key"), "-out", str(tmp_path / f"{name}.pem"),
                        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                       check=True, capture_output=True, timeout=60)
    server = NatsServer(tmp_path / "nats", extra=("--tls", "--tlscert", str(tmp_path / "server.pem"),
                                                   "--tlskey", str(tmp_path / "server.key"))).start()
    url = server.url.replace("nats://", "tls://")
    good = NatsChannel("hq", servers=[url], auth=NatsAuth(tls_ca=str(tmp_path / "server.pem")),
                       stream=StreamLimits(create=True), timeout=3.0)
    bad = NatsChannel("hq", servers=[url], auth=NatsAuth(tls_ca=str(tmp_path / "other.pem")), timeout=3.0)
    try:
        ok = good.send(heartbeat(), message_id="heartbeat.1", now=at(14, 0), sender=None)  # type: ignore[arg-type]
        assert ok.status == "ok", ok
        refused = bad.send(heartbeat(), message_id="heartbeat.2", now=at(14, 0), sender=None)  # type: ignore[arg-type]
        assert refused.status == "retry" and "certificate" in refused.reason.lower(), refused
    finally:
        good.close()
        bad.close()
        server.stop()


def test_a_message_over_the_servers_max_payload_is_a_dead_letter_not_a_retry(tmp_path: Path) -> None:
    conf = tmp_path / "small.conf"
    conf.write_text("max_payload: 2048\n")
    server = NatsServer(tmp_path / "nats", extra=("-c", str(conf))).start()
    channel = NatsChannel("hq", servers=[server.url], stream=StreamLimits(create=True), timeout=3.0)
    big = Notice(kind=NoticeKind.HEARTBEAT, alerts=(), shop="测试店", source="settleguard://shop-a/till-1",
                 created=at(14, 0), data={"problems": ["x" * 4000]})
    try:
        ok = channel.send(heartbeat(), message_id="heartbeat.1", now=at(14, 0), sender=None)  # type: ignore[arg-type]
        assert ok.status == "ok", ok
        too_big = channel.send(big, message_id="heartbeat.2", now=at(14, 0), sender=None)  # type: ignore[arg-type]
        assert too_big.status == "permanent" and "max_payload" in too_big.reason, too_big
    finally:
        channel.close()
        server.stop()
