"""DingTalk (钉钉) custom robot: markdown messages, optionally signed (加签) on the URL.

Signing: ``timestamp`` in milliseconds and ``sign`` =
urlencode(base64(HMAC-SHA256(key=secret, msg=f"{timestamp}\\n{secret}"))).
Over 20 messages a minute the robot is throttled for 10 minutes, so we stay
at 18 and treat a throttling answer as "wait 600 s".
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from datetime import datetime, tzinfo
from typing import Any
from urllib.parse import quote_plus

from agent.delivery.channels.base import Notice, RateLimit, RobotChannel, with_query
from agent.delivery.channels.render import DINGTALK_MARKDOWN_LIMIT, compose, to_markdown_parts

ENDPOINT = "https://oapi.dingtalk.com/robot/send"
THROTTLED_FOR = 600.0

ERRCODES: dict[int, tuple[float | None, str]] = {
    -1: (30.0, "系统繁忙 system busy"),
    130101: (THROTTLED_FOR, "send too fast, exceed 20 times per minute (robot throttled for 10 min)"),
    410100: (THROTTLED_FOR, "发送速度太快而限流 throttled (robot throttled for 10 min)"),
    310000: (None, "keywords not in content / sign not match / ip not in whitelist (security settings)"),
    300001: (None, "token is not exist (robot removed or access_token wrong)"),
}


def sign(secret: str, timestamp_ms: int | str) -> str:
    """The URL-encoded ``sign`` parameter for a robot with 加签 enabled."""
    digest = hmac.new(secret.encode("utf-8"), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256).digest()
    return quote_plus(base64.b64encode(digest).decode("ascii"))


class DingtalkChannel(RobotChannel):
    type = "dingtalk"
    robot = "DingTalk"
    errcodes = ERRCODES
    limits = (RateLimit(18, 60.0),)

    def __init__(self, name: str, *, access_token: str | None = None, url: str | None = None,
                 secret: str | None = None, tz: tzinfo | None = None, timeout: float = 10.0,
                 languages: Sequence[str] = ("zh",), public_url: str | None = None) -> None:
        if not access_token and not url:
            raise ValueError(f"dingtalk channel {name}: needs key (access_token) or a full url")
        base = url or ENDPOINT
        super().__init__(name, with_query(base, "access_token", access_token) if access_token else base,
                         tz=tz, timeout=timeout, languages=languages, public_url=public_url)
        self.secret = secret

    def request_url(self, now: datetime) -> str:
        if not self.secret:
            return self.url
        timestamp_ms = int(now.timestamp() * 1000)
        return f"{self.url}&timestamp={timestamp_ms}&sign={sign(self.secret, timestamp_ms)}"

    def payloads(self, notice: Notice, now: datetime) -> list[dict[str, Any]]:
        doc = compose(notice, now, self.tz, languages=self.languages, public_url=self.public_url)
        texts = to_markdown_parts(doc, flavor="dingtalk", limit_bytes=DINGTALK_MARKDOWN_LIMIT)
        # The title is what the chat list shows; a split message says which part it is there too.
        titles = [doc.title if len(texts) == 1 else f"{doc.title}（{k}/{len(texts)}）"
                  for k in range(1, len(texts) + 1)]
        return [{"msgtype": "markdown", "markdown": {"title": title, "text": text}}
                for title, text in zip(titles, texts, strict=True)]
