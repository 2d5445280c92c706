"""The CloudEvents a machine endpoint receives (webhooks, the NATS stream): one contract, one place.

Types (a public contract with receivers; never renamed):

* ``settleguard.alert.<kind>`` for each alert revision (opened, voided, escalated, reminder ...):
  ``data`` is the alert JSON (ARCHITECTURE.md, "Alert JSON"), plus ``link`` with the till page;
* ``settleguard.heartbeat``: the till's health (``data`` from the notice);
* ``settleguard.review`` / ``settleguard.all_clear``: the pre-close review and the nothing-open message;
* ``settleguard.<event type>`` for the till's own events where a channel asks for them
  (``settleguard.transaction``, ``.settlement``, ``.order``, ``.ecr_request``): ``data`` is the event
  JSON as journaled (card numbers masked: they never leave drivers/).

``source`` is ``settleguard://<shop id>/<till id>`` (agent/identity.py). :func:`subject_kind` is the last
token of a NATS subject ``settleguard.<shop>.<till>.<kind>``: ``alert`` for every alert revision, else
the type's last word.
"""

from __future__ import annotations

import re
from typing import Any

from agent.alerts.lifecycle import ALERT_NOTICES, NoticeKind
from agent.delivery.channels.base import Notice
from agent.delivery.channels.render import alert_link
from agent.identity import source_ids

TYPE_ROOT = "settleguard."
ALERT_TYPE_PREFIX = TYPE_ROOT + "alert."
# An event type becomes a CloudEvents type and a subject token: keep it one safe word.
_EVENT_WORD = re.compile(r"[a-z][a-z0-9_]{0,31}")


def event_type(notice: Notice) -> str | None:
    """The CloudEvent ``type`` of a notice, or None for people-only kinds (digest, resolved, device)."""
    if notice.kind in ALERT_NOTICES:
        return ALERT_TYPE_PREFIX + notice.kind
    if notice.kind in (NoticeKind.HEARTBEAT, NoticeKind.REVIEW, NoticeKind.ALL_CLEAR):
        return TYPE_ROOT + notice.kind
    if notice.kind == NoticeKind.EVENT:
        word = (notice.data or {}).get("type")
        if isinstance(word, str) and _EVENT_WORD.fullmatch(word):
            return TYPE_ROOT + word
    return None


def subject_kind(notice: Notice) -> str | None:
    """The last token of the notice's NATS subject (``alert``, ``heartbeat``, ``transaction`` ...)."""
    kind = event_type(notice)
    if kind is None:
        return None
    return "alert" if kind.startswith(ALERT_TYPE_PREFIX) else kind.removeprefix(TYPE_ROOT)


def refuse(notice: Notice) -> str | None:
    """Why a machine endpoint cannot carry this notice as one CloudEvent (None: it can)."""
    if event_type(notice) is None:
        return f"a {notice.kind} notice is for people, not for a machine endpoint"
    if notice.kind in ALERT_NOTICES and len(notice.alerts) != 1:
        return (f"one alert per CloudEvent, got {len(notice.alerts)} "
                f"(the delivery loop must fan out per alert revision)")
    if notice.kind not in ALERT_NOTICES and notice.data is None:
        return f"a {notice.kind} notice carries no data"
    return None


def cloudevent(notice: Notice, message_id: str, *, public_url: str | None = None) -> dict[str, Any]:
    """The structured-mode CloudEvent for a notice (key order as the spec examples).

    For an alert, ``data`` is the full alert JSON; with the till page configured it also carries
    ``link``, the alert's page (``{public_url}/a/{code}``), so an integrator can send people there.
    """
    why_not = refuse(notice)
    if why_not is not None:
        raise ValueError(why_not)
    kind = event_type(notice)
    data: dict[str, Any]
    if notice.kind in ALERT_NOTICES:
        data = notice.alerts[0]
        link = alert_link(public_url, data.get("code"))
        if link is not None:
            data = {**data, "link": link}
        subject = data.get("id")
    else:
        data = dict(notice.data or {})
        subject = data.get("key") or data.get("id") or notice.kind.value
    ids = source_ids(notice.source)
    if ids is not None:
        # Every machine notice names its shop and till in its data too (issue 19): a consumer that keeps
        # only ``data`` (a stream's JSON, a spreadsheet) can still tell a chain's tills apart.
        data = {**data, "shop_id": data.get("shop_id") or ids[0], "till_id": data.get("till_id") or ids[1]}
    return {
        "specversion": "1.0",
        "type": kind,
        "source": notice.source,
        "subject": subject,
        "id": message_id,
        "time": notice.created.isoformat(),
        "datacontenttype": "application/json",
        "data": data,
    }
