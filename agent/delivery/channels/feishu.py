"""Feishu / Lark custom bot: a bilingual ``post`` message, optionally signed in the body.

Signing: ``timestamp`` (seconds, as a string) and ``sign`` =
base64(HMAC-SHA256(key=f"{timestamp}\\n{secret}", msg=b"")) -- the secret is
in the key and the message is empty (DingTalk swaps the roles). Limits: 5
messages a second and 100 a minute per bot.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime, tzinfo
from typing import Any

from agent.delivery.channels.base import Notice, RateLimit, RobotChannel
from agent.delivery.channels.render import compose, to_feishu_post

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
                 secret: str | None = None, tz: tzinfo | None = None, timeout: float = 10.0) -> None:
        if not token and not url:
            raise ValueError(f"feishu channel {name}: needs key (hook token) or a full url")
        super().__init__(name, f"{(url or ENDPOINT).rstrip('/')}/{token}" if token else (url or ENDPOINT),
                         tz=tz, timeout=timeout)
        self.secret = secret

    def payload(self, notice: Notice, now: datetime) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if self.secret:
            timestamp = int(now.timestamp())
            body["timestamp"] = str(timestamp)
            body["sign"] = sign(self.secret, timestamp)
        body["msg_type"] = "post"
        body["content"] = {"post": to_feishu_post(compose(notice, now, self.tz))}
        return body
