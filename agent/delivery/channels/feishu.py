"""Feishu / Lark custom bot: a bilingual ``post`` message, optionally signed in the body.

Signing: ``timestamp`` (seconds, as a string) and ``sign`` =
base64(HMAC-SHA256(key=f"{timestamp}\\n{secret}", msg=b"")) -- the secret is
in the key and the message is empty (DingTalk swaps the roles). Limits: 5
messages a second and 100 a minute per bot; a request body of at most 20 KB (render.FEISHU_BODY_LIMIT).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from datetime import datetime, tzinfo
from typing import Any

from agent.delivery.channels.base import Notice, RateLimit, RobotChannel
from agent.delivery.channels.render import FEISHU_CONTENT_LIMIT, compose, to_feishu_posts

ENDPOINT = "https://open.feishu.cn/open-apis/bot/v2/hook/"

ERRCODES: dict[int, tuple[float | None, str]] = {
    11232: (60.0, "frequency limited (5/s, 100/min per bot)"),
    9499: (60.0, "too many requests (rate limited)"),
    19021: (None, "sign match fail or timestamp is not within one hour from current time"),
    19022: (None, "ip not allowed (bot security settings)"),
    19024: (None, "key words not found (bot security settings)"),
}


def sign(secret: str, timestamp: int | str) -> str:
    key = f"{timestamp}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode("ascii")


class FeishuChannel(RobotChannel):
    type = "feishu"
    robot = "Feishu"
    errcodes = ERRCODES
    # Newer answers say {"code": 0, "msg": "success"}; older ones {"StatusCode": 0, ...}.
    code_fields = ("code", "StatusCode")
    limits = (RateLimit(4, 1.0), RateLimit(90, 60.0))

    def __init__(self, name: str, *, token: str | None = None, url: str | None = None,
                 secret: str | None = None, tz: tzinfo | None = None, timeout: float = 10.0,
                 languages: Sequence[str] = ("zh",), public_url: str | None = None) -> None:
        if not token and not url:
            raise ValueError(f"feishu channel {name}: needs key (hook token) or a full url")
        super().__init__(name, f"{(url or ENDPOINT).rstrip('/')}/{token}" if token else (url or ENDPOINT),
                         tz=tz, timeout=timeout, languages=languages, public_url=public_url)
        self.secret = secret

    def payloads(self, notice: Notice, now: datetime) -> list[dict[str, Any]]:
        doc = compose(notice, now, self.tz, languages=self.languages, public_url=self.public_url)
        return [{"msg_type": "post", "content": {"post": post}}
                for post in to_feishu_posts(doc, limit_bytes=FEISHU_CONTENT_LIMIT)]

    def signed(self, payload: dict[str, Any], now: datetime) -> dict[str, Any]:
        # Signed at each attempt: Feishu refuses a timestamp more than an hour old.
        if not self.secret:
            return payload
        timestamp = int(now.timestamp())
        return {"timestamp": str(timestamp), "sign": sign(self.secret, timestamp), **payload}
