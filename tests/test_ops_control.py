"""The control socket as an attacker on the till would use it (issue 14 obs. 3, issue 13 obs. 3).

Observed before: ``{"cmd":"ack"}`` with no id killed the pipeline thread; ``"by": {"x": 1}`` made the
journal write fail forever; ``"id": "%"`` dismissed an arbitrary alert (``LIKE id%``); ``ack 01M7
--legit`` matched 17 alerts, dismissed one and exited 0; any client could record itself as
"settleguard"; one client dribbling bytes blocked ``settleguard ack``. Every test here talks to a
running daemon (in-process, ManualClock) over its real Unix socket.
"""

from __future__ import annotations

import json
import os
import pwd
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from agent.alerts.lifecycle import AlertState
from agent.config import parse_config
from agent.model import Alert
from agent.service.control import MAX_CLIENTS, ControlServer, RequestError, parse_request, request
from agent.service.daemon import Daemon
from agent.sim.terminal import PtyTerminal, encode_event
from agent.store.journal import Journal
from drivers.clock import ManualClock
from tests.helpers import SHANGHAI, jsonl_line_config, sale, wait_until

NOW = datetime(2026, 11, 27, 14, 30, tzinfo=SHANGHAI)
CARDS = ["622576******6691", "622588******1231", "621700******0042"]
ME = pwd.getpwuid(os.getuid()).pw_name


class Shop:
    def __init__(self, tmp: Path) -> None:
        self.state = tmp
        self.term = PtyTerminal()
        self.clock = ManualClock(NOW)
        rules = '\n[rules.DUP-001]\nwindow = "10m"\n'
        loaded = parse_config(jsonl_line_config("控制口测试店", self.term.device, rules))
        self.daemon = Daemon(loaded, tmp, clock=self.clock, use_scheduler=False)
        self.sock = tmp / "control.sock"
        self.voucher = 100

    def charge_twice(self, card: str) -> None:
        """A duplicate charge on the terminal line: one DUP-001 alert."""
        for minutes in (6, 5):
            self.voucher += 1
            self.term.write(encode_event("jsonl", sale(f"{self.voucher:06d}", 12800,
                                                       NOW - timedelta(minutes=minutes), card=card)))

    def transactions(self) -> int:
        p = self.daemon.pipeline
        return p.counts["transactions"] if p is not None else 0

    def alerts(self) -> list[Alert]:
        j = Journal(self.state / "settleguard.sqlite3")
        try:
            return j.alerts()
        finally:
            j.close()

    def log(self, alert_id: str) -> list[dict[str, object]]:
        j = Journal(self.state / "settleguard.sqlite3")
        try:
            return j.alert_log(alert_id)
        finally:
            j.close()


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[Shop]:
    s = Shop(tmp_path)
    s.daemon.start()
    try:
        yield s
    finally:
        s.daemon.stop()
        s.term.close()


def raw(path: Path, line: bytes) -> dict[str, object]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
        c.settimeout(10)
        c.connect(str(path))
        c.sendall(line)
        buf = b""
        while b"\n" not in buf and (chunk := c.recv(65536)):
            buf += chunk
    reply = json.loads(buf)
    assert isinstance(reply, dict)
    return reply


def with_alerts(shop: Shop, n: int) -> list[Alert]:
    for card in CARDS[:n]:
        shop.charge_twice(card)
    wait_until(lambda: len(shop.alerts()) == n, f"{n} DUP-001 alerts")
    return shop.alerts()


def test_malformed_acks_are_refused_and_the_pipeline_keeps_journalling(shop: Shop) -> None:
    (alert,) = with_alerts(shop, 1)
    bad = [
        b'{"cmd":"ack"}\n',                                                        # killed the pipeline thread
        json.dumps({"cmd": "ack", "id": alert.id, "answer": "legit", "by": {"x": 1}}).encode() + b"\n",
        json.dumps({"cmd": "ack", "id": alert.id, "answer": "legit", "note": ["x"]}).encode() + b"\n",
        json.dumps({"cmd": "ack", "id": alert.id, "answer": "legit", "by": "a\ud800"}).encode() + b"\n",
        json.dumps({"cmd": "ack", "id": alert.id, "answer": "legit", "extra": 1}).encode() + b"\n",
        json.dumps({"cmd": "ack", "id": 42, "answer": "legit"}).encode() + b"\n",
        json.dumps({"cmd": "reconfigure"}).encode() + b"\n",
        b"[1, 2]\n", b"not json\n",
    ]
    for line in bad:
        reply = raw(shop.sock, line)
        assert reply["ok"] is False and reply["error"], line
    assert "id" in str(raw(shop.sock, bad[0])["error"])
    assert "by" in str(raw(shop.sock, bad[1])["error"])
    before = shop.transactions()
    shop.charge_twice(CARDS[1])
    wait_until(lambda: shop.transactions() == before + 2, "the next transactions in the journal",
               detail=lambda: shop.daemon.health_problems())
    assert shop.daemon.healthy(), shop.daemon.health_problems()
    assert shop.daemon.pipeline is not None and shop.daemon.pipeline.journal_error is None
    assert shop.alerts()[0].state == AlertState.OPEN


@pytest.mark.parametrize("code", ["%", "%%%%", "____", "0%", "01%_"])
def test_wildcards_in_an_id_are_literal_characters_and_dismiss_nothing(shop: Shop, code: str) -> None:
    with_alerts(shop, 1)
    reply = raw(shop.sock, json.dumps({"cmd": "ack", "id": code, "answer": "legit"}).encode() + b"\n")
    assert reply["ok"] is False
    assert [a.state for a in shop.alerts()] == [AlertState.OPEN]


def test_an_ambiguous_short_code_lists_the_candidates_exits_non_zero_and_changes_nothing(shop: Shop) -> None:
    alerts = with_alerts(shop, 3)
    ids = sorted(a.id for a in alerts)
    # The simulated clock stood still, so the ids share their time part; 8 characters match all three.
    code = ids[0][:8]
    assert all(i.startswith(code) for i in ids)
    proc = subprocess.run([sys.executable, "-m", "agent.cli", "ack", code.lower(), "--legit", "--note", "genuine",
                           "--state", str(shop.state)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0, proc.stdout
    assert "matches 3 alerts" in proc.stderr and all(i in proc.stderr for i in ids)
    assert {a.state for a in shop.alerts()} == {AlertState.OPEN}
    # The full id, or any prefix only one alert has, still works.
    unique = next(i for i in ids if sum(j.startswith(i[:20]) for j in ids) == 1)[:20]
    done = subprocess.run([sys.executable, "-m", "agent.cli", "ack", unique, "--legit", "--note", "genuine",
                           "--state", str(shop.state)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert sorted(a.state for a in shop.alerts()) == sorted([AlertState.DISMISSED, AlertState.OPEN, AlertState.OPEN])


def test_the_actor_is_the_peers_user_and_a_claimed_name_is_recorded_beside_it(shop: Shop) -> None:
    (alert,) = with_alerts(shop, 1)
    reply = raw(shop.sock, json.dumps({"cmd": "ack", "id": alert.id, "answer": "legit", "note": "genuine",
                                       "by": "settleguard"}).encode() + b"\n")
    assert reply["ok"] is True, reply
    actor = shop.log(alert.id)[-1]["actor"]
    assert actor == f"{ME} (uid {os.getuid()}) as settleguard"
    assert actor != "settleguard" and reply["actor"] == actor


def test_a_client_dribbling_bytes_does_not_block_ack_and_is_cut_off(shop: Shop) -> None:
    (alert,) = with_alerts(shop, 1)
    stop = threading.Event()
    connected: list[int] = []

    def dribble() -> None:
        """One byte at a time, never a newline, each well within any per-recv timeout (the old
        server's 5 s): it held the single-threaded socket for as long as it kept dribbling."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
            c.connect(str(shop.sock))
            c.sendall(b"{")
            connected.append(1)
            c.settimeout(0.2)
            while not stop.is_set():
                try:
                    c.sendall(b" ")
                    if c.recv(4096):
                        return   # cut off by the server's deadline
                except TimeoutError:
                    continue
                except OSError:
                    return
    slow = [threading.Thread(target=dribble, daemon=True) for _ in range(3)]
    for t in slow:
        t.start()
    try:
        wait_until(lambda: len(connected) == 3, "the slow clients to be connected")
        reply = request(shop.sock, {"cmd": "ack", "id": alert.id, "answer": "legit", "by": None, "note": "genuine"},
                        timeout=3.0)
        assert reply is not None and reply["ok"] is True, reply
        assert shop.alerts()[0].state == AlertState.DISMISSED
        status = request(shop.sock, {"cmd": "status"}, timeout=3.0)
        assert status is not None and status["ok"] is True
    finally:
        stop.set()
        for t in slow:
            t.join(10)


def test_every_slot_held_by_silent_clients_does_not_lock_out_ack(shop: Shop) -> None:
    """Found by attacking it: 16 connections that send nothing (reconnecting as they are cut off) took
    every slot, and ``settleguard ack`` exited 1 with "Broken pipe" for as long as they kept at it."""
    (alert,) = with_alerts(shop, 1)
    stop = threading.Event()
    holding: list[socket.socket] = []
    lock = threading.Lock()

    def hog() -> None:
        while not stop.is_set():
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                c.connect(str(shop.sock))
            except OSError:
                c.close()
                continue
            with lock:
                holding.append(c)
            c.settimeout(0.2)
            while not stop.is_set():      # silent until the server cuts it off, then straight back
                try:
                    if not c.recv(4096):
                        break
                except TimeoutError:
                    continue
                except OSError:
                    break
            c.close()
    hogs = [threading.Thread(target=hog, daemon=True) for _ in range(MAX_CLIENTS)]
    for t in hogs:
        t.start()
    try:
        wait_until(lambda: len(holding) >= MAX_CLIENTS, "every slot taken by a silent client")
        proc = subprocess.run([sys.executable, "-m", "agent.cli", "ack", alert.id, "--legit", "--note", "genuine",
                               "--state", str(shop.state)], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert shop.alerts()[0].state == AlertState.DISMISSED
    finally:
        stop.set()
        for t in hogs:
            t.join(10)


def test_the_whole_request_has_a_deadline_and_a_size_bound(tmp_path: Path) -> None:
    seen: list[dict[str, object]] = []
    server = ControlServer(tmp_path / "c.sock", lambda r: seen.append(r) or {"ok": True}, deadline=0.5)
    server.start()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
            c.settimeout(10)
            c.connect(str(tmp_path / "c.sock"))
            c.sendall(b'{"cmd":')
            reply = json.loads(c.recv(4096))
        assert reply["ok"] is False and "within 0.5 s" in reply["error"]
        huge = raw(tmp_path / "c.sock", b'{"cmd":"status","pad":"' + b"x" * 100_000 + b'"}\n')
        assert huge["ok"] is False and "longer than" in str(huge["error"])
        assert raw(tmp_path / "c.sock", b'{"cmd":"status"}\n') == {"ok": True}
    finally:
        server.stop()
    assert seen == [{"cmd": "status"}]


def test_the_schema_refuses_what_the_old_socket_passed_on() -> None:
    for line in (b'{"cmd":"ack"}', b'{"cmd":"ack","id":"%","answer":"legit"}',
                 b'{"cmd":"ack","id":"01ABCDEF","answer":"maybe"}',
                 b'{"cmd":"ack","id":"01AB","answer":"legit","by":1}',
                 b'{"cmd":"ack","id":"01AB","answer":"legit","note":"x\\u0000y"}', b'{"cmd":"stop"}'):
        with pytest.raises(RequestError):
            parse_request(line)
    ok = parse_request(b'{"cmd":"ack","id":"01ABCD","answer":"voided","by":"\\u738b\\u5e97\\u957f","note":"n"}')
    assert ok.model_dump() == {"cmd": "ack", "id": "01ABCD", "answer": "voided", "by": "王店长", "note": "n"}
