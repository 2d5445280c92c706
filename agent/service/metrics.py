"""Prometheus metrics on a loopback port (or a LAN one with an allow-list), text exposition format 0.0.4.

Off unless ``[metrics] listen = "127.0.0.1:9477"``; ``listen = "10.1.2.3:9477"`` with ``allow = [...]``
lets a chain's central Prometheus scrape, and anyone else gets 403. Every sample carries the till's
``shop_id`` and ``till_id`` labels, so a central scrape or federation tells the tills apart. The format is a few lines
of text, so it is written here rather than pulling in prometheus_client. Each
scrape takes a fresh :class:`Snapshot` from the daemon (counters read from the
threads that own them, journal figures from a read-only SQLite connection), so
serving a scrape never touches the pipeline's state.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from agent.watch import unread
from agent.watch.wires import META_KEY as WIRES_KEY

log = logging.getLogger("settleguard.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True, slots=True)
class SourceSample:
    name: str
    events_decoded: int
    bytes_skipped: int
    bad_frames: int
    reconnects: int
    seconds_since_last_event: float


@dataclass(frozen=True, slots=True)
class JournalSample:
    alerts: dict[tuple[str, str], int] = field(default_factory=dict)   # (rule, state) -> count
    outbox_pending: int = 0
    outbox_oldest_pending_seconds: float = 0.0
    outbox_dead: int = 0
    wires: dict[str, Any] = field(default_factory=dict)   # agent/watch/wires.py's state (episodes, today's counters)
    quarantined: int = 0      # inputs the event boundary refused, ever (meta 'quarantine_total')
    unread: dict[tuple[str, str, str], int] = field(default_factory=dict)   # (template, field, reason) -> slips


@dataclass(frozen=True, slots=True)
class Snapshot:
    sources: tuple[SourceSample, ...]
    journal: JournalSample
    delivery_failures: dict[str, int]
    identity: tuple[str, str] | None = None   # (shop_id, till_id): labels on every sample


def read_journal(path: Path, now: datetime) -> JournalSample:
    """Alert and outbox figures from a read-only connection (the pipeline stays the only writer)."""
    from agent.store.queries import open_read_only

    if not path.exists():
        return JournalSample()
    with open_read_only(path) as reader:
        alerts = reader.alert_counts()
        outbox = reader.outbox_stats(now)
        wires = _wire_state(reader.meta_value(WIRES_KEY))
        quarantined = reader.quarantine_total()
        unread_items = unread.load(reader.meta_value(unread.META_KEY))
    return JournalSample(alerts=alerts, outbox_pending=outbox["pending"],
                         outbox_oldest_pending_seconds=outbox["oldest_pending_seconds"], outbox_dead=outbox["dead"],
                         wires=wires, quarantined=quarantined,
                         unread={(u.template or "", u.field or "", u.reason): u.count for u in unread_items.values()})


def _wire_state(text: str | None) -> dict[str, Any]:
    try:
        state = json.loads(text) if text else {}
    except ValueError:
        return {}
    return state if isinstance(state, dict) else {}


def _wire_families(wires: dict[str, Any]) -> list[str]:
    """Dead wires, blind taps and unreadable input, per source (agent/watch/wires.py)."""
    episodes = wires.get("episodes") or {}
    names = sorted(set(wires.get("thresholds") or {}) | set(episodes) | set(wires.get("today") or {}))
    lines = _family("settleguard_source_quiet", "gauge",
                    "1 while a source has sent no bytes (kind=silent) or no transaction (kind=blind) for longer "
                    "than its limit in opening hours.",
                    ((_labels(source=n, kind=kind), int(episodes.get(n, {}).get("kind") == kind))
                     for n in names for kind in ("silent", "blind")))
    lines += _family("settleguard_source_quiet_limit_seconds", "gauge",
                     "Opening-hours quiet after which a source is reported.",
                     ((_labels(source=n), float(t)) for n, t in sorted((wires.get("thresholds") or {}).items())))
    today = wires.get("today") or {}
    for key, help_text in (("unmatched", "Receipts seen today that matched no template."),
                           ("decoder_errors", "Decoder exceptions and unreadable spool jobs today."),
                           ("quarantined", "Events quarantined today.")):
        lines += _family(f"settleguard_source_{key}_today", "gauge", help_text,
                         ((_labels(source=n), int((today.get(n) or {}).get(key, 0))) for n in sorted(today)))
    return lines


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _family(name: str, kind: str, help_text: str, samples: Iterable[tuple[str, float]]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    lines += [f"{name}{labels} {_number(value)}" for labels, value in samples]
    return lines


def render(snap: Snapshot) -> str:
    src = snap.sources
    lines: list[str] = []
    lines += _family("settleguard_events_decoded_total", "counter", "Events decoded from each source.",
                     ((_labels(source=s.name), s.events_decoded) for s in src))
    lines += _family("settleguard_bytes_skipped_total", "counter",
                     "Bytes a decoder skipped as garbage or unknown framing.",
                     ((_labels(source=s.name), s.bytes_skipped) for s in src))
    lines += _family("settleguard_bad_frames_total", "counter", "Frames refused (bad checksum, bad length).",
                     ((_labels(source=s.name), s.bad_frames) for s in src))
    lines += _family("settleguard_reconnects_total", "counter", "Times a source's device was opened again.",
                     ((_labels(source=s.name), s.reconnects) for s in src))
    lines += _family("settleguard_seconds_since_last_event", "gauge",
                     "Seconds since a source last produced an event (since start when none yet).",
                     ((_labels(source=s.name), round(s.seconds_since_last_event, 3)) for s in src))
    j = snap.journal
    lines += _family("settleguard_alerts", "gauge", "Alerts in the journal by rule and state.",
                     ((_labels(rule=rule, state=state), n) for (rule, state), n in sorted(j.alerts.items())))
    lines += _family("settleguard_outbox_pending", "gauge", "Messages waiting to be delivered.",
                     [("", j.outbox_pending)])
    lines += _family("settleguard_outbox_oldest_pending_seconds", "gauge",
                     "Age of the oldest undelivered message.", [("", round(j.outbox_oldest_pending_seconds, 3))])
    lines += _family("settleguard_outbox_dead", "gauge", "Messages that could not be delivered (dead letters).",
                     [("", j.outbox_dead)])
    lines += quarantine_lines(j)
    lines += _family("settleguard_receipts_unread_total", "counter",
                     "Slips that looked like a payment or a sale but gave no event, by template, missing field "
                     "and reason (no_template, missing_field); empty labels where none applies.",
                     ((_labels(template=t, field=f, reason=r), n) for (t, f, r), n in sorted(j.unread.items())))
    lines += _family("settleguard_delivery_failures_total", "counter", "Failed delivery attempts per channel.",
                     ((_labels(channel=c), n) for c, n in sorted(snap.delivery_failures.items())))
    lines += _wire_families(j.wires)
    if snap.identity is not None:
        ids = _labels(shop_id=snap.identity[0], till_id=snap.identity[1])[1:-1]
        lines = [line if line.startswith("#") else _with_labels(line, ids) for line in lines]
    return "\n".join(lines) + "\n"


def _with_labels(sample: str, labels: str) -> str:
    """``name{a="1"} 2`` -> ``name{<labels>,a="1"} 2`` (a metric name holds neither "{" nor " ")."""
    cut = min(i for i in (sample.find("{"), sample.find(" ")) if i >= 0)
    if sample[cut] == "{":
        return f"{sample[:cut + 1]}{labels},{sample[cut + 1:]}"
    return f"{sample[:cut]}{{{labels}}}{sample[cut:]}"


def allowed(client: str, networks: tuple[Any, ...]) -> bool:
    """Whether a scraper's address is in the allow-list (an IPv4 client on an IPv6 socket counts as IPv4)."""
    try:
        address = ipaddress.ip_address(client.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in net for net in networks if net.version == address.version)


def quarantine_lines(j: JournalSample) -> list[str]:
    return _family("settleguard_quarantined_total", "counter",
                   "Inputs the event boundary refused and kept in the journal's quarantine.", [("", j.quarantined)])


def parse_listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


class MetricsServer:
    """A tiny HTTP server answering ``GET /metrics`` from ``collect()``."""

    def __init__(self, listen: str, collect: Callable[[], Snapshot], *, allow: tuple[Any, ...] = ()) -> None:
        host, port = parse_listen(listen)
        self.collect = collect
        self.allow = allow     # networks ([metrics] allow); empty: no list (loopback only, by the config)
        self.refused = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if owner.allow and not allowed(str(self.client_address[0]), owner.allow):
                    owner.refused += 1
                    self.send_error(403, "not in [metrics] allow")
                    return
                if self.path.split("?", 1)[0] not in ("/metrics", "/"):
                    self.send_error(404, "only /metrics here")
                    return
                try:
                    body = render(owner.collect()).encode()
                except Exception as exc:  # a scrape error is the scraper's problem, not the daemon's
                    log.warning("metrics scrape failed: %s", exc)
                    self.send_error(500, "metrics unavailable")
                    return
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return  # one line per scrape would flood the journal

        family = ThreadingHTTPServer.address_family
        if ":" in host:
            import socket

            family = socket.AF_INET6

        class Server(ThreadingHTTPServer):
            address_family = family
            daemon_threads = True

        self.server = Server((host, port), Handler)
        self.address = f"{host}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.25},
                                       name="metrics", daemon=True)

    def start(self) -> None:
        self.thread.start()
        log.info("metrics on http://%s/metrics", self.address)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(2.0)
