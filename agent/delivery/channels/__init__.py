"""Alert delivery channels: pure adapters from a Notice to an HTTP request (or a printed slip).

``make_channel`` builds one from a validated ``[[channel]]`` config entry.
The delivery loop owns retries, the outbox and the HTTP client
(``agent.delivery.channels.http``); a channel only says what to send and what an
answer means.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import tzinfo
from typing import Any, Protocol

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


class ChannelSettings(Protocol):
    """The fields of ``agent.config.ChannelConfig`` a channel needs (secrets already resolved)."""

    # Read-only properties, so a frozen pydantic model with Literal types satisfies the protocol.
    @property
    def name(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def url(self) -> str | None: ...
    @property
    def key(self) -> str | None: ...
    @property
    def secret(self) -> str | None: ...
    @property
    def secrets(self) -> list[str]: ...
    @property
    def printer(self) -> dict[str, Any]: ...


def make_channel(settings: ChannelSettings, *, tz: tzinfo | None = None, timeout: float = 10.0) -> Channel:
    """A channel for one config entry; ValueError names what is missing."""
    kind = settings.type
    if kind == "webhook":
        from agent.delivery.channels.webhook import WebhookChannel

        if not settings.url:
            raise ValueError(f"channel {settings.name}: a webhook needs url")
        secrets = [s for s in ([settings.secret] if settings.secret else []) + list(settings.secrets) if s]
        return WebhookChannel(settings.name, url=settings.url, secrets=secrets, timeout=timeout)
    if kind == "wecom":
        from agent.delivery.channels.wecom import WecomChannel

        return WecomChannel(settings.name, key=settings.key, url=settings.url, tz=tz, timeout=timeout)
    if kind == "dingtalk":
        from agent.delivery.channels.dingtalk import DingtalkChannel

        return DingtalkChannel(settings.name, access_token=settings.key, url=settings.url,
                               secret=settings.secret, tz=tz, timeout=timeout)
    if kind == "feishu":
        from agent.delivery.channels.feishu import FeishuChannel

        return FeishuChannel(settings.name, token=settings.key, url=settings.url, secret=settings.secret,
                             tz=tz, timeout=timeout)
    if kind == "printer":
        # Imported only here: python-escpos is the printing backend and nothing else needs it.
        from agent.delivery.channels.printer import PrinterChannel

        printer: Mapping[str, Any] = settings.printer
        return PrinterChannel(settings.name, printer=printer, tz=tz)
    raise ValueError(f"channel {settings.name}: unknown type {kind!r}")


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
