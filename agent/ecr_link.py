"""Both directions of an integrated (ECR) link (issue 17): the till's requests paired with the terminal's
answers, for MATCH-004 (approved after the till had already aborted or timed out).

Each link is named after the ``[[source]]`` that carries the terminal's answers (``SourceConfig.ecr_link``):
a wire with both directions (one tap that sees both, the TCP proxy) is its own link; a ``till->terminal``
wire joins the link of its ``pair``. The till's side arrives as ``ecr_request`` events (requested, aborted,
timed_out); the terminal's answer is the next charge on the link. ZVT and the UnionPay-style ECR are
strictly one request at a time, so the answer that follows a request answers it; an answer of another
amount is not its answer (a charge keyed at the terminal itself) and leaves it waiting.

The till has given up when the wire shows it (ZVT 06 B0 abort), when its own JSON line says so
("timed_out"), or when ``[match] till_timeout`` passed between the request and the answer (both measured on
the pipeline's receive times, not the terminal's clock). A request left without an answer for
``FORGET_AFTER`` is forgotten: an approval that late is no answer to it.

Pure: no clock, no journal. :class:`agent.match.TillMatching` calls it and opens what it finds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from agent.rules.base import TxnView, is_charge
from drivers.events import GAVE_UP_STATES, EcrRequest

FORGET_AFTER = timedelta(minutes=30)


@dataclass
class Request:
    """The till's latest request on a link, as far as the link has told."""

    link: str
    request_id: str | None
    amount_minor: int | None
    asked: datetime                  # when the request was received (pipeline's receive time)
    state: str = "requested"
    gave_up: datetime | None = None  # when the till aborted or timed out


@dataclass(frozen=True)
class LateAnswer:
    """An approved charge that answered a request the till had given up on."""

    request: Request
    how: str                         # "aborted" | "timed_out"
    gave_up_seconds: int             # request -> giving up
    late_seconds: int                # giving up -> the approval


class EcrLinks:
    def __init__(self, till_timeout: timedelta | None) -> None:
        self.till_timeout = till_timeout
        self.last: dict[str, Request] = {}

    def request(self, link: str, event: EcrRequest, received: datetime) -> None:
        """The till's side: a new request replaces the last one (the till asks one thing at a time)."""
        when = received
        if event.state == "requested":
            self.last[link] = Request(link, event.request_id, event.amount_minor, when)
            return
        current = self.last.get(link)
        same = (current is not None and current.state == "requested"
                and (event.request_id is None or current.request_id is None or event.request_id == current.request_id))
        if current is not None and same:
            current.state, current.gave_up = event.state, (event.time or when) if event.state == "timed_out" else when
        elif current is None or current.state != event.state:
            # Giving up on a request this link never showed (the tap started late): still the till's word.
            self.last[link] = Request(link, event.request_id, event.amount_minor, event.time or when,
                                      state=event.state, gave_up=event.time or when)

    def answer(self, link: str, view: TxnView, received: datetime) -> LateAnswer | None:
        """The terminal's side: a charge on the link. Returns what was late, and closes the request."""
        current = self.last.get(link)
        if current is None or current.state not in ("requested", *GAVE_UP_STATES):
            return None
        if received - current.asked > FORGET_AFTER:
            del self.last[link]
            return None
        if current.amount_minor is not None and view.txn.amount_minor != current.amount_minor:
            return None   # not this request's answer: the terminal did something else in between
        del self.last[link]
        if not is_charge(view):
            return None   # declined (or a refund): answered, nothing charged
        if current.state in GAVE_UP_STATES and current.gave_up is not None:
            how, gave_up = current.state, current.gave_up
        elif self.till_timeout is not None and received - current.asked > self.till_timeout:
            how, gave_up = "timed_out", current.asked + self.till_timeout
        else:
            return None
        return LateAnswer(current, how, max(0, int((gave_up - current.asked).total_seconds())),
                          max(0, int((received - gave_up).total_seconds())))

    def inferred_timeout(self, late: LateAnswer) -> EcrRequest | None:
        """The ``timed_out`` event settleguard inferred from ``[match] till_timeout``, for the journal."""
        r = late.request
        if late.how != "timed_out" or r.state == "timed_out":
            return None
        return EcrRequest(source="settleguard", time=r.asked + timedelta(seconds=late.gave_up_seconds),
                          state="timed_out", amount_minor=r.amount_minor, request_id=r.request_id)
