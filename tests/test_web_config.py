"""The [web] section: PINs in the channels' secret forms and never echoed, the page on and off with reloads."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from agent.config import ConfigError, load_config, parse_config
from agent.service.daemon import Daemon
from agent.sim.terminal import PtyTerminal
from drivers.clock import ManualClock
from tests.helpers import SHANGHAI, committed_alerts, daemon_on_pty, jsonl_line_config, sale_line, wait_until
from tests.web_support import PIN_LI, PIN_WANG, client, web_section


def web(staff: str, head: str = 'listen = "127.0.0.1:0"\n') -> str:
    return f"[web]\n{head}{staff}"


def person(name: str, pin: str, role: str = "cashier") -> str:
    return f'[[web.staff]]\nname = "{name}"\npin = "{pin}"\nrole = "{role}"\n'


def test_pins_take_the_channels_secret_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SG_TEST_PIN", "246810")
    pin_file = tmp_path / "pin"
    pin_file.write_text("135790\n", encoding="utf-8")
    loaded = parse_config(web(person("小王", "env:SG_TEST_PIN") + person("小李", f"file:{pin_file}")
                              + person("李店长", "1122", "manager")))
    assert loaded.config.web is not None
    # read where the page is served (WebConfig.resolved: the daemon's preflight and the page), not at load
    assert [s.pin.get_secret_value() for s in loaded.config.web.staff] == [
        "env:SG_TEST_PIN", f"file:{pin_file}", "1122"]
    resolved = loaded.config.web.resolved()
    pins = [s.pin.get_secret_value() for s in resolved.staff]
    assert pins == ["246810", "135790", "1122"]
    assert "246810" not in repr(resolved) and "135790" not in str(resolved)
    assert loaded.config.legit_needs == "manager"      # the default: a manager says a charge is genuine


@pytest.mark.parametrize(("staff", "error"), [
    (person("小王", "12a4"), "a PIN is 4 to 12 digits"),
    (person("小王", "123"), "a PIN is 4 to 12 digits"),
    (person("小王", "4711") + person("小李", "4711"), "same PIN as someone else"),
    (person("小王", "4711") + person("小王", "4712"), "two [[web.staff]] entries are named"),
    (person("小王", "4711", "boss"), "role"),
])
def test_bad_staff_entries_are_refused_without_echoing_a_pin(staff: str, error: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config(web(staff))
    assert error in str(refused.value)
    for pin in ("12a4", "4711", "4712"):
        assert f"'{pin}'" not in str(refused.value)


@pytest.mark.parametrize(("staff", "error"), [
    (person("小王", "env:SG_TEST_NOT_SET"), "staff[0] (小王).pin: environment variable SG_TEST_NOT_SET is not set"),
    (person("小王", "env:SG_TEST_BAD_PIN"), "staff[0] (小王).pin: a PIN is 4 to 12 digits"),
    (person("小王", "env:SG_TEST_PIN") + person("小李", "4711"), "小李 has the same PIN as someone else"),
])
def test_a_pin_reference_that_does_not_read_is_refused_where_the_page_is_served(
        staff: str, error: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not at load (replay and check-config on the owner's laptop need no PIN), but by the daemon's
    preflight, with the file and the person named, before anything starts."""
    from agent.service.preflight import preflight

    monkeypatch.setenv("SG_TEST_PIN", "4711")
    monkeypatch.setenv("SG_TEST_BAD_PIN", "12a4")
    conf = tmp_path / "shop.toml"
    conf.write_text(web(staff), encoding="utf-8")
    loaded = load_config(conf)                    # parses: nothing read yet
    with pytest.raises(ConfigError) as refused:
        preflight(loaded, datetime(2026, 11, 27, 14, 0, tzinfo=SHANGHAI))
    assert str(conf) in str(refused.value) and error in str(refused.value)
    assert "12a4" not in str(refused.value)


def test_replay_and_check_config_run_without_the_tills_pin_environment(tmp_path: Path) -> None:
    import subprocess
    import sys

    conf = tmp_path / "shop.toml"
    conf.write_text('[shop]\nname = "测试店"\ntimezone = "Asia/Shanghai"\n'
                    + web(person("小王", "env:SG_TEST_NOT_SET_ANYWHERE")), encoding="utf-8")
    capture = tmp_path / "day.jsonl"
    capture.write_bytes(sale_line("000001", 6800))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "agent.cli", *args], capture_output=True, text=True,
                              timeout=60)

    checked = cli("check-config", str(conf))
    assert checked.returncode == 0, checked.stderr
    assert "web.staff[0] (小王).pin" in checked.stderr and "cannot sign in to the till page" in checked.stderr
    strict = cli("check-config", "--strict", str(conf))
    assert strict.returncode == 78 and "SG_TEST_NOT_SET_ANYWHERE" in strict.stderr
    replayed = cli("replay", "--config", str(conf), "--protocol", "jsonl", str(capture))
    assert replayed.returncode == 0, replayed.stderr


@pytest.mark.parametrize("listen", ["8087", "eth0:8087", "example.com:8087", "127.0.0.1:99999"])
def test_listen_is_an_address_of_this_machine_and_a_port(listen: str) -> None:
    with pytest.raises(ConfigError, match=r"web\.listen"):
        parse_config(web("", f'listen = "{listen}"\n'))


def test_no_web_section_no_page(tmp_path: Path) -> None:
    term = PtyTerminal()
    daemon = daemon_on_pty(tmp_path, term)
    try:
        assert daemon.web is None and daemon.status()["web"] == {"url": None, "error": None}
    finally:
        daemon.stop()
        term.close()


def test_a_reload_follows_web_staff_and_legit_needs(tmp_path: Path) -> None:
    """Staff taken off the file are signed out at once; legit_needs changes what the alert book accepts."""
    term = PtyTerminal()
    conf = tmp_path / "settleguard.toml"
    base = jsonl_line_config("健康测试店", term.device, '\n[rules.DUP-001]\nwindow = "10m"\n')
    conf.write_text(base + web_section(legit_needs="manager"), encoding="utf-8")
    clock = ManualClock(datetime(2026, 11, 27, 14, 0, tzinfo=SHANGHAI))
    daemon = Daemon(load_config(conf), tmp_path / "state", clock=clock, use_scheduler=False, watch_config=False)
    daemon.start()
    try:
        term.write(sale_line("000001") + sale_line("000002"))
        wait_until(lambda: committed_alerts(daemon) >= 1,
                   "the double charge flagged")
        wang, li = client(daemon), client(daemon)
        assert wang.login(PIN_WANG).status == 200 and li.login(PIN_LI).status == 200
        (alert,) = wang.get("/api/alerts?state=open").body["alerts"]
        code = alert["code"]
        refused = wang.post(f"/api/alerts/{code}/answer", {"answer": "legit", "note": "两份"})
        # The manager leaves; the shop lets anyone say a charge is genuine.
        only_wang = f'\n[web]\nlisten = "127.0.0.1:0"\nlegit_needs = "anyone"\n{person("小王", PIN_WANG)}'
        conf.write_text(base + only_wang, encoding="utf-8")
        assert daemon.reload(), daemon.last_reload_error
        gone = li.get("/api/batch")
        accepted = wang.post(f"/api/alerts/{code}/answer", {"answer": "legit", "note": "客人确实买了两份"})
    finally:
        daemon.stop()
        term.close()
    assert refused.status == 403
    assert gone.status == 401, "a person taken off the staff list is signed out at the reload"
    assert accepted.status == 200 and accepted.body["alert"]["answer"]["by"] == "小王"


def test_a_changed_pin_ends_the_sessions_opened_with_the_old_one(tmp_path: Path) -> None:
    """A PIN is changed because it leaked: whoever signed in with it is out at the reload (found by review)."""
    term = PtyTerminal()
    conf = tmp_path / "settleguard.toml"
    base = jsonl_line_config("健康测试店", term.device)
    conf.write_text(base + web_section(), encoding="utf-8")
    daemon = Daemon(load_config(conf), tmp_path / "state", clock=ManualClock(datetime(2026, 11, 27, 14, 0,
                    tzinfo=SHANGHAI)), use_scheduler=False, watch_config=False)
    daemon.start()
    try:
        thief, colleague = client(daemon), client(daemon)
        assert thief.login(PIN_LI).status == 200 and colleague.login(PIN_WANG).status == 200
        conf.write_text(base + web_section(pin_li="246813"), encoding="utf-8")
        assert daemon.reload(), daemon.last_reload_error
        after = thief.get("/api/batch")
        kept = colleague.get("/api/batch")
        old_pin = client(daemon).login(PIN_LI)
        new_pin = client(daemon).login("246813")
    finally:
        daemon.stop()
        term.close()
    assert after.status == 401 and old_pin.status == 401 and new_pin.status == 200
    assert kept.status == 200, "a colleague whose PIN did not change stays signed in"


def test_a_busy_port_is_shown_and_tried_again_until_the_page_is_served(tmp_path: Path) -> None:
    """The page is not a health problem (alerts go out without it), but it must not vanish silently."""
    import socket

    from agent.service.daemon import WEB_RETRY_EVERY
    from agent.service.doctor import check_daemon

    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    port = squatter.getsockname()[1]
    term = PtyTerminal()
    section = web_section().replace('listen = "127.0.0.1:0"', f'listen = "127.0.0.1:{port}"')
    daemon = daemon_on_pty(tmp_path, term, section)
    try:
        assert daemon.web is None and "Address already in use" in (daemon.web_error or "")
        assert "till page NOT served" in daemon.status_line() and daemon.healthy()
        (page,) = [c for c in check_daemon(tmp_path / "state") if c.name == "till page"]
        assert page.status == "fail" and str(port) in page.detail
        squatter.close()
        daemon.notify_systemd()
        assert daemon.web is None, "not before a minute has passed"
        assert isinstance(daemon.clock, ManualClock)
        daemon.clock.advance(WEB_RETRY_EVERY + 1)
        daemon.notify_systemd()
        assert daemon.web is not None and daemon.web.address[1] == port
        assert "NOT served" not in daemon.status_line()
    finally:
        squatter.close()
        daemon.stop()
        term.close()


def test_one_unreadable_pin_file_locks_out_that_person_only(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A PIN file removed or made unreadable on a running till: that person cannot sign in (and the log says
    why, once), everyone else still can. Before, one bad file answered 503 to the whole shop, unlogged."""
    from tests.web_support import web_daemon

    pin_file = tmp_path / "wang.pin"
    pin_file.write_text(PIN_WANG + "\n", encoding="utf-8")
    term = PtyTerminal()
    daemon = web_daemon(tmp_path, term, pin_wang=f"file:{pin_file}")
    try:
        assert client(daemon).login(PIN_WANG).status == 200
        pin_file.unlink()
        with caplog.at_level("WARNING", logger="settleguard.web"):
            wang_now = [client(daemon).login(PIN_WANG).status for _ in range(2)]
            li_now = client(daemon).login(PIN_LI).status
        pin_file.write_text(PIN_WANG + "\n", encoding="utf-8")
        wang_back = client(daemon).login(PIN_WANG).status
    finally:
        daemon.stop()
        term.close()
    assert wang_now == [401, 401] and li_now == 200 and wang_back == 200
    warned = [r.getMessage() for r in caplog.records if "cannot sign in" in r.getMessage()]
    assert len(warned) == 1 and "staff[0] (小王).pin" in warned[0] and str(pin_file) in warned[0], warned


def test_check_config_tells_an_unreadable_pin_file_from_one_that_holds_no_pin(tmp_path: Path) -> None:
    from agent.config import unresolved_secrets

    holds_text = tmp_path / "wang.pin"
    holds_text.write_text("secret\n", encoding="utf-8")
    loaded = parse_config(web(person("小王", f"file:{holds_text}") + person("小李", f"file:{tmp_path}/none")))
    (bad_value, missing) = unresolved_secrets(loaded.config)
    assert bad_value[0] == "web.staff[0] (小王).pin" and "holds no valid PIN" in bad_value[1]
    assert "4 to 12 digits" in bad_value[2] and str(holds_text) in bad_value[2] and "secret" not in bad_value[1]
    assert missing[0] == "web.staff[1] (小李).pin" and "readable by the service user" in missing[2]
