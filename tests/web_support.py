"""The till page under test: a real daemon with [web] on 127.0.0.1, and a small HTTP client for its API.

The client is plain ``http.client``: it keeps the session cookie the server sets (and shows its
attributes) and sends the CSRF header only when asked, so each test says exactly what it sends.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

from agent.service.daemon import Daemon
from agent.sim.terminal import PtyTerminal
from drivers.clock import SYSTEM_CLOCK
from tests.helpers import daemon_on_pty

PIN_WANG = "4711"        # 小王, cashier
PIN_LI = "9182"          # 李店长, manager


def web_section(*, legit_needs: str = "manager", pin_wang: str = PIN_WANG, pin_li: str = PIN_LI) -> str:
    return (f'\n[web]\nlisten = "127.0.0.1:0"\npublic_url = "http://192.168.1.20:8087"\n'
            f'legit_needs = "{legit_needs}"\n'
            f'[[web.staff]]\nname = "小王"\npin = "{pin_wang}"\nrole = "cashier"\n'
            f'[[web.staff]]\nname = "李店长"\npin = "{pin_li}"\nrole = "manager"\n')


def web_daemon(tmp_path: Path, term: PtyTerminal, extra: str = "", **web: Any) -> Daemon:
    """The real daemon on a JSON-lines pty (tests/helpers.py daemon_on_pty) serving the till page."""
    rules = '\n[rules.DUP-001]\nwindow = "10m"\n'
    return daemon_on_pty(tmp_path, term, rules + extra + web_section(**web))


def address(daemon: Daemon) -> tuple[str, int]:
    assert daemon.web is not None, f"the till page is not served: {daemon.web_error}"
    return daemon.web.address


@dataclass
class Reply:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]
    raw: bytes = b""


@dataclass
class WebClient:
    host: str
    port: int
    client_ip: str = "127.0.0.1"
    cookies: dict[str, str] = field(default_factory=dict)
    set_cookie: list[str] = field(default_factory=list)
    csrf: str = ""

    def request(self, method: str, path: str, payload: Any = None, *, csrf: bool = True,
                headers: dict[str, str] | None = None) -> Reply:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=15,
                                          source_address=(self.client_ip, 0))
        send = dict(headers or {})
        data = None
        if payload is not None:
            data = json.dumps(payload, ensure_ascii=False).encode()
            send.setdefault("Content-Type", "application/json")
        if csrf and self.csrf and method != "GET":
            send["X-CSRF-Token"] = self.csrf
        if self.cookies:
            send["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        try:
            conn.request(method, path, body=data, headers=send)
            resp = conn.getresponse()
            raw = resp.read()
            got = {k.lower(): v for k, v in resp.getheaders()}
            for line in resp.headers.get_all("Set-Cookie") or []:
                self.set_cookie.append(line)
                jar: SimpleCookie = SimpleCookie()
                jar.load(line)
                for name, morsel in jar.items():
                    if morsel.value:
                        self.cookies[name] = morsel.value
                    else:
                        self.cookies.pop(name, None)
        finally:
            conn.close()
        try:
            body = json.loads(raw) if got.get("content-type", "").startswith("application/json") else {}
        except ValueError:
            body = {}
        return Reply(resp.status, body, got, raw)

    def login(self, pin: str) -> Reply:
        reply = self.request("POST", "/api/login", {"pin": pin})
        if reply.status == 200:
            self.csrf = reply.body["csrf"]
        return reply

    def get(self, path: str) -> Reply:
        return self.request("GET", path)

    def post(self, path: str, payload: Any = None, *, csrf: bool = True) -> Reply:
        return self.request("POST", path, {} if payload is None else payload, csrf=csrf)


def client(daemon: Daemon, client_ip: str = "127.0.0.1") -> WebClient:
    host, port = address(daemon)
    return WebClient(host, port, client_ip)


# -- `settleguard demo --keep DIR`: serves the page after the day until Ctrl-C --------------------------------
PAGE_LINE = re.compile(r"till page: (http://127\.0\.0\.1:(\d+)/)")
SERVING_LINE = "Ctrl-C to stop"


def kept_demo(state: Path, *extra: str, timeout: float = 120.0,
              while_serving: Callable[[str, int], None] | None = None) -> tuple[int, str]:
    """Run ``settleguard demo --fast --keep STATE`` as a process; once it says it keeps serving, call
    ``while_serving(host, port)``, then press Ctrl-C (SIGINT). Returns (exit status, all it printed)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "demo", "--fast", "--keep", str(state), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    port = 0
    deadline = SYSTEM_CLOCK.monotonic() + timeout
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            found = PAGE_LINE.search(line)
            if found:
                port = int(found.group(2))
            if SERVING_LINE in line or SYSTEM_CLOCK.monotonic() > deadline:
                break
        if SERVING_LINE in "".join(lines) and while_serving is not None:
            assert port, "the demo printed no till page address"
            while_serving("127.0.0.1", port)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
        lines.append(rest)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, "".join(lines)
