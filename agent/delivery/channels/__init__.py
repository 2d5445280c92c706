"""Alert delivery channels: pure adapters from a Notice to an HTTP request (or a printed slip).

``make_channel`` builds one from a validated ``[[channel]]`` config entry.
The delivery loop owns retries, the outbox and the HTTP client
(``agent.delivery.channels.http``); a channel only says what to send and what an
answer means.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from datetime import tzinfo
from typing import Any, Protocol

from pydantic import SecretStr

from agent.config import reveal
from agent.delivery.channels.base import (
    Channel,
    HttpFailure,
    HttpRequest,
    HttpResponse,
    HttpSender,
    Notice,
    Outcome,
    RateLimit,
    RateLimiter,
)
from agent.service.logs import add_secrets, register_url


class ChannelSettings(Protocol):
    """The fields of ``agent.config.ChannelConfig`` a channel needs (secrets already resolved).

    Secrets arrive as ``SecretStr`` (plain strings from tests); :func:`reveal` is the one accessor,
    used only here, where each channel is built with the values it sends.
    """

    # Read-only properties, so a frozen pydantic model with Literal types satisfies the protocol.
    @property
    def name(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def url(self) -> SecretStr | str | None: ...
    @property
    def key(self) -> SecretStr | str | None: ...
    @property
    def secret(self) -> SecretStr | str | None: ...
    @property
    def secrets(self) -> Sequence[SecretStr | str]: ...
    @property
    def printer(self) -> dict[str, Any]: ...
    @property
    def languages(self) -> Sequence[str]: ...


def make_channel(settings: ChannelSettings, *, tz: tzinfo | None = None, timeout: float = 10.0,
                 public_url: str | None = None, sending: bool = True) -> Channel:
    """A channel for one config entry; ValueError names what is missing.

    ``public_url`` is the till page's address (``[web] public_url``): messages then link each alert
    to ``{public_url}/a/{code}``. Every URL the channel will send to is registered with the log
    redactor here, whichever way its credential was given (``key =``, ``url =`` with a query token,
    userinfo or a path token).
    """
    if public_url is not None:
        from agent.delivery.channels.render import check_public_url

        public_url = check_public_url(public_url)
    # env:/file: secrets are read here, when a channel is built to send, and only then (agent/config.py);
    # a channel that never sends (replay's counters) gets inert stand-ins and reads nothing.
    if sending and hasattr(settings, "resolved"):
        settings = settings.resolved()
    elif not sending and hasattr(settings, "inert"):
        settings = settings.inert()
    channel = _make_channel(settings, tz=tz, timeout=timeout, public_url=public_url)
    if sending:
        register_url(getattr(channel, "url", None))
        add_secrets([settings.key, settings.secret, *settings.secrets])
    return channel


def _make_channel(settings: ChannelSettings, *, tz: tzinfo | None, timeout: float,
                  public_url: str | None) -> Channel:
    kind = settings.type
    if kind == "nats":
        return _make_nats(settings, timeout=timeout, public_url=public_url)
    url, key, secret = reveal(settings.url), reveal(settings.key), reveal(settings.secret)
    languages = tuple(settings.languages)
    if kind == "webhook":
        from agent.delivery.channels.webhook import WebhookChannel

        if not url:
            raise ValueError(f"channel {settings.name}: a webhook needs url")
        secrets = [s for s in [secret, *(reveal(x) for x in settings.secrets)] if s]
        return WebhookChannel(settings.name, url=url, secrets=secrets, timeout=timeout, public_url=public_url)
    if kind == "wecom":
        from agent.delivery.channels.wecom import WecomChannel

        return WecomChannel(settings.name, key=key, url=url, tz=tz, timeout=timeout, languages=languages,
                            public_url=public_url)
    if kind == "dingtalk":
        from agent.delivery.channels.dingtalk import DingtalkChannel

        return DingtalkChannel(settings.name, access_token=key, url=url, secret=secret, tz=tz, timeout=timeout,
                               languages=languages, public_url=public_url)
    if kind == "feishu":
        from agent.delivery.channels.feishu import FeishuChannel

        return FeishuChannel(settings.name, token=key, url=url, secret=secret, tz=tz, timeout=timeout,
                             languages=languages, public_url=public_url)
    if kind == "printer":
        # Imported only here: python-escpos is the printing backend and nothing else needs it.
        from agent.delivery.channels.printer import PrinterChannel

        printer: Mapping[str, Any] = settings.printer
        return PrinterChannel(settings.name, printer=printer, tz=tz, languages=languages)
    raise ValueError(f"channel {settings.name}: unknown type {kind!r}")


def _make_nats(settings: Any, *, timeout: float, public_url: str | None) -> Channel:
    """A NATS JetStream channel from an ``agent.config.NatsChannelConfig`` (secrets already resolved)."""
    from agent.delivery.channels.nats import NatsAuth, NatsChannel, StreamLimits

    auth = NatsAuth(user=settings.user, password=reveal(settings.password), token=reveal(settings.token),
                    nkey_seed=reveal(settings.nkey_seed), creds=settings.creds, tls_ca=settings.tls_ca,
                    tls_cert=settings.tls_cert, tls_key=settings.tls_key, tls_verify=settings.tls_verify)
    if settings.creds is not None and not os.path.isfile(settings.creds):
        raise ValueError(f"channel {settings.name}: creds file {settings.creds} cannot be read")
    stream = StreamLimits(name=settings.stream, create=settings.create_stream, max_age=settings.max_age,
                          max_bytes=settings.max_bytes, duplicate_window=settings.duplicate_window)
    servers = [reveal(s) or "" for s in settings.servers]
    return NatsChannel(settings.name, servers=servers, stream=stream, auth=auth, timeout=timeout,
                       public_url=public_url)


__all__ = [
    "Channel",
    "ChannelSettings",
    "HttpFailure",
    "HttpRequest",
    "HttpResponse",
    "HttpSender",
    "Notice",
    "Outcome",
    "RateLimit",
    "RateLimiter",
    "make_channel",
]
