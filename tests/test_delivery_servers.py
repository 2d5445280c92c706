"""Real HTTP servers on 127.0.0.1 for the delivery tests (no tests here, only the servers and a driver).

``ScriptedServer`` answers request number n with whatever ``script(n)`` says:
a status and body (a chat robot's errcode inside a 200), a delay longer than
the client's timeout, a connection reset in the middle of the response, or a
response held open until the test releases it. Every request is recorded
with the *simulated* time it arrived at, so rate limits can be counted per
minute of simulated time.
"""

from __future__ import annotations

import json
import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from agent.config import DeliveryConfig
from agent.delivery.channels.base import Channel
from agent.delivery.channels.http import HttpxSender
from agent.delivery.loop import Delivery
from agent.store.outbox import Outbox
from drivers.clock import Clock
from tests.helpers import Harness, wait_until


@dataclass(frozen=True, slots=True)
class Reply:
    status: int = 200
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0                       # wall seconds before answering (longer than the client timeout)
    hold: threading.Event | None = None      # answer only once the test sets it


@dataclass(frozen=True, slots=True)
class Reset:
    """Start the response, then drop the connection with an RST."""


Action = Reply | Reset


def robot_reply(**fields: Any) -> Reply:
    return Reply(200, json.dumps(fields).encode(), (("Content-Type", "application/json"),))


@dataclass(frozen=True, slots=True)
class Hit:
    n: int
    path: str
    headers: dict[str, str]
    body: bytes
    at: datetime | None                      # simulated time when it arrived

    @property
    def webhook_id(self) -> str:
        return self.headers.get("webhook-id", "")

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class ScriptedServer:
    script: Callable[[int], Action] = lambda n: Reply(204)
    clock: Clock | None = None
    port: int = 0
    hits: list[Hit] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._cond = threading.Condition()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> ScriptedServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # One buffered write per response and no Nagle: otherwise every keep-alive request waits
            # on a delayed ACK and a burst of a hundred messages takes seconds of wall time.
            wbufsize = -1
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with owner._cond:
                    n = len(owner.hits) + 1
                    owner.hits.append(Hit(n, self.path, {k.lower(): v for k, v in self.headers.items()}, body,
                                          owner.clock.now() if owner.clock else None))
                    owner._cond.notify_all()
                action = owner.script(n)
                if isinstance(action, Reset):
                    self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 64\r\n\r\n{\"errc")
                    self.wfile.flush()
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                    self.close_connection = True
                    return
                if action.hold is not None:
                    action.hold.wait(30)
                if action.delay:
                    time.sleep(action.delay)
                try:
                    self.send_response(action.status)
                    for k, v in action.headers:
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(action.body)))
                    self.end_headers()
                    self.wfile.write(action.body)
                except OSError:
                    self.close_connection = True  # the client gave up (timeout) or died: that is the point

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, args=(0.02,), name="scripted-server",
                         daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> ScriptedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def unique(self) -> list[Hit]:
        """What a receiver that deduplicates on webhook-id keeps: the first copy of each, in arrival order."""
        seen: set[str] = set()
        out = []
        for hit in list(self.hits):
            if hit.webhook_id not in seen:
                seen.add(hit.webhook_id)
                out.append(hit)
        return out

    def wait_for(self, count: int, what: str, timeout: float) -> None:
        wait_until(lambda: len(self.hits) >= count, what, timeout=timeout, wakeup=self._cond)


# Every sender and outbox a test opened; close_all() runs after each test (filterwarnings = error
# turns a socket left to the garbage collector into a failure of some later test).
OPEN: list[tuple[HttpxSender, Outbox]] = []


def close_all() -> None:
    while OPEN:
        sender, outbox = OPEN.pop()
        sender.close()
        outbox.close()


def make_delivery(tmp: Path, h: Harness, channels: Sequence[Channel], *, timeout: float = 2.0,
                  config: DeliveryConfig | None = None) -> Delivery:
    """A Delivery on the harness's journal file and simulated clock (the daemon's arrangement)."""
    outbox = Outbox(tmp / "settleguard.sqlite3")
    sender = HttpxSender(timeout=timeout)
    OPEN.append((sender, outbox))
    return Delivery(outbox, list(channels), sender, clock=h.clock,
                    config=config or DeliveryConfig(), shop="测试店", source="settleguard://test/t1",
                    rng=random.Random(7))


def drain(h: Harness, d: Delivery, *, until: datetime | None = None, max_steps: int = 2000) -> None:
    """Run delivery on simulated time, jumping to whenever something may be due (never sleeping)."""
    for _ in range(max_steps):
        wait = d.step()
        if until is None and d.outbox.next_due() is None:
            return
        if until is not None and h.clock.now() >= until:
            return
        step = max(wait, 0.001)
        if until is not None:
            step = min(step, max((until - h.clock.now()).total_seconds(), 0.001))
        h.clock.advance(step)
    raise AssertionError("delivery did not settle within max_steps")


def states(d: Delivery, channel: str | None = None) -> list[str]:
    sql = "SELECT state FROM outbox" + (" WHERE channel=?" if channel else "") + " ORDER BY id"
    return [r[0] for r in d.outbox.conn.execute(sql, (channel,) if channel else ()).fetchall()]
