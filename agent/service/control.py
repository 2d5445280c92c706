"""The daemon's control socket: ``settleguard ack`` and ``doctor`` talk to a running service.

A Unix stream socket in the state directory (mode 0660, so only the service
user and its group can connect), one JSON request line, one JSON reply line.
Requests become pipeline commands, so the pipeline stays the single writer of
the journal.

Nothing a client writes is trusted beyond the schema below: a request is
validated whole (unknown keys, wrong types, over-long text and a missing id are
refused with a reason) before anything reaches the pipeline. Who acted is the
peer's kernel-reported uid (SO_PEERCRED), recorded beside whatever name the
client gives, so "settleguard" or a colleague's name cannot be claimed alone.
Each client gets its own thread and a deadline for its whole request, so a
slow or silent client cannot hold the socket for anyone else.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import socket
import struct
import threading
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from agent.alerts.lifecycle import STAFF_ANSWERS
from drivers.clock import SYSTEM_CLOCK

log = logging.getLogger("settleguard.control")

MAX_REQUEST = 16 * 1024          # one line; an ack with a long note is well under 2 KiB
REQUEST_DEADLINE = 5.0           # seconds for a client to send its whole request line
MAX_CLIENTS = 16                 # connections served at once; more are told to retry
# A real client (``settleguard ack``, doctor) sends its whole line at once: one whose line is still
# incomplete after this long is stalling, and gives up its slot when every slot is taken.
STALLED_AFTER = 0.25
MIN_SHORT_CODE = 4               # shortest alert id prefix accepted (``alerts`` shows 12 characters)


def _plain_text(value: str | None) -> str | None:
    """Printable text that SQLite and every log can hold: no control characters, no lone surrogates."""
    if value is None:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs") for ch in value):
        raise ValueError("must not contain control characters")
    return value


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class AckRequest(_Request):
    cmd: Literal["ack"]
    # An alert id (26 Crockford base32 characters) or a unique prefix of one.
    id: str = Field(min_length=MIN_SHORT_CODE, max_length=26, pattern=r"^[0-9A-Za-z]+$")
    answer: str
    by: str | None = Field(default=None, max_length=64)      # the name the person gives (recorded beside the uid)
    note: str | None = Field(default=None, max_length=500)

    @field_validator("answer")
    @classmethod
    def _answer(cls, v: str) -> str:
        if v not in STAFF_ANSWERS:
            raise ValueError(f"must be one of {', '.join(STAFF_ANSWERS)}")
        return v

    @field_validator("by", "note")
    @classmethod
    def _text(cls, v: str | None) -> str | None:
        return _plain_text(v)


class StatusRequest(_Request):
    cmd: Literal["status"]


class ReviewRequest(_Request):
    cmd: Literal["review"]


Request = Annotated[AckRequest | StatusRequest | ReviewRequest, Field(discriminator="cmd")]
_REQUEST = TypeAdapter(Request)


@dataclass(frozen=True, slots=True)
class Peer:
    pid: int
    uid: int
    gid: int

    @property
    def user(self) -> str:
        try:
            return pwd.getpwuid(self.uid).pw_name
        except KeyError:
            return f"uid{self.uid}"


def peer_of(conn: socket.socket) -> Peer:
    """The connecting process as the kernel saw it at connect(2) (Linux SO_PEERCRED)."""
    raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return Peer(pid, uid, gid)


def actor_label(user: str, uid: int, claimed: str | None) -> str:
    """What the alert log records as the actor: the authenticated user, and the name given, if another.

    Always carries "(uid N)", so it can never read as settleguard's own actors ("settleguard",
    "terminal", "printer").
    """
    label = f"{user} (uid {uid})"
    claimed = (claimed or "").strip()
    return f"{label} as {claimed}" if claimed and claimed != user else label


def local_actor(claimed: str | None) -> str:
    """The actor for this process's own user (the offline ``ack``)."""
    uid = os.getuid()
    return actor_label(Peer(os.getpid(), uid, os.getgid()).user, uid, claimed)


class RequestError(ValueError):
    """A request refused before it reached the daemon; str() is the reason sent back."""


def parse_request(line: bytes) -> AckRequest | StatusRequest | ReviewRequest:
    """One request line, validated whole; RequestError says what is wrong with it."""
    try:
        data = json.loads(line)
    except (ValueError, RecursionError) as exc:
        raise RequestError(f"not a JSON request: {exc}") from None
    if not isinstance(data, dict):
        raise RequestError("a request is one JSON object")
    try:
        return _REQUEST.validate_python(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'request'}: {e['msg']}"
                             for e in exc.errors(include_url=False, include_input=False))
        raise RequestError(f"bad request ({problems})") from None


class ControlServer:
    def __init__(self, path: Path, handler: Callable[[dict[str, Any]], dict[str, Any]], *,
                 deadline: float = REQUEST_DEADLINE, max_clients: int = MAX_CLIENTS) -> None:
        self.path = path
        self.handler = handler
        self.deadline = deadline
        self._stop = threading.Event()
        self._slots = threading.BoundedSemaphore(max_clients)
        self._clients: dict[threading.Thread, socket.socket] = {}
        self._incomplete: dict[socket.socket, float] = {}   # connection -> when it connected (monotonic)
        self._clients_lock = threading.Lock()
        if path.exists() or path.is_symlink():
            path.unlink()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        os.chmod(path, 0o660)
        self.sock.listen(max_clients)
        self.sock.settimeout(0.5)
        self.thread = threading.Thread(target=self._serve, name="control", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(2.0)
        self.sock.close()
        with self._clients_lock:
            clients = dict(self._clients)
        for conn in clients.values():
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)   # a client mid-request must not hold up the stop
        for t in clients:
            t.join(self.deadline)
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
            if not self._slots.acquire(blocking=False) and not self._evict_stalled():
                with conn:
                    _send(conn, {"ok": False, "error": BUSY})
                continue
            t = threading.Thread(target=self._client, args=(conn,), name="control-client", daemon=True)
            with self._clients_lock:
                self._clients[t] = conn
                self._incomplete[conn] = SYSTEM_CLOCK.monotonic()
            t.start()

    def _evict_stalled(self) -> bool:
        """Every slot is taken: cut off the longest-stalled incomplete request and take its slot.

        Without this, 16 connections that never finish a line (reconnecting every 5 s) would keep
        ``settleguard ack`` out for as long as they liked. A request already read is never cut off.
        """
        now = SYSTEM_CLOCK.monotonic()
        with self._clients_lock:
            stalled = [(since, c) for c, since in self._incomplete.items() if now - since >= STALLED_AFTER]
        if not stalled:
            return False
        _, victim = min(stalled, key=lambda pair: pair[0])
        with self._clients_lock:
            self._incomplete.pop(victim, None)
        with contextlib.suppress(OSError):
            victim.shutdown(socket.SHUT_RDWR)
        return self._slots.acquire(timeout=self.deadline)

    def _client(self, conn: socket.socket) -> None:
        try:
            with conn:
                try:
                    reply = self._one(conn)
                except RequestError as exc:
                    reply = {"ok": False, "error": str(exc)}
                except Exception as exc:  # a bad client must not take the service down
                    log.warning("control request failed: %s: %s", type(exc).__name__, exc)
                    reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                _send(conn, reply)
        finally:
            self._slots.release()
            with self._clients_lock:
                self._clients.pop(threading.current_thread(), None)
                self._incomplete.pop(conn, None)

    def _one(self, conn: socket.socket) -> dict[str, Any]:
        peer = peer_of(conn)
        line = _read_line(conn, self.deadline)
        with self._clients_lock:
            self._incomplete.pop(conn, None)
        request = parse_request(line)
        args: dict[str, Any] = request.model_dump()
        if isinstance(request, AckRequest):
            args["id"] = request.id.upper()   # Crockford base32 is case-insensitive
            args["by"] = actor_label(peer.user, peer.uid, request.by)
        return self.handler(args)


def _read_line(conn: socket.socket, deadline: float) -> bytes:
    """The request line, within ``deadline`` seconds for all of it and at most MAX_REQUEST bytes."""
    end = SYSTEM_CLOCK.monotonic() + deadline
    buf = b""
    while b"\n" not in buf:
        left = end - SYSTEM_CLOCK.monotonic()
        if left <= 0:
            raise RequestError(f"request not complete within {deadline:g} s")
        conn.settimeout(left)
        try:
            chunk = conn.recv(4096)
        except TimeoutError:
            raise RequestError(f"request not complete within {deadline:g} s") from None
        if not chunk:
            break
        buf += chunk
        if len(buf) > MAX_REQUEST and b"\n" not in buf[:MAX_REQUEST]:
            raise RequestError(f"request longer than {MAX_REQUEST} bytes")
    line = buf.split(b"\n", 1)[0]
    if len(line) > MAX_REQUEST:
        raise RequestError(f"request longer than {MAX_REQUEST} bytes")
    if not line.strip():
        raise RequestError("empty request")
    return line


def _send(conn: socket.socket, reply: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):
        conn.settimeout(REQUEST_DEADLINE)
        conn.sendall(json.dumps(reply, ensure_ascii=False, default=str).encode() + b"\n")


BUSY = "the daemon is busy with other clients; try again"


def request(path: Path, payload: dict[str, Any], timeout: float = 15.0) -> dict[str, Any] | None:
    """Ask a running daemon; None when no daemon listens there. A busy daemon is asked again until
    ``timeout``: its slots free up as stalled clients are cut off."""
    end = SYSTEM_CLOCK.monotonic() + timeout
    while True:
        try:
            reply = _request_once(path, payload, max(0.5, end - SYSTEM_CLOCK.monotonic()))
        except (BrokenPipeError, ConnectionResetError):
            reply = {"ok": False, "error": BUSY}   # closed on us while every slot was taken
        if reply is None or reply.get("error") != BUSY or SYSTEM_CLOCK.monotonic() >= end:
            return reply
        time.sleep(0.1)


def listening(path: Path) -> bool:
    """Whether a daemon accepts connections on this control socket right now (nothing is sent)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2.0)
    try:
        s.connect(str(path))
    except OSError:
        return False
    finally:
        s.close()
    return True


def _request_once(path: Path, payload: dict[str, Any], timeout: float) -> dict[str, Any] | None:
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
