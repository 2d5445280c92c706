"""The alert lifecycle: every state, every cause of a change, who may cause it, in one table.

An alert opens when a rule finds something. From then on only the causes in
:data:`TRANSITIONS` move it, and only from the states listed there; anything
else raises :class:`IllegalTransition`. Every other module asks this one
(which states are active, which are over, what a change announces) instead of
spelling a state itself, so the table below is the whole story:

==================  =======================  ============  ============  ============  =========  ========
cause               who                      open          void_printed  void_claimed  escalated  final
==================  =======================  ============  ============  ============  =========  ========
wire_void           terminal: a void         voided        voided        voided        refused    refused
wire_reversal       terminal: a reversal     voided        voided        voided        voided     refused
wire_refund         terminal: a refund       refunded      refunded      refunded      refunded   refused
printed_void        printer: a slip          void_printed  refused       refused       refused    refused
staff_voided        staff, no terminal line  voided        voided        voided        refused    refused
staff_void_claimed  staff, terminal line     void_claimed  void_claimed  refused       refused    refused
staff_refunded      staff: refunded          refused       refused       refused       refunded   refused
staff_app_refunded  staff: wallet refunded   refunded      refunded      refunded      refunded   refused
staff_legit         staff: legit             dismissed     dismissed     dismissed     dismissed  refused
settlement          settleguard: settled     escalated     escalated     escalated     refused    refused
cutoff              settleguard: cutoff      escalated     escalated     escalated     refused    refused
expiry              settleguard: closed      expired       expired       expired       refused    refused
==================  =======================  ============  ============  ============  =========  ========

(final: voided, refunded, dismissed and expired refuse every cause.)

Why escalated refuses a void: after settlement a void is impossible on the
terminal, and a refund is the remedy. A void seen on the wire that points at an
escalated alert's voucher refers to some later transaction that reused the
number; staff answering "voided" for it are told to answer "refunded" instead.
A refund (on the wire, or answered by staff when it was done at the acquirer)
ends it as ``refunded``; ``voided`` means taken back inside the batch (a void
or a reversal). The state strings are the journal's and the JSON's.

Why a person's "voided" is only a claim where a terminal line exists: the
terminal will show its own void within seconds if it happened, so the answer
moves the alert to ``void_claimed`` (it stops nagging, the review still lists
it) and the terminal's void confirms it; if the batch closes first, it escalates
saying the claimed void was never seen. On a till without a terminal line the
person's word is all there is (``staff_voided``).

Why a printed slip is not a void: anyone who can print to the till can print
"消费撤销". When a terminal line is configured (a ``[[source]]`` with protocol
zvt, cn_ecr or jsonl), a void or refund seen only on a printed slip moves an
open alert to ``void_printed`` ("void printed, not yet confirmed by the
terminal"); the terminal's own void or refund on the line confirms it
(``voided``), a person's answer counts as from ``open``, and if the batch
closes first it escalates saying the printed void was never confirmed. With
no terminal line (a printer-only install) the slip is the only witness there
is, and it resolves the alert as a void on the wire does (recorded as the
printer's).

When a batch closes, a finding whose remedy was a void becomes a refund case
(settlement or cutoff -> escalated); one that only asked for a check expires.
"""

from __future__ import annotations

from enum import StrEnum


class AlertState(StrEnum):
    OPEN = "open"
    VOIDED = "voided"
    DISMISSED = "dismissed"
    ESCALATED = "escalated"
    EXPIRED = "expired"
    VOID_PRINTED = "void_printed"        # a slip says voided; the terminal has not confirmed it
    VOID_CLAIMED = "void_claimed"        # a person says voided; the terminal has not shown it yet
    REFUNDED = "refunded"                # a refund (after settlement, or a partial one before)


class Actor(StrEnum):
    """Who may cause a change; also what the alert log records when no person is named."""

    TERMINAL = "terminal"
    PRINTER = "printer"                  # a printed slip (ESC/POS tap): anyone who can print can write one
    STAFF = "staff"
    SETTLEGUARD = "settleguard"


class Cause(StrEnum):
    WIRE_VOID = "wire_void"
    WIRE_REVERSAL = "wire_reversal"      # the terminal took a charge back itself (冲正)
    WIRE_REFUND = "wire_refund"          # a refund seen on the wire
    PRINTED_VOID = "printed_void"        # a void, refund or reversal seen only on a printed slip
    STAFF_VOIDED = "staff_voided"        # taken as done: no terminal line could show it
    STAFF_VOID_CLAIMED = "staff_void_claimed"   # waits for the terminal line to show the void
    STAFF_REFUNDED = "staff_refunded"
    # A wallet payment (WeChat Pay, Alipay, UnionPay QR) refunded in its merchant app: no terminal batch
    # ends those, so the answer is right before settlement as after it.
    STAFF_APP_REFUNDED = "staff_app_refunded"
    STAFF_LEGIT = "staff_legit"
    SETTLEMENT = "settlement"            # the terminal's settlement message closed the batch
    CUTOFF = "cutoff"                    # the configured cutoff time closed the batch
    EXPIRY = "expiry"                    # the batch closed before anyone checked a check-only finding


class NoticeKind(StrEnum):
    """What the outbox, the listeners and the channels call each message: one name each.

    A machine endpoint receives the per-alert kinds as ``settleguard.alert.<kind>``.
    """

    OPENED = "opened"
    VOIDED = "voided"
    REFUNDED = "refunded"
    DISMISSED = "dismissed"
    EXPIRED = "expired"
    ESCALATED = "escalated"
    VOID_PRINTED = "void_printed"
    VOID_CLAIMED = "void_claimed"
    REMINDER = "reminder"
    # For people only: summaries of several alerts, and the pre-close review.
    DIGEST = "digest"
    RESOLVED = "resolved"                # several resolutions in one message
    REVIEW = "review"
    ALL_CLEAR = "all_clear"
    # A wire or a terminal needs a person (a source silent in opening hours, a terminal clock wrong):
    # about no alert, so nothing here moves through the table below.
    DEVICE = "device"
    # For machines only (webhooks, the NATS stream), about no alert: the till's health at start-up and
    # every channel ``heartbeat`` interval, and (where a channel asks for them) the till's own events:
    # a transaction, settlement or order as journaled, ``data["type"]`` naming which.
    HEARTBEAT = "heartbeat"
    EVENT = "event"


INITIAL = AlertState.OPEN

WHO: dict[Cause, Actor] = {
    Cause.WIRE_VOID: Actor.TERMINAL,
    Cause.WIRE_REVERSAL: Actor.TERMINAL,
    Cause.WIRE_REFUND: Actor.TERMINAL,
    Cause.PRINTED_VOID: Actor.PRINTER,
    Cause.STAFF_VOIDED: Actor.STAFF,
    Cause.STAFF_VOID_CLAIMED: Actor.STAFF,
    Cause.STAFF_REFUNDED: Actor.STAFF,
    Cause.STAFF_APP_REFUNDED: Actor.STAFF,
    Cause.STAFF_LEGIT: Actor.STAFF,
    Cause.SETTLEMENT: Actor.SETTLEGUARD,
    Cause.CUTOFF: Actor.SETTLEGUARD,
    Cause.EXPIRY: Actor.SETTLEGUARD,
}

TRANSITIONS: dict[AlertState, dict[Cause, AlertState]] = {
    AlertState.OPEN: {
        Cause.WIRE_VOID: AlertState.VOIDED,
        Cause.WIRE_REVERSAL: AlertState.VOIDED,
        Cause.WIRE_REFUND: AlertState.REFUNDED,
        Cause.PRINTED_VOID: AlertState.VOID_PRINTED,
        Cause.STAFF_VOIDED: AlertState.VOIDED,
        Cause.STAFF_VOID_CLAIMED: AlertState.VOID_CLAIMED,
        Cause.STAFF_APP_REFUNDED: AlertState.REFUNDED,
        Cause.STAFF_LEGIT: AlertState.DISMISSED,
        Cause.SETTLEMENT: AlertState.ESCALATED,
        Cause.CUTOFF: AlertState.ESCALATED,
        Cause.EXPIRY: AlertState.EXPIRED,
    },
    # As from open, except that another slip adds nothing: only the terminal or a person resolves it.
    AlertState.VOID_PRINTED: {
        Cause.WIRE_VOID: AlertState.VOIDED,
        Cause.WIRE_REVERSAL: AlertState.VOIDED,
        Cause.WIRE_REFUND: AlertState.REFUNDED,
        Cause.STAFF_VOIDED: AlertState.VOIDED,
        Cause.STAFF_VOID_CLAIMED: AlertState.VOID_CLAIMED,
        Cause.STAFF_APP_REFUNDED: AlertState.REFUNDED,
        Cause.STAFF_LEGIT: AlertState.DISMISSED,
        Cause.SETTLEMENT: AlertState.ESCALATED,
        Cause.CUTOFF: AlertState.ESCALATED,
        Cause.EXPIRY: AlertState.EXPIRED,
    },
    # A person said "voided"; the terminal's own void confirms it. A slip adds nothing, a second claim
    # neither. staff_voided (no terminal line any more, after a reload) takes the word as done.
    AlertState.VOID_CLAIMED: {
        Cause.WIRE_VOID: AlertState.VOIDED,
        Cause.WIRE_REVERSAL: AlertState.VOIDED,
        Cause.WIRE_REFUND: AlertState.REFUNDED,
        Cause.STAFF_VOIDED: AlertState.VOIDED,
        Cause.STAFF_APP_REFUNDED: AlertState.REFUNDED,
        Cause.STAFF_LEGIT: AlertState.DISMISSED,
        Cause.SETTLEMENT: AlertState.ESCALATED,
        Cause.CUTOFF: AlertState.ESCALATED,
        Cause.EXPIRY: AlertState.EXPIRED,
    },
    AlertState.ESCALATED: {
        Cause.WIRE_REVERSAL: AlertState.VOIDED,
        Cause.WIRE_REFUND: AlertState.REFUNDED,
        Cause.STAFF_REFUNDED: AlertState.REFUNDED,
        Cause.STAFF_APP_REFUNDED: AlertState.REFUNDED,
        Cause.STAFF_LEGIT: AlertState.DISMISSED,
    },
    AlertState.VOIDED: {},
    AlertState.REFUNDED: {},
    AlertState.DISMISSED: {},
    AlertState.EXPIRED: {},
}

# Refusals people will meet, worded so they know what to do instead.
_SETTLED = ("the batch has settled, so the charge can no longer be voided; refund it on the terminal "
            "(管理 → 退货) — the refund on the wire resolves the alert — or, if it was refunded elsewhere, "
            "answer refunded")
_NOT_SETTLED = ("the batch has not settled: void the charge on the terminal and answer voided (a refund "
                "before settlement is seen on the terminal line and resolves the alert by itself)")
_REFUSED: dict[tuple[AlertState, Cause], str] = {
    (AlertState.OPEN, Cause.STAFF_REFUNDED): _NOT_SETTLED,
    (AlertState.VOID_PRINTED, Cause.STAFF_REFUNDED): _NOT_SETTLED,
    (AlertState.VOID_CLAIMED, Cause.STAFF_REFUNDED): _NOT_SETTLED,
    (AlertState.ESCALATED, Cause.STAFF_VOIDED): _SETTLED,
    (AlertState.ESCALATED, Cause.STAFF_VOID_CLAIMED): _SETTLED,
    (AlertState.VOID_CLAIMED, Cause.STAFF_VOID_CLAIMED): (
        "someone already answered voided; it is confirmed when the terminal shows the void"),
}

ACTIVE_STATES = frozenset(state for state, moves in TRANSITIONS.items() if moves)
FINAL_STATES = frozenset(state for state, moves in TRANSITIONS.items() if not moves)
# Over because someone dealt with it (an expired finding is over because nobody did).
RESOLVED_STATES = frozenset({AlertState.VOIDED, AlertState.REFUNDED, AlertState.DISMISSED})
# Findings whose void is not done (or only printed or claimed, unconfirmed) before the cutoff: what the
# pre-close review lists.
AWAITING_VOID = frozenset({AlertState.OPEN, AlertState.VOID_PRINTED, AlertState.VOID_CLAIMED})
# Findings a person has answered or a slip has claimed: no more reminders (the review still lists them).
CLAIMED_STATES = frozenset({AlertState.VOID_PRINTED, AlertState.VOID_CLAIMED})

# How staff read each state: (Chinese, English).
STATE_LABELS: dict[str, tuple[str, str]] = {
    AlertState.OPEN: ("仍待处理", "still open"),
    AlertState.VOIDED: ("已撤销", "voided"),
    AlertState.REFUNDED: ("已退货", "refunded"),
    AlertState.DISMISSED: ("已确认正常", "dismissed"),
    AlertState.EXPIRED: ("已过期", "expired"),
    AlertState.ESCALATED: ("已结算，需退货", "escalated to refund"),
    AlertState.VOID_PRINTED: ("已打印撤销单，终端未确认", "void printed, not yet confirmed by the terminal"),
    AlertState.VOID_CLAIMED: ("已报撤销，等待终端确认", "void reported, waiting for the terminal to show it"),
}

# Answers staff give (the till page, ``settleguard ack --<answer>``, the control socket): one set everywhere.
# "voided" is a claim where a terminal line can confirm it (:func:`staff_cause`).
STAFF_ANSWERS: dict[str, Cause] = {
    "legit": Cause.STAFF_LEGIT,
    "voided": Cause.STAFF_VOIDED,
    "refunded": Cause.STAFF_REFUNDED,
}

_ANNOUNCES: dict[AlertState, NoticeKind] = {
    AlertState.OPEN: NoticeKind.OPENED,
    AlertState.VOIDED: NoticeKind.VOIDED,
    AlertState.REFUNDED: NoticeKind.REFUNDED,
    AlertState.DISMISSED: NoticeKind.DISMISSED,
    AlertState.EXPIRED: NoticeKind.EXPIRED,
    AlertState.ESCALATED: NoticeKind.ESCALATED,
    AlertState.VOID_PRINTED: NoticeKind.VOID_PRINTED,
    AlertState.VOID_CLAIMED: NoticeKind.VOID_CLAIMED,
}
# Notices saying a finding is over: grouped among themselves for people, never into a findings digest.
RESOLUTION_NOTICES = frozenset(_ANNOUNCES[s] for s in FINAL_STATES) | {NoticeKind.RESOLVED}
# Notices about exactly one alert revision: what a machine endpoint can carry.
ALERT_NOTICES = frozenset(_ANNOUNCES.values()) | {NoticeKind.REMINDER}
# Notices about no alert that a machine endpoint carries as CloudEvents of their own
# (agent/delivery/cloudevents.py): the till's health, its reviews and all-clears, its events.
TILL_NOTICES = frozenset({NoticeKind.HEARTBEAT, NoticeKind.REVIEW, NoticeKind.ALL_CLEAR, NoticeKind.EVENT})
MACHINE_NOTICES = ALERT_NOTICES | TILL_NOTICES
# Notices that only repeat what the alert said: stale once the alert has a newer revision.
SUPERSEDABLE_NOTICES = frozenset({NoticeKind.OPENED, NoticeKind.REMINDER})


class IllegalTransition(ValueError):
    """A cause that may not move an alert in its state; str() says why and what to do instead."""

    def __init__(self, state: AlertState, cause: Cause, message: str) -> None:
        super().__init__(message)
        self.state = state
        self.cause = cause


def allows(state: str, cause: Cause) -> bool:
    return cause in TRANSITIONS[AlertState(state)]


def next_state(state: str, cause: Cause, *, alert_id: str = "") -> AlertState:
    """The state ``cause`` moves an alert in ``state`` to; raises IllegalTransition when it may not."""
    current = AlertState(state)
    target = TRANSITIONS[current].get(cause)
    if target is not None:
        return target
    name = f"alert {alert_id}" if alert_id else "the alert"
    if current in FINAL_STATES:
        raise IllegalTransition(current, cause, f"{name} is already {current}")
    why = _REFUSED.get((current, cause), f"{cause} does not apply")
    raise IllegalTransition(current, cause, f"{name} is {current}: {why}")


def states_allowing(cause: Cause) -> frozenset[AlertState]:
    """The states an alert must be in for ``cause`` to move it (what a query for candidates selects)."""
    return frozenset(state for state, moves in TRANSITIONS.items() if cause in moves)


def announces(state: str) -> NoticeKind:
    """The notice an alert entering ``state`` sends (its opening included)."""
    return _ANNOUNCES[AlertState(state)]


def wire_cause(kind: str) -> Cause:
    """The cause a returning transaction on the wire (void, refund, reversal) is."""
    return {"void": Cause.WIRE_VOID, "reversal": Cause.WIRE_REVERSAL}.get(kind, Cause.WIRE_REFUND)


def staff_cause(answer: str, *, terminal_line: bool, in_app: bool = False) -> Cause | None:
    """The cause a person's answer is; None for an unknown answer, or one that does not fit the payment.

    "voided" where a terminal line can show the void is only a claim (``void_claimed``) until it does.
    A wallet payment (``in_app``: refunded in its merchant app) cannot be voided on a terminal, and its
    refund needs no settled batch.
    """
    cause = STAFF_ANSWERS.get(answer)
    if in_app:
        return {Cause.STAFF_REFUNDED: Cause.STAFF_APP_REFUNDED, Cause.STAFF_LEGIT: Cause.STAFF_LEGIT}.get(
            cause) if cause is not None else None
    if cause is Cause.STAFF_VOIDED and terminal_line:
        return Cause.STAFF_VOID_CLAIMED
    return cause


def printed_cause(kind: str, *, terminal_line: bool) -> Cause:
    """The cause a returning transaction seen on a printed slip is.

    With a terminal line configured a slip only claims the void (the terminal must confirm it);
    on a printer-only install the slip is all there is, so it counts as the wire's.
    """
    return Cause.PRINTED_VOID if terminal_line else wire_cause(kind)


def batch_closed_cause(remedy: str | None, *, by_cutoff: bool) -> Cause:
    """A finding that asked for a void becomes a refund case when its batch closes; any other expires."""
    if remedy == "void":
        return Cause.CUTOFF if by_cutoff else Cause.SETTLEMENT
    return Cause.EXPIRY
