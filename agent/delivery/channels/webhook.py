"""Generic webhook: one CloudEvent per alert revision, signed per Standard Webhooks.

Body: CloudEvents 1.0 structured JSON (``application/cloudevents+json``),
``data`` = the alert dict (ARCHITECTURE.md, "Alert JSON"). Headers: ``webhook-id`` (the outbox
message id, stable across retries so the receiver can deduplicate),
``webhook-timestamp`` (integer seconds, the time of *this* attempt) and
``webhook-signature`` (``v1,<base64 HMAC-SHA256>``, one per configured
secret, space-separated, so a receiver can rotate its secret).

A machine channel never groups: an alert notice must carry exactly one alert.
A notice with several alerts (or a people-only kind: digest, resolved,
device) is refused as permanent rather than split here, because one
message id cannot cover several requests without breaking deduplication;
the delivery loop fans out per alert for channels with ``groups = False``.
Heartbeats, reviews and all-clears are CloudEvents of their own types
(agent/delivery/cloudevents.py).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from datetime import datetime

from agent.alerts.lifecycle import ALERT_NOTICES, NoticeKind
from agent.delivery import cloudevents
from agent.delivery.channels.base import (
    HttpChannel,
    HttpFailure,
    HttpRequest,
    HttpResponse,
    Notice,
    Outcome,
    RateLimit,
    classify_http,
    dumps,
    header,
)
from agent.delivery.cloudevents import cloudevent

CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"
SECRET_PREFIX = "whsec_"
TYPE_PREFIX = "settleguard.alert."


class WebhookVerificationError(ValueError):
    """A delivery that must not be trusted; str() says why."""


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret (padding optional, as the upstream libraries accept)."""
    text = secret.removeprefix(SECRET_PREFIX)
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("a webhook secret is whsec_ followed by base64") from exc


def sign(secret: str, msg_id: str, timestamp: int | str, body: bytes) -> str:
    """``v1,<base64(HMAC-SHA256(key, f"{id}.{timestamp}.{body}"))>``."""
    to_sign = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), to_sign, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signature_header(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    return " ".join(sign(secret, msg_id, timestamp, body) for secret in secrets)


def verify(headers: Mapping[str, str], body: bytes, secrets: Sequence[str], now: datetime,
           tolerance: float = 300) -> None:
    """Check a Standard Webhooks delivery; raises WebhookVerificationError, returns None when it is genuine.

    Any one ``v1`` entry matching any one secret is enough (rotation); the
    timestamp must be within ``tolerance`` seconds of ``now`` either way
    (replay protection).
    """
    msg_id = header(headers, "webhook-id")
    stamp = header(headers, "webhook-timestamp")
    signatures = header(headers, "webhook-signature")
    if not msg_id or not stamp or not signatures:
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature")
    if not stamp.isdigit():
        raise WebhookVerificationError(f"webhook-timestamp is not integer seconds: {stamp!r}")
    if abs(now.timestamp() - int(stamp)) > tolerance:
        raise WebhookVerificationError(f"webhook-timestamp {stamp} is more than {tolerance:g} s from now")
    if not secrets:
        raise WebhookVerificationError("no secret to verify with")
    expected = [sign(secret, msg_id, stamp, body).encode() for secret in secrets]
    for entry in signatures.split():
        version, _, _ = entry.partition(",")
        if version != "v1":
            continue
        if any(hmac.compare_digest(entry.encode(), candidate) for candidate in expected):
            return
    raise WebhookVerificationError("no v1 signature matches")


def event_type(kind: NoticeKind) -> str | None:
    """The CloudEvent ``type`` of an alert notice kind, or None for kinds that are not about one alert.

    Kept for callers that only have the kind; agent/delivery/cloudevents.py is the whole contract.
    """
    return TYPE_PREFIX + kind if kind in ALERT_NOTICES else None


class WebhookChannel(HttpChannel):
    type = "webhook"
    groups = False

    def __init__(self, name: str, *, url: str, secrets: Sequence[str] = (), timeout: float = 10.0,
                 limits: tuple[RateLimit, ...] = (), public_url: str | None = None) -> None:
        for secret in secrets:
            secret_key(secret)  # fail at configuration time, not at the first alert
        # No published limit for a receiver we do not know; the operator may set one.
        self.limits = limits
        super().__init__(name, url, timeout=timeout)
        self.secrets = tuple(secrets)
        self.public_url = public_url

    def refuse(self, notice: Notice) -> str | None:
        why_not = cloudevents.refuse(notice)
        return None if why_not is None else f"webhook {self.name}: {why_not}"

    def build_request(self, notice: Notice, message_id: str, now: datetime) -> HttpRequest:
        why_not = self.refuse(notice)
        if why_not is not None:
            raise ValueError(why_not)
        body = dumps(cloudevent(notice, message_id, public_url=self.public_url))
        timestamp = int(now.timestamp())
        headers = {
            "content-type": CONTENT_TYPE,
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
        }
        if self.secrets:
            headers["webhook-signature"] = signature_header(self.secrets, message_id, timestamp, body)
        return HttpRequest(url=self.url, headers=headers, body=body, timeout=self.timeout)

    def classify(self, response: HttpResponse | None, error: HttpFailure | None, now: datetime) -> Outcome:
        shared = classify_http(response, error, now)
        if shared is not None:
            return shared
        assert response is not None
        return Outcome.ok(f"HTTP {response.status}")
