"""NATS JetStream: one CloudEvent per notice on ``settleguard.<shop_id>.<till_id>.<kind>`` (issue 19).

A machine channel (``groups = False``): the delivery loop hands it one notice per message, strictly in
order, and marks the outbox row sent only after the JetStream PubAck. The header ``Nats-Msg-Id`` is the
outbox message id (= the CloudEvent id, stable across retries and restarts), so a message re-sent after
a crash between the server's ack and the outbox mark is dropped by the server as a duplicate within the
stream's ``duplicate_window``: at least once from the till, exactly once in the stream.

The delivery loop is synchronous; nats-py is asyncio. The channel runs nats-py on an event loop of its own
(one daemon thread, started at the first send, so building a channel for check-config or replay connects
to nothing). ``send()`` submits one coroutine and waits at most ``timeout``: connecting, making the
stream and waiting for the ack all fit in that budget. The client reconnects by itself; a send while it
is away is a retry, never a wait.

What is permanent (dead letter) and what is a retry:

* permanent only when the same bytes can never be accepted: a notice no CloudEvent carries, a ``source``
  that is no ``settleguard://<shop>/<till>`` of slugs (no subject can be made of it), a message over the
  server's ``max_payload`` or the stream's ``max_msg_size``;
* everything else is a retry, *including refused credentials and a missing stream*: both are fixed by a
  person (the password, ``create_stream``, the server's config) while the till keeps running, and the
  backlog must then flow by itself. A dead letter would lose it from the stream. The reason says what
  to fix, and the delivery loop's deadline still hands an overdue alert to a fallback channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
import threading
from collections.abc import Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from agent.delivery import cloudevents
from agent.delivery.channels.base import Channel, HttpSender, Notice, Outcome, RateLimit, dumps
from agent.identity import SLUG_RE

log = logging.getLogger("settleguard.delivery.nats")

SUBJECT_ROOT = "settleguard"
STREAM_SUBJECTS = ["settleguard.>"]
MSG_ID_HEADER = "Nats-Msg-Id"
# JetStream API error codes (nats-server's server/errors.json) this channel tells apart.
ERR_MSG_TOO_BIG = 10054          # "message size exceeds maximum allowed"
ERR_EXPECTED_STREAM = 10060      # "expected stream does not match"
# A server that refused our credentials is asked again no sooner than this: a person must act first.
AUTH_RETRY = 60.0
_SOURCE = re.compile(r"settleguard://([^/]+)/([^/]+)")


@dataclass(frozen=True, slots=True)
class NatsAuth:
    """How the channel logs in (at most one way, checked by agent/config.py); secrets already read."""

    user: str | None = None
    password: str | None = None
    token: str | None = None
    nkey_seed: str | None = None
    creds: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_verify: bool = True

    def tls_context(self, servers: Sequence[str]) -> ssl.SSLContext | None:
        """A TLS context when a server is ``tls://`` (or ``wss://``) or any TLS file is given; else None.

        Raises ValueError naming the file that cannot be used (at configuration time, not at the first alert).
        """
        wanted = any(s.startswith(("tls://", "wss://")) for s in servers)
        if not (wanted or self.tls_ca or self.tls_cert):
            return None
        try:
            context = ssl.create_default_context(cafile=self.tls_ca)
            if self.tls_cert:
                context.load_cert_chain(self.tls_cert, self.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"TLS files: {exc}") from None
        if not self.tls_verify:
            # For a test server's self-signed certificate only; the README says so.
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """The stream this channel creates when it is missing (``create_stream = true``)."""

    name: str = "SETTLEGUARD"
    create: bool = False
    max_age: timedelta | None = None
    max_bytes: int | None = None
    duplicate_window: timedelta = timedelta(hours=1)


class NatsChannel(Channel):
    type = "nats"
    groups = False
    limits: tuple[RateLimit, ...] = ()   # JetStream acks are the flow control; no documented rate

    def __init__(self, name: str, *, servers: Sequence[str], stream: StreamLimits | None = None,
                 auth: NatsAuth | None = None, timeout: float = 10.0, public_url: str | None = None,
                 connect_name: str | None = None) -> None:
        if not servers:
            raise ValueError(f"channel {name}: a nats channel needs url")
        self.name = name
        self.servers = list(servers)
        self.stream = stream or StreamLimits()
        self.auth = auth or NatsAuth()
        self.timeout = timeout
        self.public_url = public_url
        self.connect_name = connect_name or f"settleguard {name}"
        self._tls = self.auth.tls_context(self.servers)   # a bad file is a configuration error now
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._nc: Any = None            # nats.aio.client.Client, on the channel's loop only
        self._js: Any = None
        self._stream_checked = False    # create_stream: looked for (or made) the stream on this connection
        self._last_error: str | None = None   # the client's last asynchronous error (auth, permissions)
        # Sticky until a login succeeds: after refusing us the server drops the connection, and the
        # client's next error ("connection reset") must not hide why.
        self._auth_refused = False
        self._connecting = False     # the last publish's time ran out while connecting, not awaiting the PubAck
        self._closed = False

    # -- the delivery thread's side --------------------------------------------------------------
    def send(self, notice: Notice, *, message_id: str, now: datetime, sender: HttpSender) -> Outcome:
        why_not = cloudevents.refuse(notice)
        if why_not is not None:
            return Outcome.permanent(f"nats {self.name}: {why_not}")
        subject = self.subject(notice)
        if subject is None:
            return Outcome.permanent(f"nats {self.name}: source {notice.source!r} is not settleguard://<shop id>/"
                                     f"<till id> with slug ids, so no subject can be made of it")
        body = dumps(cloudevents.cloudevent(notice, message_id, public_url=self.public_url))
        if self._closed:
            return Outcome.retry(None, f"nats {self.name}: channel closed (reloading)")
        loop = self._running_loop()
        future = asyncio.run_coroutine_threadsafe(self._publish(subject, body, message_id), loop)
        try:
            return future.result(timeout=self.timeout)
        except FutureTimeout:   # the loop itself was too busy to answer in time: classified here
            future.cancel()
            return self._classify(TimeoutError())

    def subject(self, notice: Notice) -> str | None:
        """``settleguard.<shop_id>.<till_id>.<kind>``, or None when the notice has no such identity."""
        kind = cloudevents.subject_kind(notice)
        m = _SOURCE.fullmatch(notice.source)
        if kind is None or m is None or not all(SLUG_RE.fullmatch(part) for part in m.groups()):
            return None
        return f"{SUBJECT_ROOT}.{m.group(1)}.{m.group(2)}.{kind}"

    def close(self, timeout: float = 5.0) -> None:
        """Drain and close the connection and stop the loop thread (a reload builds a new channel)."""
        self._closed = True
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._close(), loop).result(timeout=timeout)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._start_lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()
                self._thread = threading.Thread(target=self._run_loop, args=(loop, ready), daemon=True,
                                                name=f"nats-{self.name}")
                self._thread.start()
                ready.wait()
                self._loop = loop
            return self._loop

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        try:
            loop.run_forever()
        finally:
            loop.close()

    # -- the channel's own loop ------------------------------------------------------------------
    async def _publish(self, subject: str, body: bytes, message_id: str) -> Outcome:
        try:
            # A little under the delivery thread's wait, so the answer is classified here, not cut off.
            budget = max(self.timeout - 0.25, self.timeout * 0.8)
            return await asyncio.wait_for(self._publish_once(subject, body, message_id), budget)
        except Exception as exc:   # every failure is classified; none escapes to the delivery loop
            return self._classify(exc)

    async def _publish_once(self, subject: str, body: bytes, message_id: str) -> Outcome:
        import nats.js.errors

        self._connecting = True
        try:
            js = await self._connected()
        except Exception:
            # Said by its own error; only a cancellation (the time ran out) leaves the flag for _classify.
            self._connecting = False
            raise
        self._connecting = False
        max_payload = self._nc.max_payload
        if max_payload and len(body) > max_payload:
            return Outcome.permanent(f"nats {self.name}: a {len(body)}-byte message is over the server's "
                                     f"max_payload of {max_payload} bytes")
        if self.stream.create and not self._stream_checked:
            await self._ensure_stream(js)
        try:
            ack = await js.publish(subject, body, timeout=self.timeout, stream=self.stream.name,
                                   headers={MSG_ID_HEADER: message_id})
        except nats.js.errors.NoStreamResponseError:
            # The stream may have been deleted under a running channel: look again before the next try.
            self._stream_checked = False
            raise
        self._last_error = None
        if ack.duplicate:
            # The server already had this id (a re-send after a crash or a lost ack): it is in the stream.
            return Outcome.ok(f"already in stream {ack.stream} (duplicate of seq {ack.seq})")
        return Outcome.ok(f"stream {ack.stream} seq {ack.seq}")

    async def _connected(self) -> Any:
        if self._nc is not None and not self._nc.is_closed:
            if not self._nc.is_connected:
                # The client is reconnecting by itself; a publish now would only sit in its buffer.
                raise ConnectionError(f"reconnecting ({self._last_error or 'connection lost'})")
            return self._js
        import nats

        self._stream_checked = False
        self._nc = await nats.connect(
            servers=self.servers, name=self.connect_name, connect_timeout=max(1, int(self.timeout)),
            allow_reconnect=True, max_reconnect_attempts=-1, reconnect_time_wait=1,
            error_cb=self._on_error, disconnected_cb=self._on_disconnected, reconnected_cb=self._on_reconnected,
            tls=self._tls, user=self.auth.user, password=self.auth.password, token=self.auth.token,
            nkeys_seed_str=self.auth.nkey_seed, user_credentials=self.auth.creds,
        )
        self._js = self._nc.jetstream(timeout=self.timeout)
        self._auth_refused = False
        log.info("nats %s: connected to %s", self.name, self._nc.connected_url.netloc.rpartition("@")[2])
        return self._js

    async def _ensure_stream(self, js: Any) -> None:
        import nats.js.errors
        from nats.js.api import StorageType, StreamConfig

        try:
            await js.stream_info(self.stream.name)   # there: its limits belong to whoever made it
        except nats.js.errors.NotFoundError:
            limits = self.stream
            await js.add_stream(StreamConfig(
                name=limits.name, subjects=STREAM_SUBJECTS, storage=StorageType.FILE,
                max_age=limits.max_age.total_seconds() if limits.max_age else None,
                max_bytes=limits.max_bytes, duplicate_window=limits.duplicate_window.total_seconds()))
            log.info("nats %s: created stream %s (subjects %s)", self.name, limits.name, STREAM_SUBJECTS[0])
        self._stream_checked = True

    async def _close(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.close()

    async def _on_error(self, exc: Exception) -> None:
        self._last_error = _describe(exc)
        if _is_auth(exc):
            self._auth_refused = True

    async def _on_disconnected(self) -> None:
        if not self._closed:
            log.warning("nats %s: disconnected; reconnecting", self.name)

    async def _on_reconnected(self) -> None:
        self._stream_checked = False
        self._auth_refused = False
        log.info("nats %s: reconnected", self.name)

    def _classify(self, exc: BaseException) -> Outcome:
        import nats.errors
        import nats.js.errors

        name = f"nats {self.name}"
        if isinstance(exc, nats.errors.MaxPayloadError):
            return Outcome.permanent(f"{name}: message over the server's max_payload ({exc})")
        if isinstance(exc, nats.js.errors.APIError) and exc.err_code == ERR_MSG_TOO_BIG:
            return Outcome.permanent(f"{name}: stream {self.stream.name} refuses a message this big "
                                     f"(max_msg_size): {exc.description}")
        text = _describe(exc)
        if _is_auth(exc) or self._auth_refused:
            # A person must fix the credentials (or the server's accounts); nothing here is lost meanwhile.
            return Outcome.retry(AUTH_RETRY, f"{name}: NATS 拒绝登录 (authorization refused): check user/"
                                             f"password, token, nkey_seed or creds of this channel ({text})")
        if isinstance(exc, nats.js.errors.NoStreamResponseError | nats.errors.NoRespondersError):
            fix = "" if self.stream.create else " (set create_stream = true, or create it on the server)"
            return Outcome.retry(None, f"{name}: no JetStream stream takes {SUBJECT_ROOT}.> "
                                       f"(stream {self.stream.name} missing?){fix}")
        if isinstance(exc, nats.js.errors.APIError) and exc.err_code == ERR_EXPECTED_STREAM:
            return Outcome.retry(None, f"{name}: these subjects belong to another stream than "
                                       f"{self.stream.name}: {exc.description}")
        if isinstance(exc, nats.errors.TimeoutError | asyncio.TimeoutError | TimeoutError) and self._connecting:
            # A refused or unreachable server: said as such, not as a slow stream.
            where = ", ".join(u.rpartition("@")[2] for u in self.servers)   # no user:password@ in a log
            return Outcome.retry(None, f"{name}: cannot connect to {where} within "
                                       f"{self.timeout:g}s ({self._last_error or 'server down or unreachable'})")
        if isinstance(exc, nats.errors.TimeoutError | asyncio.TimeoutError | TimeoutError):
            return Outcome.retry(None, f"{name}: no PubAck within {self.timeout:g}s "
                                       f"({self._last_error or 'server slow or unreachable'})")
        if _is_permission(self._last_error):
            return Outcome.retry(AUTH_RETRY, f"{name}: the server does not let this user publish there "
                                             f"({self._last_error})")
        return Outcome.retry(None, f"{name}: {text}")


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    # nats-py wraps JetStream errors as "nats: ..." already; keep one line.
    return text.splitlines()[0][:300]


def _is_auth(exc: BaseException | str | None) -> bool:
    if exc is None:
        return False
    import nats.errors

    if isinstance(exc, nats.errors.AuthorizationError):
        return True
    return "authorization violation" in str(exc).lower() or "authentication" in str(exc).lower()


def _is_permission(text: str | None) -> bool:
    return text is not None and "permissions violation" in text.lower()
