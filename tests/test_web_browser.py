"""The till page in a real browser: Debian's Chromium, headless, at a phone's size, against the real daemon.

Real parts throughout: the daemon on 127.0.0.1 reading a JSON-lines terminal on a pty, a
signature-checking webhook receiver on 127.0.0.1, chromedriver driving /usr/bin/chromium. The page
is signed in to with a PIN from the environment (``env:``, as channel secrets), shows the alert
raised over the pty with its countdown, and is answered "正常交易" with a reason; the receiver then
gets the revision naming the manager who answered.

The screenshots go to the test's own output directory, ``<pytest tmp_path>/output/`` (kept by
pytest under its basetemp, the last three runs: ``/tmp/pytest-of-$USER/pytest-current/...``); the
path is printed on failure and success (``-s`` or ``-rA`` shows it).

A machine without Chromium or chromedriver fails this test with the apt-get command that installs them
(``make test`` and ``.ci/run`` install them when run as root).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from agent.sim.rig import new_secret
from agent.sim.sink import WebhookSink
from agent.sim.terminal import PtyTerminal
from tests.helpers import committed_alerts, sale_line, wait_until
from tests.web_support import address, web_daemon

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
INSTALL = "apt-get install -y chromium chromium-driver fonts-wqy-zenhei"
PHONE = {"width": 390, "height": 844, "pixelRatio": 2.0}


def browser():  # type: ignore[no-untyped-def]
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    # Without a CJK font the page's Chinese draws as empty boxes: the screenshots would show nothing.
    fonts = subprocess.run(["fc-list", ":lang=zh"], capture_output=True, text=True) if shutil.which("fc-list") else None
    if fonts is None or not fonts.stdout.strip():
        missing.append("a Chinese font (fonts-wqy-zenhei)")
    if missing:
        pytest.fail(f"the till page's browser test needs {', '.join(missing)}: run `sudo {INSTALL}`")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-extensions", "--lang=zh-CN", f"--window-size={PHONE['width']},{PHONE['height']}"):
        opts.add_argument(arg)
    # A phone's viewport, pixel ratio and touch, not a desktop window made narrow.
    opts.add_experimental_option("mobileEmulation", {"deviceMetrics": PHONE})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def test_a_manager_signs_in_sees_the_countdown_and_answers_legit_the_webhook_names_her(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    out = tmp_path / "output"
    out.mkdir()
    monkeypatch.setenv("SETTLEGUARD_PIN_LI", "9182")
    secret = new_secret()
    sink = WebhookSink(secret=secret).start()
    term = PtyTerminal()
    hook = f'\n[[channel]]\nname = "back-office"\ntype = "webhook"\nurl = "{sink.url}"\nsecret = "{secret}"\n'
    daemon = web_daemon(tmp_path, term, hook, pin_li="env:SETTLEGUARD_PIN_LI")
    sink.clock = daemon.clock          # the receiver checks signature timestamps on the shop's (simulated) clock
    driver = browser()
    try:
        host, port = address(daemon)
        driver.get(f"http://{host}:{port}/")
        wait = WebDriverWait(driver, 20)
        assert driver.execute_script("return window.innerWidth") == PHONE["width"]
        pin = wait.until(ec.visibility_of_element_located((By.ID, "pin")))
        pin.send_keys("9182")
        driver.find_element(By.CSS_SELECTOR, "#login-form button[type=submit]").click()
        wait.until(ec.visibility_of_element_located((By.ID, "app")))
        assert driver.find_element(By.ID, "who-name").text == "李店长"

        # The same card charged twice at 14:00 on the till's clock: DUP-001, to be voided before 23:00.
        term.write(sale_line("000001") + sale_line("000002"))
        wait_until(lambda: committed_alerts(daemon) >= 1,
                   "the double charge flagged")
        wait_until(lambda: sink.received, "the opening revision at the webhook receiver", timeout=20)
        driver.refresh()   # what a cashier does on seeing the chat message; the page also polls every 15 s
        card = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "#open-list li.alert")))
        assert "同一张卡" in card.find_element(By.CSS_SELECTOR, ".why").text
        assert card.find_element(By.CSS_SELECTOR, ".amount").text == "RMB 128.00"
        assert card.find_element(By.CSS_SELECTOR, ".voucher").text == "000002"
        # 14:00 on the till's clock, cutoff 23:00: nine hours left, counting down on the page.
        countdown = card.find_element(By.CSS_SELECTOR, ".countdown")
        wait.until(lambda d: countdown.text.startswith(("距结算还剩 8:59", "距结算还剩 9:00")))
        first = countdown.text
        wait.until(lambda d: countdown.text != first)   # it is live: ticks on the phone's own timer
        assert "23:00" in countdown.text
        driver.save_screenshot(str(out / "1-open-alert.png"))

        card.find_element(By.CSS_SELECTOR, "button.answer-legit").click()
        note = wait.until(ec.visibility_of_element_located((By.ID, "legit-note")))
        note.send_keys("客人确实买了两份")
        driver.save_screenshot(str(out / "2-legit-reason.png"))
        driver.find_element(By.ID, "legit-ok").click()
        wait.until(lambda d: d.find_element(By.ID, "open-empty").is_displayed())
        closed = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "#closed-list li.alert")))
        assert "已确认正常" in closed.find_element(By.CSS_SELECTOR, ".state").text
        driver.save_screenshot(str(out / "3-answered.png"))

        revisions = wait_until(
            lambda: [r.body["data"] for r in sink.received if r.body["data"]["state"] == "dismissed"],
            "the answered revision at the webhook receiver", timeout=20)
    finally:
        driver.quit()
        daemon.stop()
        term.close()
        sink.stop()
    assert sink.invalid == []
    (dismissed,) = revisions  # type: ignore[misc]
    assert dismissed["answer"]["by"] == "李店长"
    assert dismissed["answer"]["role"] == "manager"
    assert dismissed["answer"]["answer"] == "legit"
    assert dismissed["answer"]["note"] == "客人确实买了两份"
    shots = sorted(p.name for p in out.glob("*.png"))
    assert shots == ["1-open-alert.png", "2-legit-reason.png", "3-answered.png"]
    assert all((out / s).stat().st_size > 5000 for s in shots)
    print(f"screenshots in {out}")
