"""The till page: a Flask app over the daemon, served by waitress (agent/web/server.py).

Reads go to the journal through a read-only connection per request (``JournalReader``): the page
can never write the journal, and a slow phone never holds the pipeline's connection. Every change
(an answer) goes to the pipeline thread as a command, exactly as the control socket's ``ack``
does, so the pipeline stays the journal's single writer and the alert book decides.

Routes (the README documents the API):

  GET  /                          the page (sign-in form when not signed in)
  POST /api/login                 {"pin"} -> session cookie, {"name", "role", "csrf"}
  POST /api/logout
  GET  /api/me
  GET  /api/alerts?state=open|closed&days=N
  GET  /api/alerts/<code>         the alert and its history (the alert log)
  GET  /api/alerts/<code>/evidence  the evidence bundle as a zip
  POST /api/alerts/<code>/answer  {"answer": "voided|refunded|legit", "note"}
  GET  /api/batch
"""

from __future__ import annotations

import io
import ipaddress
import logging
import queue
import re
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, g, jsonify, render_template, request, send_file
from pydantic import ValidationError

from agent.alerts.book import SHOW_CANDIDATES
from agent.alerts.lifecycle import ACTIVE_STATES, FINAL_STATES, STAFF_ANSWERS
from agent.config import LoadedConfig, WebConfig
from agent.service.control import AckRequest
from agent.store.queries import JournalReader, open_read_only
from agent.store.schema import StoreError
from agent.web.auth import Gate, LockedOut, Person, Session, csrf_ok
from agent.web.view import ANSWER_LABELS, alert_view, batch_view, urgency
from drivers.clock import Clock

log = logging.getLogger("settleguard.web")

COOKIE = "sg_session"
CSRF_HEADER = "X-CSRF-Token"
MAX_BODY = 8 * 1024                 # a sign-in or an answer with a note is well under 1 KiB
CLOSED_DAYS = 3                     # "answered alerts of the last days" on the page
MAX_DAYS = 31
ASK_TIMEOUT = 10.0                  # seconds the pipeline may take to answer a command
# The alert book's refusals (AlertBook.ack "reason") as HTTP: the lifecycle's are conflicts with the alert's state.
REFUSAL_STATUS = {"not_found": 404, "ambiguous": 409, "refused": 403, "conflict": 409}
# What the page accepts as an alert reference in a URL: a short code or an alert id (Crockford base32).
CODE = re.compile(r"^[0-9A-Za-z]{4,26}$")


@dataclass
class Till:
    """What the page needs from the running daemon (tests and the demo pass the real one's)."""

    loaded: Callable[[], LoadedConfig]                    # the configuration running now (reloads included)
    journal: Path
    evidence_dir: Path
    ask: Callable[..., Any]                               # ask("ack", timeout=..., **args) -> reply dict
    status: Callable[[], dict[str, Any]]                  # the daemon's status() (sources, health)
    clock: Clock
    _reported: tuple[str, ...] = field(default=(), init=False, repr=False)   # PIN problems last logged

    def web(self) -> WebConfig:
        web = self.loaded().config.web
        if web is None:   # the server is stopped when [web] goes; a request in flight meets this
            raise ApiError(503, "网页已关闭 / the page is switched off")
        return web

    def people(self) -> list[Person]:
        """Who may sign in now. PINs given as env:/file: are read here, each sign-in (preflight checked they
        read at start): one person's PIN file gone unreadable locks out that person, not the whole shop."""
        web = self.web()
        staff, problems = web.readable_staff()
        people = [Person(s.name, s.role, s.pin.get_secret_value()) for s in staff]
        # Two people whose references now read to one PIN could not be told apart: neither may sign in.
        pins = Counter(p.pin for p in people)
        for p in people:
            if pins[p.pin] > 1:
                problems.append(f"{p.name} has the same PIN as someone else")
        people = [p for p in people if pins[p.pin] == 1]
        self._report(problems)
        if web.staff and not people:
            raise ApiError(503, "PIN 设置有误，请联系店长 / staff PINs cannot be read")
        return people

    def _report(self, problems: list[str]) -> None:
        # Once per change, not per sign-in: a phone retrying must not flood the journal of the service.
        key = tuple(problems)
        if key != self._reported:
            self._reported = key
            for problem in problems:
                log.warning("till page: web.%s; this person cannot sign in until it is fixed", problem)
            if not problems:
                log.info("till page: every staff PIN reads again")


# What a link may name: a short code or an id (anything else opens the page without a focus).
_FOCUS = re.compile(r"[0-9A-Za-z]{4,26}")


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def create_app(till: Till, gate: Gate) -> Flask:
    app = Flask(__name__, static_folder="static", template_folder="templates")
    app.config.update(MAX_CONTENT_LENGTH=MAX_BODY, JSON_AS_ASCII=False)
    app.json.ensure_ascii = False  # type: ignore[attr-defined]

    @contextmanager
    def reader() -> Iterator[JournalReader]:
        try:
            with open_read_only(till.journal) as r:
                yield r
        except StoreError as exc:
            log.error("the till page cannot read the journal: %s", exc)
            raise ApiError(503, "暂时读不到记录，请稍后再试 / cannot read the journal right now") from None

    def current() -> Session | None:
        return gate.session(request.cookies.get(COOKIE))

    def signed_in() -> Session:
        s = current()
        if s is None:
            raise ApiError(401, "请先登录 / please sign in")
        g.session = s
        return s

    def body() -> dict[str, Any]:
        # JSON only: a cross-site HTML form cannot send application/json without a CORS preflight,
        # which this server never grants (the sign-in has no CSRF token yet; this is its guard).
        if not request.is_json:
            raise ApiError(415, "请求须为 JSON / send application/json")
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            raise ApiError(400, "请求须为一个 JSON 对象 / the body is one JSON object")
        return data

    @app.before_request
    def _host() -> None:
        # DNS rebinding: a web page a phone opens elsewhere could point its own domain name at the till
        # and drive this API from the phone's browser (guessing PINs, among others). Phones reach the
        # till by its address (public_url), so a Host that is a name other than public_url's or
        # localhost is refused; an IP literal cannot be rebound.
        host = (request.host or "").rsplit(":", 1)[0].strip("[]").lower()
        if host in allowed_hosts() or _is_ip(host):
            return
        log.warning("web: request for host %r from %s refused", host[:80], request.remote_addr)
        raise ApiError(421, "请用收银台页面的地址访问 / use the till page's own address")

    def allowed_hosts() -> set[str]:
        url = till.web().public_url
        named = {urlsplit(url).hostname or ""} if url else set()
        return {"localhost", *named} - {""}

    @app.before_request
    def _csrf() -> None:
        if request.method != "POST" or request.path == "/api/login":
            return
        s = signed_in()
        if not csrf_ok(s, request.headers.get(CSRF_HEADER)):
            log.warning("web: %s %s from %s refused: missing or wrong CSRF token", request.method, request.path,
                        request.remote_addr)
            raise ApiError(403, "页面已过期，请刷新 / stale page: reload it (CSRF token missing or wrong)")

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> tuple[Response, int, dict[str, str]]:
        return jsonify({"ok": False, "error": exc.message}), exc.status, exc.headers

    @app.errorhandler(404)
    def _not_found(exc: Exception) -> tuple[Response, int]:
        return jsonify({"ok": False, "error": "没有这个页面 / not found"}), 404

    @app.errorhandler(405)
    def _method(exc: Exception) -> tuple[Response, int]:
        return jsonify({"ok": False, "error": "不支持此操作 / method not allowed"}), 405

    @app.errorhandler(413)
    def _too_big(exc: Exception) -> tuple[Response, int]:
        return jsonify({"ok": False, "error": "请求太大 / request too large"}), 413

    @app.after_request
    def _headers(resp: Response) -> Response:
        # Nothing here is meant to be framed, cached by a shared cache, or load anything from elsewhere.
        resp.headers.setdefault("Content-Security-Policy",
                                "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("Referrer-Policy", "no-referrer")
        resp.headers.setdefault("Cache-Control", "no-store")
        return resp

    # -- the page --------------------------------------------------------------------------------
    @app.get("/")
    def page() -> str:
        return _page(focus="")

    @app.get("/a/<code>")
    def alert_page(code: str) -> str:
        """The link every message carries ({public_url}/a/{code}): the page, that alert brought forward."""
        return _page(focus=code.upper() if _FOCUS.fullmatch(code) else "")

    def _page(*, focus: str) -> str:
        loaded = till.loaded()
        s = current()
        return render_template("page.html", shop=loaded.config.shop.name, till=loaded.config.shop.till,
                               session=s, answers=ANSWER_LABELS, legit_needs=till.web().legit_needs, focus=focus)

    # -- sign-in ---------------------------------------------------------------------------------
    @app.post("/api/login")
    def login() -> tuple[Response, int]:
        pin = body().get("pin")
        if not isinstance(pin, str) or not pin:
            raise ApiError(400, "请输入 PIN / enter your PIN")
        client = request.remote_addr or "?"
        try:
            # A PIN that is not digits cannot be anyone's: it still counts as a wrong try.
            s = gate.sign_in(pin if len(pin) <= 64 else "", till.people(), client)
        except LockedOut as exc:
            log.warning("web sign-in from %s refused: locked out for %d s more", client, exc.retry_after)
            raise ApiError(429, f"错误次数太多，请 {max(1, exc.retry_after // 60)} 分钟后再试 / "
                                f"too many wrong PINs: try again in {exc.retry_after} s",
                           {"Retry-After": str(exc.retry_after)}) from None
        if s is None:
            raise ApiError(401, "PIN 不对 / wrong PIN")
        resp = jsonify({"ok": True, "name": s.name, "role": s.role, "csrf": s.csrf})
        web = till.web()
        # HttpOnly: page scripts never see the session. SameSite=Strict: no other site's page can
        # make a phone's browser send it. Not Secure: the page is plain http on the shop's LAN (a
        # till has no certificate a phone would trust), and a Secure cookie would never be sent back.
        resp.set_cookie(COOKIE, s.token, httponly=True, samesite="Strict", path="/",
                        max_age=int(web.session_max.total_seconds()))
        return resp, 200

    @app.post("/api/logout")
    def logout() -> Response:
        gate.sign_out(request.cookies.get(COOKIE))
        resp = jsonify({"ok": True})
        resp.delete_cookie(COOKIE, path="/", httponly=True, samesite="Strict")
        return resp

    @app.get("/api/me")
    def me() -> Response:
        s = signed_in()
        return jsonify({"ok": True, "name": s.name, "role": s.role, "csrf": s.csrf,
                        "legit_needs": till.web().legit_needs})

    # -- alerts ----------------------------------------------------------------------------------
    @app.get("/api/alerts")
    def alerts() -> Response:
        s = signed_in()
        loaded = till.loaded()
        now = till.clock.now()
        which = request.args.get("state", "open")
        with reader() as r:
            if which == "open":
                items = sorted(r.alerts_data(ACTIVE_STATES, limit=500), key=urgency)
            elif which == "closed":
                days = _days(request.args.get("days"))
                items = r.alerts_data(FINAL_STATES, updated_since=now - timedelta(days=days), limit=500)
            else:
                raise ApiError(400, "state 须为 open 或 closed / state must be open or closed")
        return jsonify({"ok": True, "now": now.astimezone(loaded.tz).isoformat(),
                        "alerts": [alert_view(a, loaded, s.role) for a in items]})

    @app.get("/api/alerts/<code>")
    def one_alert(code: str) -> Response:
        s = signed_in()
        loaded = till.loaded()
        with reader() as r:
            data = _resolve(r, code)
            history = [{**h, "at": h["at"].astimezone(loaded.tz).isoformat()} for h in r.alert_history(data["id"])]
        return jsonify({"ok": True, "now": till.clock.now().astimezone(loaded.tz).isoformat(),
                        "alert": alert_view(data, loaded, s.role), "history": history})

    @app.get("/api/alerts/<code>/evidence")
    def evidence(code: str) -> Response:
        signed_in()
        with reader() as r:
            data = _resolve(r, code)
        bundle = (data.get("evidence") or {}).get("bundle")
        if not bundle:
            raise ApiError(404, "此告警没有证据包 / this alert has no evidence bundle")
        folder = _inside(till.evidence_dir, Path(bundle))
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(folder.rglob("*")):
                # Only regular files inside the bundle: a symlink planted there leads nowhere else.
                if path.is_file() and not path.is_symlink() and _within(till.evidence_dir, path):
                    zf.write(path, f"{folder.name}/{path.relative_to(folder)}")
        buf.seek(0)
        return send_file(buf, mimetype="application/zip", as_attachment=True, download_name=f"{folder.name}.zip")

    @app.post("/api/alerts/<code>/answer")
    def answer(code: str) -> tuple[Response, int]:
        s: Session = g.session
        data = body()
        answer, note = data.get("answer"), data.get("note")
        if isinstance(note, str):
            note = note.strip() or None
        unknown = set(data) - {"answer", "note"}
        if unknown:
            raise ApiError(400, f"不认识的字段 / unknown field(s): {', '.join(sorted(unknown))}")
        if answer not in STAFF_ANSWERS:
            raise ApiError(400, f"answer 须为 {' / '.join(STAFF_ANSWERS)} 之一 / answer must be one of "
                                f"{', '.join(STAFF_ANSWERS)}")
        # Who may answer what ([web] legit_needs) is the alert book's to decide, for the page and ack alike;
        # a missing reason is caught here only to say so as a bad request rather than a refusal.
        if answer == "legit" and not note:
            raise ApiError(400, "请写明为什么是正常交易 / say why it is genuine (a reason is required)")
        with reader() as r:
            alert_id = _resolve(r, code)["id"]
        # The control socket's own checks (text, lengths, no control characters), then who and what role.
        try:
            AckRequest.model_validate({"cmd": "ack", "id": alert_id, "answer": answer, "note": note})
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                                 for e in exc.errors(include_url=False, include_input=False))
            raise ApiError(400, f"请求有误 / bad request ({problems})") from None
        try:
            reply = till.ask("ack", timeout=ASK_TIMEOUT, id=alert_id, answer=answer, by=s.name, note=note,
                             role=s.role)
        except queue.Empty:
            # The answer is queued and will still be applied: say so, or a second tap meets a 409.
            raise ApiError(503, "系统忙，回复已排队；请稍后刷新查看，勿重复提交 / settleguard is busy: the answer is "
                                "queued — refresh in a moment to see it, do not send it again") from None
        if not isinstance(reply, dict) or not reply.get("ok"):
            why = reply.get("error") if isinstance(reply, dict) else None
            log.info("web answer %s on %s by %s refused: %s", answer, alert_id, s.name, why)
            status = REFUSAL_STATUS.get(str(reply.get("reason")) if isinstance(reply, dict) else "", 409)
            raise ApiError(status, str(why or "未能处理 / not done"))
        log.info("web answer %s on %s by %s (%s)", answer, alert_id, s.name, s.role)
        loaded = till.loaded()
        return jsonify({"ok": True, "alert": alert_view(reply["alert"], loaded, s.role)}), 200

    # -- the batch -------------------------------------------------------------------------------
    @app.get("/api/batch")
    def batch() -> Response:
        signed_in()
        loaded = till.loaded()
        status = till.status()
        with reader() as r:
            view = batch_view(r, loaded, status, till.clock.now())
        return jsonify({"ok": True, **view})

    return app


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _days(text: str | None) -> int:
    if text is None:
        return CLOSED_DAYS
    if not re.fullmatch(r"[0-9]{1,3}", text) or not 1 <= int(text) <= MAX_DAYS:   # isdigit() takes "²"
        raise ApiError(400, f"days 须为 1 到 {MAX_DAYS} / days must be 1 to {MAX_DAYS}")
    return int(text)


def _resolve(r: JournalReader, code: str) -> dict[str, Any]:
    """The alert a URL names, as AlertBook.find resolves it: a full id, an active alert's short code (any
    case), or an unambiguous prefix of an id or code; several candidates are a 409 listing them."""
    if not CODE.fullmatch(code):
        raise ApiError(404, f"没有告警 {code[:32]} / no such alert")
    wanted = code.upper()
    found = r.alert_data(wanted)
    if found is not None:
        return found
    active = r.alerts_with_code(wanted, states=ACTIVE_STATES)
    candidates, total = (active, 1) if len(active) == 1 else r.alerts_starting(wanted, limit=SHOW_CANDIDATES)
    if total > 1:
        listed = "; ".join(f"{c or '-'} {alert_id} ({state})" for alert_id, c, state in candidates)
        raise ApiError(409, f"{code} 对应 {total} 条告警 / matches {total} alerts: {listed}")
    found = r.alert_data(candidates[0][0]) if candidates else None
    if found is None:
        raise ApiError(404, f"没有告警 {code} / no such alert")
    return found


def _within(root: Path, path: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except (ValueError, OSError):
        return False
    return True


def _inside(root: Path, folder: Path) -> Path:
    """``folder`` when it is a directory inside ``root``: the page serves evidence and nothing else."""
    if not _within(root, folder) or folder.resolve() == root.resolve() or not folder.is_dir():
        log.warning("web: evidence path %s is not a bundle under %s; not served", folder, root)
        raise ApiError(404, "证据包不在证据目录中 / the evidence bundle is not there")
    return folder.resolve()
