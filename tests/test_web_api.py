"""The till page's JSON API against the real daemon on 127.0.0.1 (waitress, a pty terminal, a ManualClock).

Sign-in (wrong PIN, lockout per address and its end, sessions that expire), CSRF on every state
change, who may say what (legit_needs, a reason for legit), the lifecycle's refusals reaching the
phone as JSON (voided after settlement points to refunded), the evidence bundle download, and the
server thread supervised like the daemon's others.
"""

from __future__ import annotations

import contextlib
import io
import logging
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.service.daemon import Daemon
from agent.sim.terminal import PtyTerminal
from agent.web.auth import LOCKOUT, MAX_FAILURES
from tests.helpers import committed_alerts, sale_line, wait_until
from tests.web_support import PIN_LI, PIN_WANG, WebClient, client, web_daemon


@pytest.fixture
def term() -> Iterator[PtyTerminal]:
    t = PtyTerminal()
    yield t
    t.close()


def started(tmp_path: Path, term: PtyTerminal, **web: str) -> Daemon:
    return web_daemon(tmp_path, term, **web)


def double_charge(daemon: Daemon, term: PtyTerminal) -> str:
    """The same card charged twice at 14:00: one DUP-001 alert; its code as the page shows it."""
    term.write(sale_line("000001") + sale_line("000002"))
    wait_until(lambda: committed_alerts(daemon) >= 1,
               "the double charge flagged")
    c = client(daemon)
    assert c.login(PIN_LI).status == 200
    (alert,) = c.get("/api/alerts?state=open").body["alerts"]
    return str(alert["view"]["code"])


def state_of(c: WebClient, code: str) -> str:
    return str(c.get(f"/api/alerts/{code}").body["alert"]["state"])


# -- sign-in ----------------------------------------------------------------------------------------------
def test_a_wrong_pin_is_401_and_the_log_never_holds_a_pin(tmp_path: Path, term: PtyTerminal,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    daemon = started(tmp_path, term)
    try:
        c = client(daemon)
        assert c.get("/api/alerts").status == 401
        with caplog.at_level(logging.INFO, logger="settleguard.web"):
            wrong = c.login("8642")
            right = c.login(PIN_WANG)
    finally:
        daemon.stop()
    assert wrong.status == 401 and wrong.body == {"ok": False, "error": "PIN 不对 / wrong PIN"}
    assert right.status == 200 and right.body["name"] == "小王" and right.body["role"] == "cashier"
    text = caplog.text
    assert "wrong PIN from 127.0.0.1" in text and "小王" in text
    assert "8642" not in text and PIN_WANG not in text
    # The cookie: HttpOnly, SameSite=Strict, never readable by the page's scripts.
    (cookie,) = [line for line in c.set_cookie if line.startswith("sg_session=")]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie


def test_repeated_wrong_pins_lock_that_address_out_with_429_and_retry_after(tmp_path: Path,
                                                                           term: PtyTerminal) -> None:
    daemon = started(tmp_path, term)
    try:
        guesser = client(daemon, "127.0.0.2")
        codes = [guesser.login(f"{n:04d}").status for n in range(MAX_FAILURES)]
        locked = guesser.login(PIN_WANG)              # the right PIN is not even heard while locked out
        other = client(daemon, "127.0.0.3").login(PIN_WANG)
        daemon.clock.advance(LOCKOUT + 1)             # type: ignore[attr-defined]
        later = guesser.login(PIN_WANG)
    finally:
        daemon.stop()
    assert codes == [401] * MAX_FAILURES
    assert locked.status == 429
    assert int(locked.headers["retry-after"]) == LOCKOUT
    assert "错误次数太多" in locked.body["error"]
    assert other.status == 200, "another phone on the LAN still signs in"
    assert later.status == 200, "the lockout ends"


def test_a_session_ends_after_its_idle_time(tmp_path: Path, term: PtyTerminal) -> None:
    daemon = started(tmp_path, term)
    try:
        c = client(daemon)
        c.login(PIN_WANG)
        assert c.get("/api/batch").status == 200
        daemon.clock.advance(4 * 3600 + 1)            # type: ignore[attr-defined]  # [web] session_idle 4h
        expired = c.get("/api/batch")
    finally:
        daemon.stop()
    assert expired.status == 401


# -- state changes ------------------------------------------------------------------------------------------
def test_an_answer_without_the_csrf_token_is_refused_and_changes_nothing(tmp_path: Path, term: PtyTerminal) -> None:
    daemon = started(tmp_path, term)
    try:
        code = double_charge(daemon, term)
        c = client(daemon)
        c.login(PIN_LI)
        bare = c.post(f"/api/alerts/{code}/answer", {"answer": "voided"}, csrf=False)
        wrong = c.request("POST", f"/api/alerts/{code}/answer", {"answer": "voided"}, csrf=False,
                          headers={"X-CSRF-Token": "not-the-token"})
        still = state_of(c, code)
        ok = c.post(f"/api/alerts/{code}/answer", {"answer": "voided"})
    finally:
        daemon.stop()
    assert bare.status == 403 and "CSRF" in bare.body["error"]
    assert wrong.status == 403
    assert still == "open"
    assert ok.status == 200


def test_a_cashiers_legit_is_refused_when_legit_needs_a_manager(tmp_path: Path, term: PtyTerminal) -> None:
    daemon = started(tmp_path, term, legit_needs="manager")
    try:
        code = double_charge(daemon, term)
        cashier = client(daemon)
        cashier.login(PIN_WANG)
        refused = cashier.post(f"/api/alerts/{code}/answer", {"answer": "legit", "note": "客人买了两份"})
        no_reason = client(daemon)
        no_reason.login(PIN_LI)
        bare = no_reason.post(f"/api/alerts/{code}/answer", {"answer": "legit"})
        still = state_of(cashier, code)
        manager = no_reason.post(f"/api/alerts/{code}/answer", {"answer": "legit", "note": "客人买了两份"})
    finally:
        daemon.stop()
    assert refused.status == 403 and "店长" in refused.body["error"]
    assert bare.status == 400 and "reason" in bare.body["error"]
    assert still == "open"
    assert manager.status == 200 and manager.body["alert"]["state"] == "dismissed"


def test_with_legit_needs_anyone_a_cashier_may_answer_legit(tmp_path: Path, term: PtyTerminal) -> None:
    daemon = started(tmp_path, term, legit_needs="anyone")
    try:
        code = double_charge(daemon, term)
        cashier = client(daemon)
        cashier.login(PIN_WANG)
        done = cashier.post(f"/api/alerts/{code}/answer", {"answer": "legit", "note": "客人买了两份"})
        history = cashier.get(f"/api/alerts/{code}").body["history"]
    finally:
        daemon.stop()
    assert done.status == 200 and done.body["alert"]["state"] == "dismissed"
    assert history[-1]["note"] == "客人买了两份" and "小王" in history[-1]["actor"]


def test_voided_after_settlement_is_refused_pointing_to_refunded(tmp_path: Path, term: PtyTerminal) -> None:
    daemon = started(tmp_path, term)
    try:
        code = double_charge(daemon, term)
        daemon.command("cutoff")                    # 23:00 passed: the batch is closed, the alert escalated
        c = client(daemon)
        c.login(PIN_WANG)
        (escalated,) = c.get("/api/alerts?state=open").body["alerts"]
        voided = c.post(f"/api/alerts/{code}/answer", {"answer": "voided"})
        # A refund done outside the terminal closes the alert on a person's word: a manager's, here.
        by_cashier = c.post(f"/api/alerts/{code}/answer", {"answer": "refunded", "note": "在收单 App 退款"})
        manager = client(daemon)
        manager.login(PIN_LI)
        refunded = manager.post(f"/api/alerts/{code}/answer", {"answer": "refunded", "note": "在收单 App 退款"})
        zipped = c.get(f"/api/alerts/{code}/evidence")
    finally:
        daemon.stop()
    assert escalated["state"] == "escalated"
    assert "voided" not in escalated["view"]["answers"], "the page offers no 已撤销 button after settlement"
    assert voided.status == 409
    assert "refunded" in voided.body["error"]
    assert by_cashier.status == 403 and "店长" in by_cashier.body["error"]
    assert refunded.status == 200 and refunded.body["alert"]["answer"]["by"] == "李店长"
    # The escalation wrote an evidence bundle: the page hands it over as one zip.
    assert zipped.status == 200 and zipped.headers["content-type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(zipped.raw)).namelist()
    assert any(n.endswith("/README.txt") for n in names)


def test_bad_requests_get_json_errors(tmp_path: Path, term: PtyTerminal) -> None:
    daemon = started(tmp_path, term)
    try:
        code = double_charge(daemon, term)
        c = client(daemon)
        c.login(PIN_LI)
        unknown_answer = c.post(f"/api/alerts/{code}/answer", {"answer": "deleted"})
        extra = c.post(f"/api/alerts/{code}/answer", {"answer": "voided", "by": "someone else"})
        control = c.post(f"/api/alerts/{code}/answer", {"answer": "legit", "note": "ok\x1b[2J"})
        missing = c.post("/api/alerts/ZZZZZZ/answer", {"answer": "voided"})
        form = c.request("POST", "/api/login", None, headers={"Content-Type": "application/x-www-form-urlencoded"})
        bad_state = c.get("/api/alerts?state=everything")
    finally:
        daemon.stop()
    assert unknown_answer.status == 400
    assert extra.status == 400 and "by" in extra.body["error"], "who answered comes from the session, never the body"
    assert control.status == 400
    assert missing.status == 404
    assert form.status == 415
    assert bad_state.status == 400
    for reply in (unknown_answer, extra, control, missing, form, bad_state):
        assert reply.body["ok"] is False and reply.body["error"]


# -- the server thread --------------------------------------------------------------------------------------
def test_a_dead_web_thread_shows_in_health_and_is_restarted(tmp_path: Path, term: PtyTerminal) -> None:
    daemon = started(tmp_path, term)
    try:
        c = client(daemon)
        c.login(PIN_WANG)
        assert daemon.web is not None
        daemon.web.stop()                           # the server thread ends while the daemon runs
        assert "thread web died: the till page server stopped" in daemon.health_problems()
        assert daemon.revive() == ["web"]
        assert daemon.health_problems() == []
        again = client(daemon)
        again.cookies = c.cookies                   # sessions live in the daemon: the phone stays signed in
        batch = again.get("/api/batch")
        status = daemon.status()
    finally:
        daemon.stop()
    assert batch.status == 200 and batch.body["sources"][0]["name"] == "terminal"
    assert status["web"]["url"].startswith("http://127.0.0.1:")


def test_a_message_link_opens_the_page_with_that_alert_brought_forward(tmp_path: Path, term: PtyTerminal) -> None:
    daemon = started(tmp_path, term)
    try:
        code = double_charge(daemon, term)
        c = client(daemon)
        linked = c.get(f"/a/{code.lower()}")
        junk = c.get("/a/%3Cscript%3E")
    finally:
        daemon.stop()
    assert linked.status == 200 and f'data-focus="{code}"'.encode() in linked.raw
    # Anything but a code or an id opens the plain page: nothing from the URL reaches the markup.
    assert junk.status == 200 and b'data-focus=""' in junk.raw and b"%3Cscript" not in junk.raw


def test_refunded_before_settlement_is_refused_pointing_to_a_void(tmp_path: Path, term: PtyTerminal) -> None:
    """A cashier could otherwise close any open alert for good with one tap (found by review)."""
    daemon = started(tmp_path, term, legit_needs="anyone")
    try:
        code = double_charge(daemon, term)
        c = client(daemon)
        c.login(PIN_WANG)
        (open_alert,) = c.get("/api/alerts?state=open").body["alerts"]
        refunded = c.post(f"/api/alerts/{code}/answer", {"answer": "refunded", "note": "x"})
        state = state_of(c, code)
    finally:
        daemon.stop()
    assert "refunded" not in open_alert["view"]["answers"], "no 已退货 button before settlement"
    assert refunded.status == 409 and "voided" in refunded.body["error"]
    assert state == "open"


def test_a_rebound_host_name_is_refused_and_odd_digits_are_a_json_error(tmp_path: Path, term: PtyTerminal) -> None:
    """DNS rebinding (a site's own name pointed at the till) and "²" as a day count (found by review)."""
    daemon = started(tmp_path, term)
    try:
        c = client(daemon)
        rebound = c.request("POST", "/api/login", {"pin": PIN_WANG}, headers={"Host": "evil.example:8087"})
        cookies_after_rebound = list(c.set_cookie)
        by_address = c.login(PIN_WANG)
        superscript = c.get("/api/alerts?state=closed&days=%C2%B2")
    finally:
        daemon.stop()
    assert rebound.status == 421 and cookies_after_rebound == []
    assert by_address.status == 200
    assert superscript.status == 400 and superscript.body["ok"] is False


def test_a_cashier_is_not_offered_the_answers_only_a_manager_may_give(tmp_path: Path, term: PtyTerminal) -> None:
    daemon = started(tmp_path, term)          # legit_needs = "manager"
    try:
        double_charge(daemon, term)
        cashier, manager = client(daemon), client(daemon)
        cashier.login(PIN_WANG)
        manager.login(PIN_LI)
        (seen_by_cashier,) = cashier.get("/api/alerts?state=open").body["alerts"]
        (seen_by_manager,) = manager.get("/api/alerts?state=open").body["alerts"]
    finally:
        daemon.stop()
    assert seen_by_cashier["view"]["answers"] == ["voided"]
    assert seen_by_manager["view"]["answers"] == ["voided", "legit"]


def test_a_lockout_is_told_to_the_shops_group_not_only_the_log(tmp_path: Path, term: PtyTerminal) -> None:
    """PIN guessing must reach a person (found by review): one device notice per lockout."""
    import json
    import sqlite3

    robot = '\n[[channel]]\nname = "robot"\ntype = "wecom"\nurl = "http://127.0.0.1:9/cgi-bin/webhook/send"\n'
    daemon = web_daemon(tmp_path, term, robot)
    journal = tmp_path / "state" / "settleguard.sqlite3"

    def device_rows() -> list[dict[str, object]]:
        with contextlib.closing(sqlite3.connect(f"file:{journal}?mode=ro", uri=True)) as conn:
            rows = conn.execute("SELECT payload FROM outbox WHERE kind='device'").fetchall()
        return [json.loads(r[0]) for r in rows]

    try:
        guesser = client(daemon, "127.0.0.9")
        for n in range(MAX_FAILURES + 2):          # two more after the lockout: still one notice
            guesser.login(f"{n:04d}")
        wait_until(lambda: len(device_rows()) >= 1, "the lockout notice queued for the group")
        daemon.command("tick")                     # anything queued behind it has been handled too
        rows = device_rows()
    finally:
        daemon.stop()
    assert len(rows) == 1 and rows[0]["problem"] == "web_lockout"
    assert "127.0.0.9" in " ".join(rows[0]["lines"]) and "PIN" in rows[0]["title"][0]   # type: ignore[arg-type]
