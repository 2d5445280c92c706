"""``settleguard`` command line (DESIGN.md "Command line" is the public contract).

Exit codes: 0 ok, 1 runtime failure, 2 usage, 65 bad input data, 78 bad configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agent import __version__
from agent.config import EX_CONFIG, ConfigError, load_config, system_zone

EX_OK, EX_FAIL, EX_USAGE, EX_DATAERR = 0, 1, 2, 65
DEFAULT_CONFIG = "/etc/settleguard/settleguard.toml"
DEFAULT_STATE = "/var/lib/settleguard"


def _err(message: str) -> None:
    print(f"settleguard: {message}", file=sys.stderr)


def _zone(name: str | None) -> ZoneInfo | None:
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise SystemExit(_usage(f"unknown time zone {name!r}")) from None


def _usage(message: str) -> int:
    _err(message)
    return EX_USAGE


def state_dir(arg: str | None) -> Path:
    return Path(arg or os.environ.get("STATE_DIRECTORY", "").split(":")[0] or DEFAULT_STATE)


# -- decode ------------------------------------------------------------------------------------
def cmd_decode(args: argparse.Namespace) -> int:
    from agent.sources import SniffingDecoder
    from drivers.events import event_to_json
    from drivers.protocols import UnknownProtocol, make_decoder

    tz = _zone(args.tz) or system_zone()
    path = Path(args.file)
    try:
        data = sys.stdin.buffer.read() if args.file == "-" else path.read_bytes()
    except OSError as exc:
        _err(f"{args.file}: {exc.strerror}")
        return EX_DATAERR if isinstance(exc, FileNotFoundError) else EX_FAIL
    if args.hex or path.suffix == ".hex":
        # Hex dumps ("10 02 04 0f ...", as logic analysers and the test vectors store them).
        try:
            data = bytes.fromhex(data.decode("ascii", errors="strict"))
        except (UnicodeDecodeError, ValueError) as exc:
            _err(f"{args.file}: not a hex dump ({exc}); drop --hex to read raw bytes")
            return EX_DATAERR
    # A capture's year is placed relative to when it was taken; the file's mtime is the best witness.
    received = (datetime.fromtimestamp(path.stat().st_mtime, UTC) if args.file != "-" else datetime.now(UTC))
    options = {}
    for item in args.option or []:
        key, sep, raw = item.partition("=")
        if not sep:
            return _usage(f"--option takes KEY=VALUE (got {item!r})")
        try:
            options[key] = json.loads(raw)
        except ValueError:
            options[key] = raw
    try:
        decoder = (SniffingDecoder(tz=tz, source="auto", **options) if args.protocol == "auto"
                   else make_decoder(args.protocol, tz=tz, source=args.protocol, **options))
    except UnknownProtocol as exc:
        return _usage(str(exc))
    except TypeError as exc:
        return _usage(f"bad decoder option: {exc}")
    events = decoder.feed(data, received) + decoder.flush(received)
    out = sys.stdout
    for ev in events:
        if args.text:
            if ev.type == "receipt":
                for line in ev.lines:  # type: ignore[union-attr]
                    out.write(line + "\n")
                out.write("\n")
            continue
        if ev.type == "receipt" and not args.receipts:
            continue
        out.write(event_to_json(ev) + "\n")
    stats = decoder.stats
    if stats.bytes_skipped or stats.bad_frames:
        _err(f"{args.file}: skipped {stats.bytes_skipped} byte(s), {stats.bad_frames} bad frame(s)"
             + (f" — {stats.last_error}" if stats.last_error else ""))
    if not events and data:
        _err(f"{args.file}: no events decoded as {args.protocol}")
        return EX_DATAERR
    return EX_OK


# -- simulate ----------------------------------------------------------------------------------
def cmd_simulate(args: argparse.Namespace) -> int:
    import time

    from agent.sim.day import build_day
    from agent.sim.terminal import PtyTerminal, play, write_file

    tz = _zone(args.tz) or ZoneInfo("Asia/Shanghai")
    try:
        events = build_day(args.scenario, seed=args.seed, tz=tz, count=args.count)
    except ValueError as exc:
        return _usage(str(exc))
    if args.out:
        with open(args.out, "wb") as fh:
            n = write_file(fh, events, args.protocol)
        if args.labels:
            with open(args.labels, "w", encoding="utf-8") as lf:
                for e in events:
                    lf.write(json.dumps({"at": e.at.isoformat(), "label": e.label, "reprint": e.reprint,
                                         "voucher_no": getattr(e.event, "voucher_no", None)}) + "\n")
        print(f"wrote {n} events ({args.protocol}) to {args.out}", file=sys.stderr)
        return EX_OK
    if args.pty:
        term = PtyTerminal()
        print(term.device, flush=True)
        print(f"simulated terminal on {term.device}; start the agent on it, playing in {args.wait:g}s",
              file=sys.stderr)
        time.sleep(args.wait)
        try:
            play(events, term.write, args.protocol, speed=args.speed)
            time.sleep(1.0)  # let the reader drain before the master closes
        finally:
            term.close()
        return EX_OK
    if args.port:
        from drivers.transport import open_serial_writer

        writer = open_serial_writer(args.port, baudrate=args.baudrate)
        try:
            play(events, writer.write, args.protocol, speed=args.speed)
        finally:
            writer.close()
        return EX_OK
    return _usage("simulate needs one of --pty, --port DEV or --out FILE")


# -- run -----------------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    from agent.service.daemon import Daemon
    from agent.service.logs import setup_logging

    setup_logging(args.log_level)
    try:
        loaded = load_config(args.config)
    except ConfigError as exc:
        _err(str(exc))
        return EX_CONFIG
    daemon = Daemon(loaded, state_dir(args.state))
    return daemon.run_forever()


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        loaded = load_config(args.file)
    except ConfigError as exc:
        _err(str(exc))
        return EX_CONFIG
    cfg = loaded.config
    print(f"{args.file}: ok — {len(cfg.source)} source(s), {len(cfg.channel)} channel(s), "
          f"{sum(1 for p in loaded.rule_params.values() if p.enabled)} rule(s) enabled, zone {loaded.tz}")
    return EX_OK


# -- alerts --------------------------------------------------------------------------------------
def cmd_alerts(args: argparse.Namespace) -> int:
    from agent.service.daemon import journal_path
    from agent.store.journal import Journal

    path = journal_path(state_dir(args.state))
    if not path.exists():
        _err(f"no journal at {path} (is the state directory right? --state DIR)")
        return EX_FAIL
    journal = Journal(path)
    try:
        alerts = journal.alerts(states=("open", "escalated") if args.open else None)
        dead = journal.conn.execute("SELECT channel, kind, alert_id, last_error, updated FROM outbox"
                                    " WHERE state='dead' ORDER BY id").fetchall()
        zone = loaded_zone(args)
    finally:
        journal.close()
    if args.json:
        for a in alerts:
            print(json.dumps(a.to_dict(), ensure_ascii=False))
        return EX_OK
    from rich.console import Console
    from rich.table import Table

    from agent.units import format_money

    table = Table(title="settleguard alerts", show_lines=True)
    table.add_column("id", no_wrap=True)
    table.add_column("rule / state", no_wrap=True)
    table.add_column("voucher", no_wrap=True)
    table.add_column("why / 原因", ratio=1)
    for a in alerts:
        t = a.transactions[-1] if a.transactions else None
        when = t.time.astimezone(zone).strftime("%m-%d %H:%M") if t and t.time else ""
        what = (f"{t.voucher_no or t.receipt_no or '-'}\n{format_money(t.amount_minor, t.currency)}\n{when}"
                if t else "")
        table.add_row(a.id[:12], f"{a.rule} {a.severity}\n{a.state} (rev {a.revision})", what,
                      f"{a.reason_zh}\n{a.reason}")
    console = Console()
    console.print(table)
    if dead:
        console.print(f"{len(dead)} message(s) could not be delivered (dead letters); fix the channel, then see"
                      " `settleguard doctor`:")
        for row in dead[:20]:
            console.print(f"  {row['updated']}  {row['channel']}  {row['kind']}  alert {row['alert_id'] or '-'}:"
                          f" {row['last_error']}", highlight=False)
    return EX_OK


def loaded_zone(args: argparse.Namespace) -> ZoneInfo | Any:
    """The shop's zone from --config when it loads, else the system zone (for display only)."""
    config = getattr(args, "config", None)
    if config and Path(config).exists():
        try:
            return load_config(config).tz
        except ConfigError:
            pass
    return system_zone()


# -- replay ------------------------------------------------------------------------------------------
def cmd_replay(args: argparse.Namespace) -> int:
    from rich.console import Console

    from agent.alerts.report import alert_line, notification_json, summary_table
    from agent.replay import decode_captures, replay

    try:
        loaded = load_config(args.config)
    except ConfigError as exc:
        _err(str(exc))
        return EX_CONFIG
    tz = _zone(args.tz) or loaded.tz
    protocol = args.protocol or (loaded.config.source[0].protocol if loaded.config.source else "auto")
    paths = [Path(p) for p in args.captures]
    for p in paths:
        if not p.is_file():
            _err(f"{p}: no such capture file")
            return EX_DATAERR
    try:
        events, stats = decode_captures(paths, protocol, tz)
    except ValueError as exc:
        return _usage(str(exc))
    if not events:
        _err("no events decoded from " + ", ".join(map(str, paths)) + f" as {protocol}")
        return EX_DATAERR
    err_console = Console(stderr=True)
    out_console = Console(highlight=False)

    def listener(item: object) -> None:
        if args.json:
            line = notification_json(item)
            if line is not None:
                sys.stdout.write(line + "\n")
        else:
            out_console.print(alert_line(item, loaded.tz))

    result = replay(loaded, events, state=Path(args.state) if args.state else None, listener=listener)
    (err_console if args.json else out_console).print(summary_table(result, stats))
    return EX_OK


# -- ack ---------------------------------------------------------------------------------------------
def cmd_ack(args: argparse.Namespace) -> int:
    """Through the running daemon's control socket; with no daemon, straight into the journal."""
    from agent.service.control import request

    sdir = state_dir(args.state)
    payload = {"cmd": "ack", "id": args.id, "voided": args.voided, "by": args.by or os.environ.get("USER") or "staff",
               "note": args.note}
    try:
        reply = request(sdir / "control.sock", payload)
    except OSError as exc:
        _err(f"cannot reach the daemon at {sdir / 'control.sock'}: {exc}")
        return EX_FAIL
    if reply is None:
        reply = _ack_offline(args, sdir, payload)
        if reply is None:
            return EX_CONFIG
    if not reply.get("ok"):
        _err(str(reply.get("error", "failed")))
        return EX_FAIL
    alert = reply["alert"]
    print(f"alert {alert['id']} ({alert['rule']}) is now {alert['state']} (revision {alert['revision']}),"
          f" recorded as {payload['by']}")
    return EX_OK


def _ack_offline(args: argparse.Namespace, sdir: Path, payload: dict[str, Any]) -> dict[str, Any] | None:
    from agent.messages import Command
    from agent.pipeline import Pipeline
    from agent.service.daemon import journal_path, wall_clock
    from agent.store.journal import Journal

    path = journal_path(sdir)
    if not path.exists():
        return {"ok": False, "error": f"no journal at {path} and no daemon running (--state DIR?)"}
    try:
        loaded = load_config(args.config)
    except ConfigError as exc:
        _err(str(exc))
        return None
    from agent.delivery.channels.factory import build_channels, routing

    channels = build_channels(loaded.config, tz=loaded.tz, path=loaded.path)
    journal = Journal(path)
    try:
        # Same code path as the daemon: the outbox rows written here go out when the daemon starts.
        primary, people = routing(loaded.config, channels)
        pipeline = Pipeline(loaded, journal, clock=wall_clock, channels=primary, people_channels=people)
        reply: dict[str, Any] = pipeline._handle_command_tx(Command("ack", {k: v for k, v in payload.items()
                                                                                if k != "cmd"}))
    finally:
        journal.close()
    return reply


# -- doctor ------------------------------------------------------------------------------------------
def cmd_doctor(args: argparse.Namespace) -> int:
    from agent.service.doctor import render_text, run_checks

    checks = run_checks(Path(args.config), state_dir(args.state), network=args.network)
    bad = [c for c in checks if c.status == "fail"]
    if args.json:
        print(json.dumps({"ok": not bad, "checks": [c.to_dict() for c in checks]}, ensure_ascii=False, indent=2))
        return EX_FAIL if bad else EX_OK
    from rich.console import Console
    from rich.table import Table

    style = {"ok": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}
    table = Table(title="settleguard doctor")
    for col in ("check", "status", "detail"):
        table.add_column(col, overflow="fold")
    for c in checks:
        table.add_row(c.name, f"[{style[c.status]}]{c.status}[/]", c.detail)
    console = Console(highlight=False)
    console.print(table)
    print(render_text(checks))
    return EX_FAIL if bad else EX_OK


# -- demo ------------------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    from agent.service.logs import setup_logging
    from agent.sim.demo import run_demo

    setup_logging("WARNING", journald=False)
    return run_demo(fast=args.fast, protocol=args.protocol, keep=args.keep)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="settleguard", description="Flags suspicious card transactions before the "
                                "batch settles, while a void (撤销) is still possible.")
    p.add_argument("--version", action="version", version=f"settleguard {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="the daemon (systemd runs this)")
    r.add_argument("--config", default=DEFAULT_CONFIG)
    r.add_argument("--state", help="state directory (default $STATE_DIRECTORY, else /var/lib/settleguard)")
    r.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    r.set_defaults(func=cmd_run)

    d = sub.add_parser("demo", help="everything on the embedded default, on a simulated terminal")
    d.add_argument("--fast", action="store_true", help="finish in seconds")
    d.add_argument("--protocol", default="cn_ecr", choices=["jsonl", "zvt", "cn_ecr", "escpos"],
                   help="what the simulated terminal speaks")
    d.add_argument("--keep", metavar="DIR", help="keep the state directory (journal, evidence) in DIR")
    d.set_defaults(func=cmd_demo)

    s = sub.add_parser("simulate", help="play a simulated shop day as a terminal would send it")
    s.add_argument("--protocol", default="jsonl", choices=["jsonl", "zvt", "cn_ecr", "escpos"])
    g = s.add_mutually_exclusive_group()
    g.add_argument("--pty", action="store_true", help="open a pty pair and print the device path")
    g.add_argument("--port", help="write to a serial port (pyserial URL)")
    g.add_argument("--out", help="write the bytes to a file")
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--speed", type=float, default=600.0, help="simulated seconds per real second (0 = flat out)")
    s.add_argument("--scenario", default="demo", help="demo | clean | mixed")
    s.add_argument("--count", type=int, help="ordinary sales in the day (clean/mixed)")
    s.add_argument("--tz", help="shop time zone (default Asia/Shanghai)")
    s.add_argument("--labels", help="with --out: write the anomaly labels as JSON lines here")
    s.add_argument("--baudrate", type=int, default=9600)
    s.add_argument("--wait", type=float, default=2.0, help="with --pty: seconds to wait before playing")
    s.set_defaults(func=cmd_simulate)

    dc = sub.add_parser("decode", help="decode a capture file to event JSON lines")
    dc.add_argument("--protocol", required=True, help="zvt | cn_ecr | jsonl | escpos | auto")
    dc.add_argument("--tz", help="zone for terminal timestamps (default: the system zone)")
    dc.add_argument("--text", action="store_true", help="print the decoded receipt text instead")
    dc.add_argument("--receipts", action="store_true", help="also print receipt events")
    dc.add_argument("--hex", action="store_true", help="the file is a hex dump (default for *.hex)")
    dc.add_argument("--option", action="append", metavar="KEY=VALUE",
                    help="decoder option, e.g. verify_lrc=false or lrc_init=127 (cn_ecr), transport=serial (zvt)")
    dc.add_argument("file")
    dc.set_defaults(func=cmd_decode)

    cc = sub.add_parser("check-config", help="validate a configuration file")
    cc.add_argument("file")
    cc.set_defaults(func=cmd_check_config)

    rp = sub.add_parser("replay", help="run the full pipeline on captures, on simulated time; sends nothing")
    rp.add_argument("--config", required=True)
    rp.add_argument("--protocol", help="zvt | cn_ecr | jsonl | escpos | auto (default: the first source's)")
    rp.add_argument("--tz", help="zone for terminal timestamps (default: the config's)")
    rp.add_argument("--json", action="store_true", help="alert lifecycle as JSON lines on stdout")
    rp.add_argument("--state", help="keep the replay journal here (default: a temporary directory)")
    rp.add_argument("captures", nargs="+", metavar="CAPTURE")
    rp.set_defaults(func=cmd_replay)

    ak = sub.add_parser("ack", help="mark an alert as legitimate or voided (recorded with who and when)")
    ak.add_argument("id", help="alert id (a unique prefix is enough)")
    which = ak.add_mutually_exclusive_group(required=True)
    which.add_argument("--legit", action="store_true", help="the transaction is fine: dismiss the alert")
    which.add_argument("--voided", action="store_true", help="staff voided it on the terminal")
    ak.add_argument("--by", help="who acknowledges (default: $USER)")
    ak.add_argument("--note", help="why, in a few words")
    ak.add_argument("--state")
    ak.add_argument("--config", default=DEFAULT_CONFIG, help="used only when no daemon is running")
    ak.set_defaults(func=cmd_ack)

    al = sub.add_parser("alerts", help="list alerts from the journal")
    al.add_argument("--open", action="store_true")
    al.add_argument("--json", action="store_true")
    al.add_argument("--state")
    al.add_argument("--config", default=DEFAULT_CONFIG, help="for the shop's time zone (optional)")
    al.set_defaults(func=cmd_alerts)

    dr = sub.add_parser("doctor", help="check ports, permissions, config, journal, clock and endpoints")
    dr.add_argument("--config", default=DEFAULT_CONFIG)
    dr.add_argument("--state", help="state directory (default $STATE_DIRECTORY, else /var/lib/settleguard)")
    dr.add_argument("--network", action="store_true",
                    help="also open a TCP connection to each channel's host (never sends a message)")
    dr.add_argument("--json", action="store_true")
    dr.set_defaults(func=cmd_doctor)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EX_OK


if __name__ == "__main__":
    sys.exit(main())
