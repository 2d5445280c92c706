"""WeCom (企业微信) group robot: markdown messages, no signing (the key in the URL is the credential).

Docs: https://developer.work.weixin.qq.com/document/path/91770 (robot) and
/90313 (error codes). WeCom answers HTTP 200 with ``{"errcode": N, ...}``;
only ``errcode`` is meaningful (its docs say never to branch on errmsg).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, tzinfo
from typing import Any

from agent.delivery.channels.base import Notice, RateLimit, RobotChannel, with_query
from agent.delivery.channels.render import WECOM_MARKDOWN_LIMIT, compose, to_markdown_parts

ENDPOINT = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send"

# errcode -> (retry after seconds | None for permanent, meaning); see classify_errcode.
ERRCODES: dict[int, tuple[float | None, str]] = {
    -1: (30.0, "系统繁忙 system busy"),
    45009: (60.0, "接口调用超过限制 rate limit (20 messages/min per robot)"),
    45033: (10.0, "接口并发调用超过限制 too many concurrent calls"),
    93000: (None, "机器人webhookurl不合法或者机器人已经被移除出群 invalid webhook URL or robot removed"),
    93004: (None, "机器人被停用 robot disabled"),
    93008: (None, "不在群里 robot is not in the group"),
    40008: (None, "不合法的消息类型 invalid message type"),
    40058: (None, "不合法的参数 invalid parameter (e.g. markdown over 4096 bytes)"),
    44004: (None, "文本消息content参数为空 empty content"),
}


class WecomChannel(RobotChannel):
    type = "wecom"
    robot = "WeCom"
    errcodes = ERRCODES
    # 20 messages/min per robot is the published limit; stay under it.
    limits = (RateLimit(18, 60.0),)

    def __init__(self, name: str, *, key: str | None = None, url: str | None = None,
                 tz: tzinfo | None = None, timeout: float = 10.0, languages: Sequence[str] = ("zh",),
                 public_url: str | None = None) -> None:
        if not key and not url:
            raise ValueError(f"wecom channel {name}: needs key (or a full url)")
        base = url or ENDPOINT
        super().__init__(name, with_query(base, "key", key) if key else base, tz=tz, timeout=timeout,
                         languages=languages, public_url=public_url)

    def payloads(self, notice: Notice, now: datetime) -> list[dict[str, Any]]:
        doc = compose(notice, now, self.tz, languages=self.languages, public_url=self.public_url)
        return [{"msgtype": "markdown", "markdown": {"content": content}}
                for content in to_markdown_parts(doc, flavor="wecom", limit_bytes=WECOM_MARKDOWN_LIMIT)]

