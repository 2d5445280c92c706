"""The till page's server: waitress in one thread the daemon owns, like the metrics and control threads.

waitress is a pure-Python WSGI server built on its own asyncore loop with a small pool of worker
threads: ``create_server`` binds now (a busy port is an error at start, not a silent thread
death), ``run()`` serves in our thread, ``close()`` ends it. The daemon watches ``thread`` and
restarts the server like its other threads (agent/service/daemon.py).
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any

from waitress import wasyncore
from waitress.server import create_server

from agent.config import WebConfig
from agent.web.app import Till, create_app
from agent.web.auth import Gate
from drivers.transports.tcp import parse_host_port

log = logging.getLogger("settleguard.web")

# A shop has a few phones; four workers keep one slow phone from holding up the others.
THREADS = 4


def _bound(host: str, port: int) -> socket.socket:
    family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(64)
    except BaseException:
        sock.close()
        raise
    return sock


class WebServer:
    def __init__(self, web: WebConfig, till: Till, gate: Gate | None = None) -> None:
        host, port = parse_host_port(web.listen)
        # Sessions outlive a restart of the server thread (the gate is the daemon's), not of the process.
        self.gate = gate or Gate(till.clock, idle=web.session_idle.total_seconds(),
                                 longest=web.session_max.total_seconds())
        self.app = create_app(till, self.gate)
        self.listen = web.listen
        # Binds here: OSError (port in use, address not on this machine) reaches the caller. We bind the
        # socket ourselves and hand it to waitress, because a create_server that fails to bind leaves its
        # own socket and wake-up pipe open (the daemon retries a busy port every minute: a leak each time).
        sock = _bound(host, port)
        try:
            self.server: Any = create_server(self.app, sockets=[sock], threads=THREADS,
                                             ident="settleguard", clear_untrusted_proxy_headers=True,
                                             channel_timeout=30, cleanup_interval=10)
        except BaseException:
            sock.close()
            raise
        self.thread = threading.Thread(target=self._serve, name="web", daemon=True)
        self._closing = False

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.server.effective_host, self.server.effective_port
        return str(host), int(port)

    def url(self) -> str:
        host, port = self.address
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"

    def start(self) -> WebServer:
        self.thread.start()
        host, port = self.address
        log.info("till page on http://%s:%d/", host, port)
        return self

    def _serve(self) -> None:
        try:
            self.server.run()
        except Exception:
            if not self._closing:   # stop() closes sockets under the loop: an error then is the expected end
                raise

    def stop(self, timeout: float = 5.0) -> None:
        """Stop listening, close every connection, end the workers; the loop thread ends within a second."""
        self._closing = True
        self.server.task_dispatcher.shutdown(timeout=timeout)
        wasyncore.close_all(self.server._map)
        self.thread.join(timeout)
