"""``settleguard doctor``: what stands between this till and working alerts, and how to fix it.

(Over 500 lines: one short, independent check per thing that can stand in the way, read top to bottom as the
report prints them; split up, an operator's "what does doctor look at" would need several files.)

Every check is read-only: doctor opens no serial port (that would steal bytes
from the running reader), writes nothing but a probe file in the state
directory, and with ``--network`` only opens a TCP connection to each
channel's host -- it never sends a message.
"""

from __future__ import annotations

import grp
import os
import socket
import stat
import tempfile
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from agent.config import ConfigError, LoadedConfig, SourceConfig, load_config, parse_config
from agent.store.schema import journal_path
from drivers.clock import SYSTEM_CLOCK, Clock

Status = Literal["ok", "warn", "fail", "skip"]
SERVICE_GROUP = "dialout"   # the unit's SupplementaryGroups=: how the service reaches serial ports
MIN_SANE_YEAR = 2024


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_checks(config_path: Path, state_dir: Path, *, network: bool = False, clock: Clock = SYSTEM_CLOCK,
               service_group: str = SERVICE_GROUP, connect_timeout: float = 3.0) -> list[Check]:
    now = clock.now()
    checks: list[Check] = []
    loaded: LoadedConfig | None = None
    try:
        loaded = load_for_doctor(config_path)
        checks.append(Check("config", "ok", f"{config_path}: valid ({len(loaded.config.source)} source(s), "
                                             f"{sum(c.enabled for c in loaded.config.channel)} channel(s))"))
    except ConfigError as exc:
        checks.append(Check("config", "fail", str(exc),
                            f"correct {config_path} (settleguard check-config {config_path} shows the first error)"))
    if loaded is not None:
        for source in loaded.config.source:
            checks.append(check_source(source, service_group))
    checks.append(check_state_dir(state_dir))
    newest = None
    journal = journal_path(state_dir)
    if journal.exists():
        channels = {c.name for c in loaded.config.channel if c.enabled} if loaded is not None else None
        journal_checks, newest = check_journal(journal, channels)
        checks += journal_checks
        checks += check_wires(journal, loaded.tz if loaded is not None else None)
        checks += check_unread(journal, now, loaded.tz if loaded is not None else None)
    else:
        checks.append(Check("journal", "skip", f"no journal yet at {journal} (created on first start)"))
    if loaded is not None:
        checks.append(check_calendar(loaded, now))
    checks.append(check_clock(now, newest))
    checks += check_daemon(state_dir)
    if network and loaded is not None:
        checks += [check_endpoint(name, host, port, connect_timeout) for name, host, port in endpoints(loaded)]
    return checks


CREDENTIALS_RUNTIME = "file:/run/credentials/settleguard.service/"
CREDENTIALS_SOURCE = "file:/etc/settleguard/credentials/"


def load_for_doctor(path: Path) -> LoadedConfig:
    """The service's configuration as the service would see it.

    Secrets given as ``file:/run/credentials/settleguard.service/NAME`` exist only inside the running
    service (LoadCredential=); outside it, read them where the shipped unit loads them from.
    """
    try:
        return load_config(path)
    except ConfigError as exc:
        if Path(CREDENTIALS_RUNTIME[5:]).is_dir():
            raise
        try:
            text = path.read_text(encoding="utf-8")
        except OSError:
            raise exc from None
        if CREDENTIALS_RUNTIME not in text:
            raise
        return parse_config(text.replace(CREDENTIALS_RUNTIME, CREDENTIALS_SOURCE), str(path))


# -- sources -------------------------------------------------------------------------------------
def check_source(source: SourceConfig, service_group: str) -> Check:
    name = f"source {source.name}"
    if source.port:
        if "://" in source.port:
            return Check(name, "skip", f"{source.port} is a network URL; nothing to check on this machine")
        return check_device(name, Path(source.port), service_group)
    if source.spool:
        spool = Path(source.spool)
        if not spool.is_dir():
            return Check(name, "fail", f"spool directory {spool} does not exist", f"mkdir -p {spool}")
        return Check(name, "ok", f"spool directory {spool}")
    if source.file:
        path = Path(source.file)
        if not os.access(path, os.R_OK):
            return Check(name, "fail", f"capture file {path} is not readable", f"check the path {path}")
        return Check(name, "ok", f"capture file {path}")
    return Check(name, "ok", f"TCP pass-through {source.listen} -> {source.forward}")


def check_device(name: str, path: Path, service_group: str) -> Check:
    """Readable and writable by the *service* (a dynamic user in group dialout), not merely by root."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return Check(name, "fail", f"{path} does not exist (adapter unplugged, or the udev name is wrong)",
                     "plug in the adapter; `ls -l /dev/serial/by-id/` shows its stable name; "
                     "install systemd/60-settleguard.rules for /dev/settleguard-*")
    except PermissionError as exc:
        return Check(name, "fail", f"{path}: {exc.strerror}", "run doctor as root to inspect the device")
    real = os.path.realpath(path)
    where = f"{path}" + (f" -> {real}" if real != str(path) else "")
    if not stat.S_ISCHR(st.st_mode):
        return Check(name, "fail", f"{where} is not a character device", "point port = at the serial device")
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    mode = stat.S_IMODE(st.st_mode)
    perms = f"{where} (group {group}, mode {mode:04o})"
    if mode & 0o006 == 0o006:
        return Check(name, "ok", f"{perms}: open to everyone")
    if group == service_group and mode & 0o060 == 0o060:
        return Check(name, "ok", f"{perms}: the service reaches it through group {service_group}")
    return Check(name, "fail", f"{perms}: the service (group {service_group}) cannot read and write it",
                 f"install systemd/60-settleguard.rules (GROUP=\"{service_group}\", MODE=\"0660\"), then "
                 f"`udevadm control --reload && udevadm trigger`, or replug the adapter")


# -- state and journal ---------------------------------------------------------------------------
def check_state_dir(state_dir: Path) -> Check:
    if not state_dir.exists():
        return Check("state directory", "warn", f"{state_dir} does not exist yet",
                     f"systemd creates it on start (StateDirectory=); by hand: mkdir -p {state_dir}")
    if not state_dir.is_dir():
        return Check("state directory", "fail", f"{state_dir} is not a directory", f"remove or rename {state_dir}")
    try:
        with tempfile.NamedTemporaryFile(dir=state_dir, prefix=".doctor-"):
            pass
    except OSError as exc:
        return Check("state directory", "fail", f"{state_dir} is not writable: {exc.strerror}",
                     "run doctor as the service user or root; check the directory's owner")
    return Check("state directory", "ok", f"{state_dir} is writable")


# A channel is reported as failing once a message has been tried this often: one transient 502 waiting for
# its retry is not worth a line, a lock-out that retries for ever is.
FAILING_AFTER_ATTEMPTS = 3


def check_schema(version: int, upgrade_started: bool) -> Check | None:
    """A journal written by another settleguard: older ones are upgraded when the service starts, newer refused."""
    from agent.store.schema import SCHEMA_VERSION

    if version > SCHEMA_VERSION:
        return Check("journal schema", "fail", f"schema {version} is newer than this settleguard's ({SCHEMA_VERSION}):"
                     " the service will not start on it", "install the settleguard that wrote it (or a newer one)")
    if version < SCHEMA_VERSION:
        started = "; its upgrade is under way or was stopped part-way" if upgrade_started else ""
        return Check("journal schema", "warn", f"schema {version}, older than this settleguard's ({SCHEMA_VERSION})"
                     f"{started}", "(re)start the service: it upgrades the journal before it starts watching, "
                     "in steps it keeps if stopped (`systemctl status settleguard` shows how far)")
    return None


def check_journal(path: Path, channels: set[str] | None = None) -> tuple[list[Check], datetime | None]:
    from agent.store.queries import open_read_only
    from agent.store.schema import FILL_MARK, StoreError

    try:
        reader = open_read_only(path)
    except StoreError as exc:
        return [Check("journal", "fail", f"{path}: {exc}", "restore the journal from a backup")], None
    try:
        with reader:
            result = reader.integrity_check()
            schema = check_schema(reader.schema_version(), reader.meta_value(FILL_MARK) is not None)
            newest = reader.latest_transaction()
            dead = reader.dead_letters(None)
            failing = reader.failing_channels()
            quarantine = check_quarantine(reader)
    except StoreError as exc:
        return [Check("journal", "fail", f"{path}: {exc}",
                      "stop the service, move the journal aside and restore a backup")], None
    checks = []
    if result == "ok":
        checks.append(Check("journal", "ok", f"{path}: integrity check passed"))
    else:
        checks.append(Check("journal", "fail", f"{path}: integrity check says {result}",
                            "stop the service, move the journal aside and restore a backup"))
    if schema is not None:
        checks.append(schema)
    if dead:
        last = dead[0]
        checks.append(Check("dead letters", "fail", f"{len(dead)} message(s) were never delivered; last: channel "
                                                    f"{last['channel']}: {last['last_error']}",
                            "fix the channel (key, URL, secret), then look at `settleguard alerts`"))
    else:
        checks.append(Check("dead letters", "ok", "none"))
    for ch in failing:
        if ch["attempts"] < FAILING_AFTER_ATTEMPTS or (channels is not None and ch["channel"] not in channels):
            continue   # (rows of a channel taken out of the config are never sent again: not this check's news)
        checks.append(Check(f"channel {ch['channel']} delivery", "warn",
                            f"{ch['waiting']} message(s) waiting after failed tries (up to {ch['attempts']} each); "
                            f"last error: {ch['last_error']}",
                            "fix what the error names (url, secret, the server's accounts); the messages are kept "
                            "and go out once it works"))
    checks.append(quarantine)
    return checks, newest


# -- dead wires, blind taps, unreadable input (agent/watch/wires.py keeps them in the journal) ---------------
def check_wires(path: Path, tz: tzinfo | None = None) -> list[Check]:
    import json

    from agent.store.queries import open_read_only
    from agent.store.schema import StoreError
    from agent.watch.terminal_clock import META_KEY as CLOCKS_KEY
    from agent.watch.wires import META_KEY

    try:
        with open_read_only(path) as reader:
            raw, clocks = reader.meta_value(META_KEY), reader.meta_value(CLOCKS_KEY)
    except StoreError:
        return []  # the journal check above already says what is wrong with the file
    try:
        state = json.loads(raw) if raw else None
        wrong = json.loads(clocks) if clocks else {}
    except ValueError:
        state, wrong = None, {}
    if not isinstance(state, dict):
        return [Check("wires", "skip", "no dead-wire check has run yet (the daemon runs one every 30 s)")]
    checks: list[Check] = []
    if not state.get("hours"):
        checks.append(Check("wires", "warn", "no [shop.hours]: a source silent all day is not reported",
                            "add the opening hours to [shop.hours] in the configuration"))
    episodes = state.get("episodes") or {}
    for name, ep in sorted(episodes.items()):
        since = datetime.fromisoformat(ep["since"])
        since = since.astimezone(tz) if tz is not None else since
        what = "no bytes at all" if ep["kind"] == "silent" else "bytes, but no transaction"
        minutes = round(float(ep["threshold"]) / 60)
        checks.append(Check(f"source {name}", "fail",
                            f"{what} since {since:%Y-%m-%d %H:%M} (UTC{since:%z}) "
                            f"(more than {minutes} min of opening hours)",
                            "check the cable and power of this source's device (a silent wire), or its receipt "
                            "templates (data but no transactions); this clears itself when transactions come back"))
    errors = state.get("errors") or {}
    for name in sorted(set(state.get("today") or {}) | set(errors)):
        seen = {k: int(v) for k, v in ((state.get("today") or {}).get(name) or {}).items() if v}
        last = f"; last error: {errors[name]}" if name in errors else ""
        if seen or last:
            checks.append(Check(f"source {name}", "warn", "today: " + (", ".join(
                f"{v} {WIRE_COUNTER_NAMES.get(k, k)}" for k, v in sorted(seen.items())) or "no errors") + last,
                "look at `journalctl -u settleguard` for the decoder's reason; a receipt that matches no "
                "template needs a template (settleguard decode shows what was read)"))
    for terminal, offset in sorted(wrong.items()):
        checks.append(Check(f"terminal {terminal}", "warn", f"clock off by {abs(float(offset)) / 3600:.1f} h "
                            f"({'behind' if float(offset) > 0 else 'ahead'}); rules use the corrected time",
                            "set the terminal's date and time"))
    if not episodes and state.get("hours"):
        thresholds = sorted((state.get("thresholds") or {}).items())
        limits = ", ".join(f"{n} {round(float(t) / 60)} min" for n, t in thresholds)
        checks.append(Check("wires", "ok", f"every source delivered within its quiet limit ({limits or 'none'})"))
    return checks


# -- slips seen but not understood (agent/watch/unread.py keeps them in the journal) --------------------------
UNREAD_RECENT = timedelta(days=1)   # still happening: a fail, in the "To fix" list; older: a warning


def check_unread(path: Path, now: datetime, tz: tzinfo | None = None) -> list[Check]:
    """Each layout or template that left slips unread: how many, since when, a masked excerpt, the field."""
    from agent.store.queries import open_read_only
    from agent.store.schema import StoreError
    from agent.watch import unread

    try:
        with open_read_only(path) as reader:
            items = unread.load(reader.meta_value(unread.META_KEY))
    except StoreError:
        return []  # the journal check above already says what is wrong with the file
    if not items:
        return []   # nothing unread ever (or no printer tap at all): nothing to say
    checks = []
    for u in sorted(items.values(), key=lambda u: u.last, reverse=True):
        last = u.last.astimezone(tz) if tz is not None else u.last
        when = f"{u.count} slip(s) from {u.source}, last {last:%Y-%m-%d %H:%M}: \"{u.excerpt}\""
        if u.reason == "missing_field":
            name = f"template {u.template}"
            detail = f"fits but misses the required field {u.field}: {when}"
            fix = (f"correct the pattern of {u.field} in template {u.template} for this layout "
                   "(`settleguard template test TEMPLATE CAPTURE` shows what it extracts)")
        else:
            name = "receipt layout"
            detail = f"looks like a payment slip or sales receipt but no template fits: {when}"
            fix = ("add a template for this layout (`settleguard template suggest CAPTURE` proposes one from a "
                   "capture of it); `settleguard decode` shows the text that was read")
        checks.append(Check(name, "fail" if now - u.last <= UNREAD_RECENT else "warn",
                            detail + " — no rule checked these transactions", fix))
    return checks


WIRE_COUNTER_NAMES = {"unmatched": "receipts matched no template", "decoder_errors": "decoder errors",
                      "bad_frames": "corrupt frames", "quarantined": "events quarantined"}


def check_quarantine(reader: Any) -> Check:
    """Inputs the event boundary refused (drivers/boundary.py): each is a sale nobody checked."""
    total = reader.quarantine_total()
    if not total:
        return Check("quarantine", "ok", "no input refused")
    newest = reader.quarantined(limit=1)
    last = ""
    if newest:
        q = newest[0]
        last = f"; last {q['received']:%Y-%m-%d %H:%M} UTC from {q['source']} ({q['stage']}): {q['reason']}"
    return Check("quarantine", "warn", f"{total} input(s) refused and kept in the journal's quarantine{last}",
                 "look at what the source sends (settleguard decode on a capture shows each refusal); a"
                 " transaction refused here was not checked by any rule")


# -- calendar and clock ----------------------------------------------------------------------------
def check_calendar(loaded: LoadedConfig, now: datetime) -> Check:
    from agent.rules.engine import RuleEngine

    engine = RuleEngine(loaded.tz, loaded.rule_params, hours=loaded.hours)
    warnings = engine.warnings(now)
    if warnings:
        return Check("holiday calendar", "fail", " / ".join(warnings),
                     "pip install -U chinesecalendar (in the settleguard venv), then restart the service")
    if loaded.hours is None or loaded.hours.holidays != "cn":
        return Check("holiday calendar", "skip", "no official holiday calendar configured")
    return Check("holiday calendar", "ok", f"official holidays known for {now.astimezone(loaded.tz).year}")


def check_clock(now: datetime, newest_txn: datetime | None) -> Check:
    if now.year < MIN_SANE_YEAR:
        return Check("clock", "fail", f"the system clock says {now:%Y-%m-%d}",
                     "enable time sync: timedatectl set-ntp true")
    if newest_txn is not None and newest_txn - now > timedelta(days=1):
        return Check("clock", "fail", f"the clock ({now:%Y-%m-%d %H:%M} UTC) is behind the journal's newest "
                                      f"transaction ({newest_txn:%Y-%m-%d %H:%M} UTC)",
                     "fix the time (timedatectl set-ntp true); terminal timestamps get the wrong year otherwise")
    return Check("clock", "ok", f"{now:%Y-%m-%d %H:%M} UTC")


# -- the running daemon ------------------------------------------------------------------------------
def check_daemon(state_dir: Path) -> list[Check]:
    from agent.service.control import request

    sock = state_dir / "control.sock"
    try:
        reply = request(sock, {"cmd": "status"}, timeout=5.0)
    except PermissionError:
        return [Check("daemon", "warn", f"cannot ask the running daemon at {sock}: permission denied",
                      "run doctor as root")]
    except (OSError, ValueError) as exc:
        return [Check("daemon", "warn", f"the daemon at {sock} did not answer: {exc}",
                      "systemctl status settleguard")]
    if reply is None:
        return [Check("daemon", "skip", "no running daemon (decoder and reload figures need one)")]
    if not reply.get("ok"):
        return [Check("daemon", "warn", f"the daemon answered: {reply.get('error')}")]
    checks: list[Check] = []
    problems = reply.get("problems") or []
    if problems:
        checks.append(Check("daemon", "fail", "unhealthy: " + "; ".join(problems),
                            "systemctl restart settleguard; journalctl -u settleguard shows why"))
    else:
        checks.append(Check("daemon", "ok", str(reply.get("status", "running"))))
    for name, src in (reply.get("sources") or {}).items():
        label = f"decoder {name}"
        if src.get("state") in ("waiting", "gone"):
            checks.append(Check(label, "fail", f"device {src.get('state')}: {src.get('detail')}",
                                "check the cable and the port setting"))
        elif src.get("bytes_skipped") or src.get("bad_frames"):
            checks.append(Check(label, "warn", f"skipped {src.get('bytes_skipped')} byte(s), "
                                               f"{src.get('bad_frames')} bad frame(s) of {src.get('events')} "
                                               f"event(s); last: {src.get('decoder_error')}",
                                "check baud rate, parity and protocol for this source"))
        else:
            checks.append(Check(label, "ok", f"{src.get('events')} event(s), nothing skipped"))
    web = reply.get("web") or {}
    if web.get("error"):
        checks.append(Check("till page", "fail", str(web["error"]),
                            "free the port or change [web] listen; the daemon tries again every minute"))
    elif web.get("url"):
        checks.append(Check("till page", "ok", f"serving at {web['url']}"))
    reload = reply.get("reload") or {}
    if reload.get("error"):
        checks.append(Check("last reload", "fail", f"refused, still running the previous configuration: "
                                                   f"{reload['error']}",
                            "correct the file; the daemon picks it up when saved (or systemctl reload)"))
    elif reload.get("count"):
        checks.append(Check("last reload", "ok", f"{reload.get('summary')} at {reload.get('at')}"))
    if not reload.get("watching", True):
        checks.append(Check("config watch", "warn", "the daemon cannot watch the config directory (inotify "
                                                    "limits?)", "after editing, run `systemctl reload "
                                                                "settleguard`, or raise fs.inotify.max_user_watches"))
    return checks + thread_checks(reply) + running_config_checks(reply)


def thread_checks(reply: dict[str, Any]) -> list[Check]:
    """Threads that died: those restarted (warn, with the cause) and those left dead (fail)."""
    threads = reply.get("threads") or {}
    deaths = threads.get("deaths") or []
    given_up = threads.get("given_up") or []
    if given_up:
        last = {d["thread"]: d for d in deaths}
        why = "; ".join(f"{name}: {last.get(name, {}).get('error', '?')}" for name in given_up)
        return [Check("threads", "fail", f"dead and not restarted: {why}",
                      "systemctl restart settleguard; journalctl -u settleguard shows the traceback")]
    if deaths:
        d = deaths[-1]
        return [Check("threads", "warn", f"{len(deaths)} thread death(s) recovered by a restart; last: {d['thread']} "
                                         f"at {d['at']}: {d['error']}",
                      "journalctl -u settleguard shows the traceback; report it if it comes back")]
    return [Check("threads", "ok", "no thread has died")]


def running_config_checks(reply: dict[str, Any]) -> list[Check]:
    """Is the file on disk the configuration that runs? (A refused or failed reload leaves them apart.)"""
    import hashlib

    path, running = reply.get("config"), (reply.get("reload") or {}).get("running_digest")
    if not path or not running or not Path(path).is_file():
        return []  # a configuration built from text (tests, the demo) has no file to compare
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [Check("running config", "warn", f"cannot read {path} to compare: {exc}")]
    if hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16] == running:
        return [Check("running config", "ok", f"the daemon runs {path} as it is on disk")]
    return [Check("running config", "warn", f"the daemon does not run {path} as it is now (the last change was "
                                            "refused or not yet picked up); it runs the configuration before it",
                  f"settleguard check-config {path}; then systemctl reload settleguard")]


# -- channels ---------------------------------------------------------------------------------------
def endpoints(loaded: LoadedConfig) -> list[tuple[str, str, int]]:
    """(channel, host, port) for every enabled channel that talks to the network."""
    from agent.delivery.channels import dingtalk, feishu, wecom

    defaults = {"wecom": wecom.ENDPOINT, "dingtalk": dingtalk.ENDPOINT, "feishu": feishu.ENDPOINT}
    out: list[tuple[str, str, int]] = []
    for ch in loaded.config.channel:
        if not ch.enabled:
            continue
        if ch.type == "printer":
            if ch.printer.get("kind") == "network" and ch.printer.get("host"):
                out.append((ch.name, str(ch.printer["host"]), int(ch.printer.get("port", 9100))))
            continue
        url = urlsplit(ch.url.get_secret_value() if ch.url else defaults.get(ch.type, ""))
        if url.hostname:
            # nats:// and tls:// carry their port already (config adds 4222); ws(s):// go through a web proxy.
            default = {"https": 443, "wss": 443, "http": 80, "ws": 80}.get(url.scheme, 4222)
            out.append((ch.name, url.hostname, url.port or default))
    return out


def check_endpoint(name: str, host: str, port: int, timeout: float) -> Check:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        return Check(f"channel {name}", "fail", f"{host}:{port} does not answer: {exc.strerror or exc}",
                     "check the till's internet connection, DNS and firewall for outbound HTTPS")
    return Check(f"channel {name}", "ok", f"{host}:{port} accepts connections (nothing was sent)")


# -- output -----------------------------------------------------------------------------------------
def failed(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.status == "fail"]


def render_text(checks: list[Check]) -> str:
    """The plain list of what to fix, printed after the table."""
    bad = failed(checks)
    if not bad:
        return "Nothing to fix."
    lines = ["To fix:"]
    for i, c in enumerate(bad, start=1):
        lines.append(f"{i}. {c.name}: {c.detail}")
        if c.fix:
            lines.append(f"   -> {c.fix}")
    return "\n".join(lines)
