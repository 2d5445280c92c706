"""Connecting to head office's NATS and reading what the stream holds, in bounded time.

Auth is what a till's nats channel has (token, user/password, NKEY/creds file, TLS with a CA); secrets
come as ``env:NAME`` / ``file:PATH`` references (or the ``SETTLEGUARD_NATS_*`` environment), never as a
literal on the command line, where ``ps`` would show them to everyone on the machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agent.fleet.names import DEFAULT_STREAM, DEFAULT_URL, PASSWORD_ENV, SUBJECT_ROOT, TOKEN_ENV, USER_ENV


class FleetError(Exception):
    """Something the person running ``fleet`` must fix (unreachable server, no stream, bad secret)."""


def secret_value(reference: str | None, what: str) -> str | None:
    """The secret behind an ``env:``/``file:`` reference; a literal is refused (it would be on argv)."""
    # Here, not at the top: `settleguard --help` builds every sub-command's parser and must not pay for
    # pydantic (agent/config.py); see ARCHITECTURE.md's start-up rule.
    from agent.config import SECRET_REF_PREFIXES, _resolve_secret

    if reference is None:
        return None
    if not reference.startswith(SECRET_REF_PREFIXES):
        raise FleetError(f"{what}: give env:NAME or file:PATH, not the secret itself "
                         f"(a command line is visible to every user of the machine)")
    try:
        return _resolve_secret(reference)
    except ValueError as exc:
        raise FleetError(f"{what}: {exc}") from None


@dataclass(frozen=True)
class NatsOptions:
    url: str = DEFAULT_URL
    stream: str = DEFAULT_STREAM
    token: str | None = None          # env:/file: references, resolved in connect()
    user: str | None = None
    password: str | None = None
    creds: str | None = None          # an NKEY/JWT .creds file
    tls_ca: str | None = None
    timeout: float = 10.0             # connect and every request; the whole read is bounded by a few of these

    def auth(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        token = secret_value(self.token, "--token") or os.environ.get(TOKEN_ENV)
        user = self.user or os.environ.get(USER_ENV)
        password = secret_value(self.password, "--password") or os.environ.get(PASSWORD_ENV)
        if token:
            kwargs["token"] = token
        if user:
            kwargs["user"] = user
            kwargs["password"] = password or ""
        if self.creds:
            if not os.path.isfile(self.creds):
                raise FleetError(f"--creds: no file {self.creds}")
            kwargs["user_credentials"] = self.creds
        if self.tls_ca:
            try:
                kwargs["tls"] = ssl.create_default_context(cafile=self.tls_ca)
            except (OSError, ssl.SSLError) as exc:
                raise FleetError(f"--tls-ca {self.tls_ca}: {exc}") from None
        return kwargs


async def connect(options: NatsOptions, *, reconnect: bool = False) -> Any:
    """A connected client. ``fleet`` does not reconnect (it reads and exits); ``fleet watch`` does."""
    import nats
    from nats.errors import NoServersError

    errors: list[str] = []

    async def remember(exc: Exception) -> None:
        errors.append(str(exc) or type(exc).__name__)

    auth = options.auth()
    # nats-py retries the first connect as often as reconnects (0 = for ever): one retry here, and the
    # whole attempt bounded, so a wrong URL is an error in seconds, not a hang; `watch` then reconnects
    # for ever once it has been connected.
    try:
        return await asyncio.wait_for(
            nats.connect(options.url, connect_timeout=max(1, int(options.timeout)), allow_reconnect=reconnect,
                         max_reconnect_attempts=-1 if reconnect else 1, reconnect_time_wait=0.5,
                         error_cb=remember, **auth),
            timeout=2 * options.timeout + 1)
    except (NoServersError, OSError, TimeoutError) as exc:
        why = errors[-1] if errors else (str(exc) or type(exc).__name__)
        raise FleetError(f"cannot reach NATS at {options.url}: {why}") from None
    except Exception as exc:   # nats-py raises its own Error tree for auth failures; say which
        raise FleetError(f"cannot connect to NATS at {options.url}: {exc or type(exc).__name__}") from None


async def stream_subjects(js: Any, options: NatsOptions) -> dict[str, int]:
    """Every subject the stream holds a message on, with its count (one request: ``STREAM.INFO``)."""
    from nats.js.errors import NotFoundError

    try:
        info = await js.stream_info(options.stream, subjects_filter=f"{SUBJECT_ROOT}.>")
    except NotFoundError:
        raise FleetError(f"no stream {options.stream} on {options.url} (the tills' nats channel creates it "
                         f"with create_stream = true; or --stream NAME)") from None
    return dict(info.state.subjects or {})


@dataclass(frozen=True)
class Entry:
    """One stored message: where it was, and its CloudEvent (None when the payload is not one)."""

    subject: str
    seq: int
    event: dict[str, Any] | None


async def read(js: Any, options: NatsOptions, filter_subject: str, *, last_per_subject: bool = False,
               since: datetime | None = None, upto_seq: int | None = None) -> AsyncIterator[Entry]:
    """What the stream holds on ``filter_subject`` now, oldest first, then stop.

    An ephemeral pull consumer without acks (it changes nothing in the stream and the server drops it
    when we go); the number pending at its creation is the end, so messages published meanwhile do not
    keep a read-only look running.
    """
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    if last_per_subject:
        policy = DeliverPolicy.LAST_PER_SUBJECT
    elif since is not None:
        policy = DeliverPolicy.BY_START_TIME
    else:
        policy = DeliverPolicy.ALL
    config = ConsumerConfig(deliver_policy=policy, opt_start_time=since, ack_policy=AckPolicy.NONE,
                            inactive_threshold=max(30.0, 3 * options.timeout), max_deliver=1)
    from nats.errors import TimeoutError as NatsTimeout

    sub = await js.pull_subscribe(filter_subject, stream=options.stream, config=config)
    try:
        left = (await sub.consumer_info()).num_pending or 0
        while left > 0:
            try:
                msgs = await sub.fetch(min(left, 256), timeout=options.timeout)
            except NatsTimeout:
                return   # the rest went away meanwhile (limits, purge): what was there has been read
            for msg in msgs:
                left -= 1
                meta = msg.metadata
                if upto_seq is not None and meta.sequence.stream > upto_seq:
                    return
                yield Entry(msg.subject, meta.sequence.stream, parse_event(msg.data))
                if meta.num_pending == 0:
                    left = 0
    finally:
        try:
            name = (await sub.consumer_info()).name
            await sub.unsubscribe()
            await js.delete_consumer(options.stream, name)
        except Exception:
            pass


def parse_event(payload: bytes) -> dict[str, Any] | None:
    """The CloudEvent in a message, or None for anything else (logged by the caller as skipped)."""
    try:
        obj = json.loads(payload)
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("data"), dict):
        return None
    return obj
