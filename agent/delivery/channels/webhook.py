"""Generic webhook: one CloudEvent per alert revision, signed per Standard Webhooks.

Body: CloudEvents 1.0 structured JSON (``application/cloudevents+json``),
``data`` = the alert dict (ARCHITECTURE.md, "Alert JSON"). Headers: ``webhook-id`` (the outbox
message id, stable across retries so the receiver can deduplicate),
``webhook-timestamp`` (integer seconds, the time of *this* attempt) and
``webhook-signature`` (``v1,<base64 HMAC-SHA256>``, one per configured
secret, space-separated, so a receiver can rotate its secret).

A machine channel never groups: a notice must carry exactly one alert.
A notice with several alerts (or a people-only kind: digest, review,
all_clear) is refused as permanent rather than split here, because one
message id cannot cover several requests without breaking deduplication;
the delivery loop fans out per alert for channels with ``groups = False``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from agent.alerts.lifecycle import ALERT_NOTICES, NoticeKind
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
from agent.delivery.channels.render import alert_link

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
    """The CloudEvent ``type`` of a notice kind, or None for people-only kinds.

    ``settleguard.alert.<kind>``: opened, voided, dismissed, expired, escalated, reminder. These are a
    public contract with the receivers; the notice kinds are named after them so nothing maps in between.
    """
    return TYPE_PREFIX + kind if kind in ALERT_NOTICES else None


def cloudevent(notice: Notice, message_id: str, *, public_url: str | None = None) -> dict[str, Any]:
    """The structured-mode CloudEvent for a one-alert notice (key order as the spec examples).

    ``data`` is the full alert JSON; with the till page configured it also carries ``link``, the
    alert's page (``{public_url}/a/{code}``), so an integrator can send people there.
    """
    alert = notice.alerts[0]
    kind = event_type(notice.kind)
    if kind is None:
        raise ValueError(f"a {notice.kind} notice is for people, not for a webhook")
    link = alert_link(public_url, alert.get("code"))
    if link is not None:
        alert = {**alert, "link": link}
    return {
        "specversion": "1.0",
        "type": kind,
        "source": notice.source,
        "subject": alert.get("id"),
        "id": message_id,
        "time": notice.created.isoformat(),
        "datacontenttype": "application/json",
        "data": alert,
    }


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
        if len(notice.alerts) != 1:
            return (f"webhook {self.name}: one alert per CloudEvent, got {len(notice.alerts)} "
                    f"(the delivery loop must fan out per alert revision)")
        if event_type(notice.kind) is None:
            return f"webhook {self.name}: a {notice.kind} notice is for people, not for a machine endpoint"
        return None

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
