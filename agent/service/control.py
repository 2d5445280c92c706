"""The daemon's control socket: ``settleguard ack`` and ``doctor`` talk to a running service.

A Unix stream socket in the state directory (mode 0660, so only the service
user and its group can ack findings), one JSON request line, one JSON reply
line. Requests become pipeline commands, so the pipeline stays the single
writer of the journal.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("settleguard.control")

ALLOWED = {"ack", "status", "review"}
MAX_REQUEST = 64 * 1024


class ControlServer:
    def __init__(self, path: Path, handler: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        self.path = path
        self.handler = handler
        self._stop = threading.Event()
        if path.exists() or path.is_symlink():
            path.unlink()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        os.chmod(path, 0o660)
        self.sock.listen(8)
        self.sock.settimeout(0.5)
        self.thread = threading.Thread(target=self._serve, name="control", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(2.0)
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(5.0)
                try:
                    reply = self._one(conn)
                except Exception as exc:  # a bad client must not take the service down
                    log.warning("control request failed: %s", exc)
                    reply = {"ok": False, "error": str(exc)}
                with contextlib.suppress(OSError):
                    conn.sendall(json.dumps(reply, ensure_ascii=False).encode() + b"\n")

    def _one(self, conn: socket.socket) -> dict[str, Any]:
        buf = b""
        while b"\n" not in buf and len(buf) < MAX_REQUEST:
            chunk = conn.recv(4096)
            if not chunk:
                break
            buf += chunk
        request = json.loads(buf.split(b"\n", 1)[0] or b"{}")
        if not isinstance(request, dict) or request.get("cmd") not in ALLOWED:
            return {"ok": False, "error": f"unknown request (allowed: {', '.join(sorted(ALLOWED))})"}
        return self.handler(request)


def request(path: Path, payload: dict[str, Any], timeout: float = 15.0) -> dict[str, Any] | None:
    """Ask a running daemon; None when no daemon listens there."""
    if not path.exists():
        return None
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        s.close()
        return None
    with s:
        s.sendall(json.dumps(payload, ensure_ascii=False).encode() + b"\n")
        buf = b""
        while b"\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    reply = json.loads(buf.decode() or "{}")
    return reply if isinstance(reply, dict) else {"ok": False, "error": "bad reply"}
