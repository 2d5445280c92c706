"""The channel contract: a Notice goes in, an Outcome comes out.

Channels are pure adapters. HTTP channels build an :class:`HttpRequest` and
classify the :class:`HttpResponse`; the only code that touches the network
is the :class:`HttpSender` the delivery loop passes in (``agent.delivery.channels.http``
wraps httpx and turns its errors into :class:`HttpFailure`). Time is a
parameter everywhere, so rate limits, signatures and retry delays are exact
under test and replay.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from email.utils import parsedate_to_datetime
from typing import Any, Literal, Protocol
from urllib.parse import quote

from agent.alerts.lifecycle import NoticeKind

# A server may ask for any delay; past this one the batch cutoff is usually gone, so the
# delivery loop's own schedule (and the pre-close review) is a better judge than the server.
MAX_RETRY_AFTER = 3600.0
# Below this a Retry-After only burns attempts against a server that just said "slow down".
MIN_RETRY_AFTER = 1.0


@dataclass(frozen=True, slots=True)
class Notice:
    """One thing to tell people (or machines) about zero or more alerts."""

    kind: NoticeKind
    alerts: tuple[dict[str, Any], ...]   # ARCHITECTURE.md, "Alert JSON" (Alert.to_dict())
    shop: str               # shop name, e.g. "好味道餐饮 静安店"
    source: str             # CloudEvents source, e.g. "settleguard://<shop-slug>/<till>"
    created: datetime       # aware
    deadline: datetime | None = None     # batch cutoff, for "time left"
    title: tuple[str, str] | None = None  # (zh, en) headline instead of the kind's own (device notices)
    lines: tuple[str, ...] = ()          # facts below the headline: the day's count and total, which wire
    # Lists after the alerts (a review's refunds still to do, findings that expired unchecked): the first
    # line of each is its heading. Blocks of their own, so a split message never repeats them.
    sections: tuple[tuple[str, ...], ...] = ()
    # What a machine gets for a notice about no alert (heartbeat, review, all_clear, event): the
    # CloudEvent's ``data`` (agent/delivery/cloudevents.py). None for alert notices and people-only kinds.
    data: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.kind not in frozenset(NoticeKind):
            raise ValueError(f"notice kind must be one of {', '.join(NoticeKind)} (got {self.kind!r})")
        if self.created.tzinfo is None:
            raise ValueError("notice.created must be timezone-aware")
        if self.deadline is not None and self.deadline.tzinfo is None:
            raise ValueError("notice.deadline must be timezone-aware")


@dataclass(frozen=True, slots=True)
class HttpRequest:
    url: str = field(repr=False)                 # may carry the channel's credential
    headers: dict[str, str] = field(repr=False)  # may carry a signature
    body: bytes
    timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the delivery loop should do next with this message."""

    status: Literal["ok", "retry", "permanent"]
    retry_after: float | None = None     # seconds; None lets the delivery loop's backoff decide
    reason: str = ""

    @classmethod
    def ok(cls, reason: str = "") -> Outcome:
        return cls("ok", None, reason)

    @classmethod
    def retry(cls, seconds: float | None, reason: str) -> Outcome:
        return cls("retry", seconds, reason)

    @classmethod
    def permanent(cls, reason: str) -> Outcome:
        return cls("permanent", None, reason)


class HttpFailure(Exception):
    """The request never got an HTTP answer: connection refused/reset, DNS, timeout. str() says which."""


class HttpSender(Protocol):
    def post(self, request: HttpRequest) -> HttpResponse:
        """Send one request; raises HttpFailure when no HTTP response arrives."""
        ...


@dataclass(frozen=True, slots=True)
class RateLimit:
    count: int
    per_seconds: float

    def __post_init__(self) -> None:
        if self.count < 1 or self.per_seconds <= 0:
            raise ValueError(f"a rate limit needs count >= 1 and per_seconds > 0 "
                             f"(got {self.count}/{self.per_seconds})")


class RateLimiter:
    """Sliding-window limiter over several limits, on injected time.

    ``wait(now)`` says how long to hold the next send; ``record(now)`` notes a
    send. ``hold(until)`` honours a server that told us to back off, so every
    later message waits too, not only the one that was refused.
    """

    def __init__(self, limits: tuple[RateLimit, ...]) -> None:
        self.limits = limits
        # Only the last max(count) sends can ever matter, which caps the memory.
        self._sent: deque[datetime] = deque(maxlen=max((lim.count for lim in limits), default=1))
        self._held_until: datetime | None = None

    def __len__(self) -> int:
        return len(self._sent)

    def wait(self, now: datetime) -> float:
        delay = 0.0
        if self._held_until is not None:
            delay = max(delay, (self._held_until - now).total_seconds())
        sent = list(self._sent)
        for lim in self.limits:
            if len(sent) < lim.count:
                continue
            oldest_in_window = sent[-lim.count]
            free_at = oldest_in_window + timedelta(seconds=lim.per_seconds)
            # A clock that stepped backwards must not stall a channel for longer than one window.
            delay = max(delay, min((free_at - now).total_seconds(), lim.per_seconds))
        return max(0.0, delay)

    def record(self, now: datetime) -> None:
        self._sent.append(now)

    def hold(self, until: datetime) -> None:
        if self._held_until is None or until > self._held_until:
            self._held_until = until


class Channel(ABC):
    name: str
    type: str
    groups: bool            # True for chat robots (people read them: digests), False for machine webhooks
    limits: tuple[RateLimit, ...]        # documented limits, throttled BELOW them

    @abstractmethod
    def send(self, notice: Notice, *, message_id: str, now: datetime, sender: HttpSender) -> Outcome: ...


def header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive header lookup (HTTP field names are case-insensitive)."""
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """RFC 9110 Retry-After: delay-seconds or an HTTP-date; None when absent or unreadable.

    The result is clamped to [MIN_RETRY_AFTER, MAX_RETRY_AFTER].
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    seconds: float
    if text.isdigit():
        seconds = float(int(text))
    else:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            # RFC 9110 dates are GMT; parsedate gives naive for "-0000".
            return None
        seconds = (when - now).total_seconds()
    return min(max(seconds, MIN_RETRY_AFTER), MAX_RETRY_AFTER)


def classify_http(response: HttpResponse | None, error: HttpFailure | None,
                  now: datetime) -> Outcome | None:
    """The part of classification every HTTP channel shares.

    Returns None for a 2xx answer, whose body the channel must still read
    (chat robots say "error" inside a 200).
    """
    if error is not None or response is None:
        return Outcome.retry(None, f"transport: {error}" if error else "transport: no response")
    status = response.status
    retry_after = parse_retry_after(header(response.headers, "retry-after"), now)
    if status in (408, 429):
        return Outcome.retry(retry_after, f"HTTP {status}")
    if status >= 500:
        return Outcome.retry(retry_after, f"HTTP {status}")
    if 200 <= status < 300:
        return None
    # 3xx is not followed on purpose: a moved robot URL is a configuration change for a person.
    return Outcome.permanent(f"HTTP {status}: {snippet(response.body)}")


def snippet(body: bytes, limit: int = 200) -> str:
    text = body.decode("utf-8", errors="replace").strip()
    return text if len(text) <= limit else text[:limit] + "…"


def json_body(body: bytes) -> dict[str, Any] | None:
    """A robot's JSON answer, or None when it is not a JSON object."""
    try:
        obj = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON (robots count bytes; Chinese stays readable in captures)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def classify_errcode(response: HttpResponse | None, error: HttpFailure | None, now: datetime, *,
                     table: Mapping[int, tuple[float | None, str]], fields: tuple[str, ...],
                     robot: str) -> Outcome:
    """Chat robots answer errors inside a 200 (sometimes a 4xx) JSON body; read the code first.

    ``table`` maps a code to (retry delay, meaning); a delay of None means permanent. A code not in
    the table is permanent: an unknown answer retried forever would only spam the outbox.
    """
    obj = json_body(response.body) if response is not None else None
    field = next((name for name in fields if obj is not None and name in obj), fields[0])
    code = obj.get(field) if obj is not None else None
    if response is not None and isinstance(code, int) and not isinstance(code, bool):
        message = str(obj.get("errmsg") or obj.get("msg") or obj.get("StatusMessage") or "") if obj else ""
        if code == 0 and 200 <= response.status < 300:
            return Outcome.ok()
        if code in table:
            delay, meaning = table[code]
            reason = f"{robot} {field} {code}: {meaning}"
            return Outcome.retry(delay, reason) if delay is not None else Outcome.permanent(reason)
        if response.status < 500 and response.status not in (408, 429):
            return Outcome.permanent(f"{robot} {field} {code}: {message[:200]}")
    shared = classify_http(response, error, now)
    if shared is not None:
        return shared
    assert response is not None
    # A 200 that is not the robot's JSON is a proxy or captive portal in the way, not our message's fault.
    return Outcome.retry(None, f"{robot} answered HTTP {response.status} without a {field}: "
                               f"{snippet(response.body)}")


class HttpChannel(Channel):
    """A channel that is one HTTP POST per notice: build, throttle, send, classify."""

    def __init__(self, name: str, url: str, *, timeout: float) -> None:
        self.name = name
        self.url = url
        self.timeout = timeout
        self.limiter = RateLimiter(self.limits)

    @abstractmethod
    def build_request(self, notice: Notice, message_id: str, now: datetime) -> HttpRequest: ...

    @abstractmethod
    def classify(self, response: HttpResponse | None, error: HttpFailure | None,
                 now: datetime) -> Outcome: ...

    def refuse(self, notice: Notice) -> str | None:
        """Why this channel cannot carry ``notice`` at all (None: it can)."""
        return None

    def send(self, notice: Notice, *, message_id: str, now: datetime, sender: HttpSender) -> Outcome:
        why_not = self.refuse(notice)
        if why_not is not None:
            return Outcome.permanent(why_not)
        wait = self.limiter.wait(now)
        if wait > 0:
            return Outcome.retry(wait, f"throttled locally below the documented {self.type} rate limit")
        request = self.build_request(notice, message_id, now)
        self.limiter.record(now)
        try:
            response = sender.post(request)
        except HttpFailure as exc:
            return self.classify(None, exc, now)
        outcome = self.classify(response, None, now)
        if outcome.status == "retry" and outcome.retry_after is not None:
            self.limiter.hold(now + timedelta(seconds=outcome.retry_after))
        return outcome


class RobotChannel(HttpChannel):
    """A chat robot people read: JSON messages in the shop's time zone and the channel's languages,
    answered with an error code inside the JSON (see :func:`classify_errcode`).

    A notice too big for one message goes out as several (``payloads``), in order. The outbox holds
    one row (or one digest of rows) for all of them, so the channel remembers, per message id, the
    parts it built and how many the robot accepted: a retry sends only the rest, the same bytes as
    first built (the "time left" in a part does not move between tries). Kept in memory, bounded: after
    a restart a half-sent message is sent whole again (at least once, as every channel is).
    """

    groups = True
    robot: str                                       # the robot's name in delivery errors
    errcodes: Mapping[int, tuple[float | None, str]]
    code_fields: tuple[str, ...] = ("errcode",)      # where the answer carries its code, in order

    def __init__(self, name: str, url: str, *, tz: tzinfo | None, timeout: float,
                 languages: Sequence[str] = ("zh",), public_url: str | None = None) -> None:
        super().__init__(name, url, timeout=timeout)
        self.tz = tz
        self.languages = tuple(languages)
        self.public_url = public_url
        self._progress: OrderedDict[str, _Progress] = OrderedDict()

    @abstractmethod
    def payloads(self, notice: Notice, now: datetime) -> list[dict[str, Any]]:
        """The notice as one or more message bodies, each within the robot's size limit (unsigned)."""

    def signed(self, payload: dict[str, Any], now: datetime) -> dict[str, Any]:
        """The body as sent at ``now`` (a robot that signs in the body adds timestamp and sign here)."""
        return payload

    def request_url(self, now: datetime) -> str:
        """Where this message goes (a robot that signs on the URL adds the signature here)."""
        return self.url

    def request_for(self, payload: dict[str, Any], now: datetime) -> HttpRequest:
        return HttpRequest(url=self.request_url(now), headers={"content-type": "application/json; charset=utf-8"},
                           body=dumps(self.signed(payload, now)), timeout=self.timeout)

    def build_requests(self, notice: Notice, message_id: str, now: datetime) -> list[HttpRequest]:
        return [self.request_for(p, now) for p in self.payloads(notice, now)]

    def build_request(self, notice: Notice, message_id: str, now: datetime) -> HttpRequest:
        """The first (usually the only) message of the notice."""
        return self.build_requests(notice, message_id, now)[0]

    def classify(self, response: HttpResponse | None, error: HttpFailure | None, now: datetime) -> Outcome:
        return classify_errcode(response, error, now, table=self.errcodes, fields=self.code_fields,
                                robot=self.robot)

    def send(self, notice: Notice, *, message_id: str, now: datetime, sender: HttpSender) -> Outcome:
        why_not = self.refuse(notice)
        if why_not is not None:
            return Outcome.permanent(why_not)
        progress = self._progress.pop(message_id, None)
        if progress is None:
            progress = _Progress(self.payloads(notice, now))
        total = len(progress.parts)
        while progress.accepted < total:
            part = f"part {progress.accepted + 1} of {total}: " if total > 1 else ""
            wait = self.limiter.wait(now)
            if wait > 0:
                self._remember(message_id, progress)
                return Outcome.retry(wait, f"{part}throttled locally below the documented {self.type} rate limit")
            request = self.request_for(progress.parts[progress.accepted], now)
            self.limiter.record(now)
            try:
                outcome = self.classify(sender.post(request), None, now)
            except HttpFailure as exc:
                outcome = self.classify(None, exc, now)
            if outcome.status != "ok":
                if outcome.status == "retry":
                    if outcome.retry_after is not None:
                        self.limiter.hold(now + timedelta(seconds=outcome.retry_after))
                    self._remember(message_id, progress)
                return Outcome(outcome.status, outcome.retry_after, part + outcome.reason)
            progress.accepted += 1
        return Outcome.ok(f"{total} messages" if total > 1 else "")

    def _remember(self, message_id: str, progress: _Progress) -> None:
        self._progress[message_id] = progress
        while len(self._progress) > MAX_REMEMBERED:
            self._progress.popitem(last=False)


# Half-sent messages remembered per robot; more than this many at once means the robot is down and
# every message will be retried whole anyway.
MAX_REMEMBERED = 64


@dataclass(slots=True)
class _Progress:
    parts: list[dict[str, Any]]
    accepted: int = 0


def with_query(url: str, name: str, value: str) -> str:
    """``url`` with one more query parameter (robots take their credential in the query)."""
    return f"{url}{'&' if '?' in url else '?'}{name}={quote(value, safe='')}"
