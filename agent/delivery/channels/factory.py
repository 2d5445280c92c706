"""Configured [[channel]] entries -> channel objects, in configuration order (the fallback order)."""

from __future__ import annotations

from datetime import tzinfo

from agent.config import Config, ConfigError
from agent.delivery.channels import make_channel
from agent.delivery.channels.base import Channel


def build_channels(config: Config, *, tz: tzinfo | None = None, path: str = "<config>",
                   sending: bool = True) -> list[Channel]:
    """Every enabled channel; ``sending=False`` (replay: lays messages out, sends nothing) reads no secret."""
    timeout = config.delivery.timeout.total_seconds()
    # The till page's address, when the shop has one ([web] public_url): links in every message.
    public_url = getattr(getattr(config, "web", None), "public_url", None)
    if public_url is not None:
        from agent.delivery.channels.render import check_public_url

        try:
            public_url = check_public_url(public_url)
        except ValueError as exc:
            raise ConfigError(path, "web.public_url", str(exc)) from None
    channels: list[Channel] = []
    for i, c in enumerate(config.channel):
        if not c.enabled:
            continue
        try:
            channels.append(make_channel(c, tz=tz, timeout=timeout, public_url=public_url, sending=sending))
        except ValueError as exc:
            raise ConfigError(path, f"channel[{i}] ({c.name})", str(exc)) from None
    return channels


def routing(config: Config, channels: list[Channel]) -> tuple[list[str], list[str]]:
    """(channels every alert is queued to, channels people read). Fallback-only channels get neither:
    delivery hands them a message only when an earlier channel missed its deadline."""
    fallback = {c.name for c in config.channel if c.fallback}
    primary = [c for c in channels if c.name not in fallback]
    return [c.name for c in primary], [c.name for c in primary if c.groups]


def event_routing(config: Config, channels: list[Channel]) -> list[str]:
    """The primary channels that asked for the till's own events too (``events = true``: a NATS stream)."""
    wanted = {c.name for c in config.channel if getattr(c, "events", False) and not c.fallback}
    return [c.name for c in channels if c.name in wanted]
