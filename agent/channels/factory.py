"""Configured [[channel]] entries -> channel objects, in configuration order (the fallback order)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.channels.base import Channel
from agent.config import ChannelConfig, Config


def build_channel(cfg: ChannelConfig, *, timeout: float = 10.0) -> Channel:
    if cfg.type == "webhook":
        from agent.channels.webhook import WebhookChannel

        assert cfg.url is not None
        secrets = [s for s in [cfg.secret, *cfg.secrets] if s]
        return WebhookChannel(cfg.name, url=cfg.url, secrets=secrets, timeout=timeout)
    if cfg.type == "wecom":
        from agent.channels.wecom import WecomChannel

        return WecomChannel(cfg.name, **_robot_args(cfg), timeout=timeout)
    if cfg.type == "dingtalk":
        from agent.channels.dingtalk import DingtalkChannel

        return DingtalkChannel(cfg.name, **_robot_args(cfg), secret=cfg.secret, timeout=timeout)
    if cfg.type == "feishu":
        from agent.channels.feishu import FeishuChannel

        return FeishuChannel(cfg.name, **_robot_args(cfg), secret=cfg.secret, timeout=timeout)
    if cfg.type == "printer":
        from agent.channels.printer import PrinterChannel

        return PrinterChannel(cfg.name, **cfg.printer)
    raise ValueError(f"unknown channel type {cfg.type!r}")


def _robot_args(cfg: ChannelConfig) -> dict[str, Any]:
    return {"key": cfg.key, "url": cfg.url}


def build_channels(config: Config, *, state_dir: Path | None = None) -> list[Channel]:
    timeout = config.delivery.timeout.total_seconds()
    return [build_channel(c, timeout=timeout) for c in config.channel if c.enabled]
