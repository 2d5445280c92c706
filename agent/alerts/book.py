"""The alert book: opens alerts from findings and moves them by the lifecycle's table.

Every change goes through :meth:`AlertBook.apply`, which asks
:func:`agent.alerts.lifecycle.next_state`, saves the new revision in the
journal and announces it. The callers are the pipeline (findings, returning
transactions on the wire, batches closing, ``ack`` through the daemon) and the
offline ``ack``; all of them run inside a journal transaction they own.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import datetime, time, tzinfo
from pathlib import Path
from typing import Any

from agent.alerts.announce import Announcer
from agent.alerts.evidence import batch_totals, statement_zh, summarize, write_bundle
from agent.alerts.lifecycle import (
    ACTIVE_STATES,
    INITIAL,
    RESOLVED_STATES,
    STAFF_ANSWERS,
    WHO,
    Actor,
    AlertState,
    Cause,
    IllegalTransition,
    announces,
    batch_closed_cause,
    next_state,
    printed_cause,
    staff_cause,
    states_allowing,
    wire_cause,
)
from agent.alerts.remedy import RemedyBook, next_cutoff
from agent.alerts.review import rule_title_zh
from agent.model import CODE_ALPHABET, CODE_LENGTH, Alert, Suggestion, Transaction, new_ulid
from agent.rules.base import Finding
from agent.store.journal import Journal


class NoSuchAlert(LookupError):
    """No alert has that id (or id prefix)."""


class AmbiguousAlert(LookupError):
    """A short code that names more than one alert; str() lists the candidates."""


# How many candidates an ambiguous short code lists.
SHOW_CANDIDATES = 10
# Who may answer "legit" (the till page's [web] legit_needs); a shell on the till counts as a manager.
LEGIT_NEEDS = ("anyone", "manager")
ROLES = ("cashier", "manager")
# How many short codes are tried (derived from the id, so replay and the daemon agree) before a longer one.
CODE_TRIES = 64
# Decoders whose events come from the terminal itself; "escpos" is a printed slip. A source set to
# "auto" does not count: it may well be the printer (sniffing decides at run time).
TERMINAL_PROTOCOLS = frozenset({"zvt", "cn_ecr", "jsonl"})
PRINTED_SOURCE = "escpos"


def has_terminal_line(protocols: Iterable[str]) -> bool:
    """Whether a terminal line is configured, so a printed void must wait for the terminal to confirm it.

    Any terminal line, not one per terminal id: a shop that wired one terminal of two gets the
    stricter behaviour for both (a person's answer resolves the unwired one's alerts).
    """
    return any(p in TERMINAL_PROTOCOLS for p in protocols)


class AlertBook:
    def __init__(self, journal: Journal, announcer: Announcer, *, tz: tzinfo, cutoff: time | None,
                 counts: dict[str, int] | None = None, evidence_dir: Path | None = None,
                 terminal_line: bool = False, legit_needs: str = "anyone",
                 remedies: RemedyBook | None = None) -> None:
        self.journal = journal
        # How each payment is taken back (the shop's terminal model, wallets) and who the shop is.
        self.remedies = remedies or RemedyBook()
        self.terminal_line = terminal_line
        self.legit_needs = legit_needs
        self.announcer = announcer
        self.tz = tz
        self.cutoff = cutoff
        # The pipeline's counters (status line, metrics, replay summary), shared so they roll back together.
        self.counts: dict[str, int] = counts if counts is not None else Counter()
        self.evidence_dir = evidence_dir

    def reconfigure(self, *, tz: tzinfo, cutoff: time | None, terminal_line: bool | None = None,
                    legit_needs: str | None = None, remedies: RemedyBook | None = None) -> None:
        self.tz, self.cutoff = tz, cutoff
        if remedies is not None:
            self.remedies = remedies
        if terminal_line is not None:
            self.terminal_line = terminal_line
        if legit_needs is not None:
            self.legit_needs = legit_needs

    # -- opening ---------------------------------------------------------------------------
    def open(self, finding: Finding, now: datetime) -> Alert | None:
        """A new alert for a finding; None when this finding already has one (it is never a second alert)."""
        subject = finding.subject
        if self.journal.alert_for(finding.rule, subject.key) is not None:
            return None
        deadline = next_cutoff(subject.utc, self.cutoff, self.tz)
        meant = _meant(finding.evidence)
        if finding.action == "check":
            suggestion = self.remedies.check(subject.txn, deadline=deadline, tz=self.tz)
        else:
            suggestion = self.remedies.take_back(subject.txn, deadline=deadline, tz=self.tz, meant_minor=meant)
        transactions = tuple(v.txn for v in (*finding.related, subject))
        # What the page and the webhook show beside the rule's own evidence: every transaction, the remedy.
        evidence = {**finding.evidence, "transactions": summarize(transactions, self.tz),
                    "remedy": self.remedies.details(subject.txn, meant_minor=meant)}
        alert_id = new_ulid(now)
        alert = Alert(
            id=alert_id, code=self._new_code(alert_id), certainty=finding_certainty(finding), revision=1,
            rule=finding.rule, rule_version=finding.version,
            severity=finding.severity, state=INITIAL.value, reason=finding.reason_en, reason_zh=finding.reason_zh,
            evidence=evidence, transactions=transactions,
            suggestion=suggestion, created=now, updated=now, key=subject.key,
        )
        self.journal.save_alert(alert, actor=Actor.SETTLEGUARD.value)
        self.announcer.alert(alert, announces(alert.state), now)
        self.counts["alerts_opened"] += 1
        return alert

    def _new_code(self, alert_id: str) -> str:
        """A short code no active alert carries, derived from the id (a hash, so codes look random and
        never follow the id's time order).

        With 23**4 codes and tens of active alerts a collision is rare; after CODE_TRIES a fifth
        character is added rather than ever handing out a code in use.
        """
        seed = hashlib.blake2b(alert_id.encode(), digest_size=32).digest()
        for length in (CODE_LENGTH, CODE_LENGTH + 1):
            for attempt in range(CODE_TRIES):
                digest = hashlib.blake2b(seed + bytes([attempt, length]), digest_size=8).digest()
                n = int.from_bytes(digest, "big")
                code = ""
                for _ in range(length):
                    n, i = divmod(n, len(CODE_ALPHABET))
                    code += CODE_ALPHABET[i]
                if not self.journal.alerts_with_code(code, states=ACTIVE_STATES):
                    return code
        raise RuntimeError("no free short code")   # 23**5 codes all in use by active alerts: unreachable

    # -- the changes ----------------------------------------------------------------------------
    def apply(self, alert: Alert, cause: Cause, now: datetime, *, actor: str, note: str | None,
              suggestion: Suggestion | None = None, evidence_added: Mapping[str, Any] | None = None,
              answer: dict[str, Any] | None = None) -> Alert:
        """The next revision of ``alert`` after ``cause``, saved and announced; IllegalTransition if it may not.

        ``answer`` is the person's answer that caused it (who, role, note, when); every other revision
        carries none, so a message about this revision can name who answered and why.
        """
        state = next_state(alert.state, cause, alert_id=alert.code or alert.id)
        changes: dict[str, Any] = {"state": state.value, "revision": alert.revision + 1, "updated": now,
                                   "answer": answer}
        if suggestion is not None:
            changes["suggestion"] = suggestion
        if evidence_added:
            changes["evidence"] = {**alert.evidence, **evidence_added}
        changed = replace(alert, **changes)
        self.journal.save_alert(changed, actor=actor, note=note)
        self.announcer.alert(changed, announces(state), now)
        if state in RESOLVED_STATES:
            self.counts["alerts_resolved"] += 1
        return changed

    def returned_on_the_wire(self, txn: Transaction, now: datetime) -> None:
        """A void, reversal or refund that points at a flagged transaction settles the finding.

        A void pointing at an escalated alert is not its remedy (no void after settlement): the
        voucher number was reused by a later transaction, so that alert stays as it is. A slip
        from the printer tap only claims a void while a terminal line can confirm it (lifecycle.py).
        """
        printed = txn.source == PRINTED_SOURCE
        cause = printed_cause(txn.kind, terminal_line=self.terminal_line) if printed else wire_cause(txn.kind)
        actor = Actor.PRINTER if printed else Actor.TERMINAL
        ref = txn.voucher_no or txn.receipt_no or txn.trace_no or ""
        what = f"{txn.kind} {ref}".strip()
        if cause is Cause.PRINTED_VOID:
            note = f"{what} slip printed, not yet confirmed by the terminal"
        elif printed:
            note = f"{what} slip printed (no terminal line to confirm it)"
        else:
            note = what
        for alert in self.journal.alerts_referencing(txn.terminal_id, txn.original_voucher_no, txn.original_rrn,
                                                     states=states_allowing(cause)):
            self.apply(alert, cause, now, actor=actor.value, note=note)

    def batch_closed(self, terminal_id: str | None, batch_no: str | None, now: datetime, *, by_cutoff: bool) -> None:
        """The batch settled: a void is no longer possible, so open findings turn into refund guidance."""
        reason = "cutoff" if by_cutoff else "settlement"
        candidates = states_allowing(Cause.EXPIRY) | states_allowing(Cause.SETTLEMENT)
        for alert in self.journal.alerts_in_batch(terminal_id, batch_no, states=candidates):
            cause = batch_closed_cause(closing_remedy(alert), by_cutoff=by_cutoff)
            unconfirmed = _UNCONFIRMED.get(AlertState(alert.state))
            if cause is Cause.EXPIRY:
                why = unconfirmed or "before anyone checked it"
                self.apply(alert, cause, now, actor=Actor.SETTLEGUARD.value, note=f"batch closed ({reason}) {why}")
            else:
                self._escalate(alert, cause, now, note=f"batch settled; {unconfirmed}" if unconfirmed else None)

    def _escalate(self, alert: Alert, cause: Cause, now: datetime, *, note: str | None = None) -> None:
        """The batch closed with a likely error open: refund guidance, and the evidence to get the money back."""
        subject = alert.transactions[-1]
        suggestion = self.remedies.take_back(subject, deadline=None, tz=self.tz, meant_minor=_meant(alert.evidence),
                                             settled=True)
        guided = replace(alert, suggestion=suggestion)
        totals = batch_totals(self.journal, subject, self.tz, now)
        statement = statement_zh(guided, self.remedies.shop, totals, tz=self.tz, now=now,
                                 title_zh=rule_title_zh(alert.rule))
        added: dict[str, Any] = {"batch": totals, "statement_zh": statement}
        if AlertState(alert.state) in _UNCONFIRMED:
            # A void a slip or a person reported and the terminal never showed: the message must say so
            # (the owner's fraud signal), not only the alert log.
            added["unconfirmed"] = alert.state
        bundle = self._write_evidence(replace(guided, evidence={**alert.evidence, **added}), now,
                                      totals=totals, statement=statement)
        if bundle is not None:
            added["bundle"] = str(bundle)
        escalated = self.apply(alert, cause, now, actor=Actor.SETTLEGUARD.value,
                               note=note or "batch settled with the finding open", suggestion=suggestion,
                               evidence_added=added)
        self.counts["alerts_escalated"] += 1
        if bundle is not None:
            # The bundle records the escalation message too; rewrite it now that the revision exists.
            self._write_evidence(escalated, now, totals=totals, statement=statement, path=bundle)

    def _write_evidence(self, alert: Alert, now: datetime, *, totals: dict[str, Any], statement: str,
                        path: Path | None = None) -> Path | None:
        """Everything a refund claim needs, as files a person can hand over (evidence/<date>-<id>/)."""
        if self.evidence_dir is None:
            return None
        return write_bundle(self.journal, alert, now=now, tz=self.tz, root=self.evidence_dir,
                            shop=self.remedies.shop, totals=totals, statement=statement, path=path)

    # -- staff answers ----------------------------------------------------------------------------
    def find(self, text: str) -> Alert:
        """The alert a person means by ``text``: a short code (any case), a full id, or a unique prefix.

        An active alert's code is unique, so it wins; a code whose alert is over may have been reused,
        and an ambiguous prefix names several: both raise AmbiguousAlert listing the candidates (code,
        id, state) — an answer is never applied to one alert picked among several. NoSuchAlert if none.
        """
        alert = self.journal.get_alert(text)
        if alert is not None:
            return alert
        wanted = text.strip().upper()
        if not wanted:
            raise NoSuchAlert("no alert given")
        active = self.journal.alerts_with_code(wanted, states=ACTIVE_STATES)
        if len(active) == 1:
            return self._get(active[0][0], text)
        candidates, total = self.journal.alerts_starting(wanted, limit=SHOW_CANDIDATES)
        if total == 0:
            raise NoSuchAlert(f"no alert {text}")
        if total == 1:
            return self._get(candidates[0][0], text)
        listed = "; ".join(f"{code or '-'} {alert_id} ({state})" for alert_id, code, state in candidates)
        more = f"; and {total - len(candidates)} more" if total > len(candidates) else ""
        raise AmbiguousAlert(f"{text} matches {total} alerts: {listed}{more}; give the full code or more of the id")

    def _get(self, alert_id: str, text: str) -> Alert:
        found = self.journal.get_alert(alert_id)
        if found is None:
            raise NoSuchAlert(f"no alert {text}")
        return found

    def answer(self, text: str, answer: str, now: datetime, *, by: str, note: str | None,
               role: str = "manager") -> Alert:
        """A person's answer (the till page, ``ack``, the control socket): one set, one set of checks.

        Raises NoSuchAlert, AmbiguousAlert, IllegalTransition or AnswerRefused; str() says what to do.
        """
        if STAFF_ANSWERS.get(answer) is None:
            raise AnswerRefused(f"answer must be one of {', '.join(STAFF_ANSWERS)}")
        if role not in ROLES:
            raise AnswerRefused(f"role must be one of {', '.join(ROLES)}")
        alert = self.find(text)
        cause = staff_cause(answer, terminal_line=self.terminal_line, in_app=paid_in_app(alert.evidence))
        if cause is None or WHO[cause] is not Actor.STAFF:
            raise AnswerRefused("a wallet payment (WeChat Pay, Alipay, QR) cannot be voided on the terminal: refund "
                                "it in the merchant app and answer refunded / 扫码支付请在商户后台退款后回复“已退货”")
        note = (note or "").strip() or None
        if cause is Cause.STAFF_LEGIT and note is None:
            raise AnswerRefused("legit needs the reason (why the charge is genuine) / 请填写确认正常的原因")
        # legit and refunded close an alert for good on a person's word alone (no terminal confirms either:
        # a refund on the terminal line resolves the alert by itself), so legit_needs governs both.
        if cause in _WORD_ONLY and self.legit_needs == "manager" and role != "manager":
            raise AnswerRefused(_WORD_ONLY[cause])
        record = {"answer": answer, "by": by, "role": role, "note": note, "at": now.astimezone(self.tz).isoformat()}
        return self.apply(alert, cause, now, actor=by, note=note, answer=record)

    def ack(self, args: Mapping[str, Any], now: datetime) -> dict[str, Any]:
        """The ``ack`` command (daemon or offline, the till page) as the reply the caller shows."""
        # The control socket and the page validated these already; checked again because this runs on
        # the pipeline thread, where a bad value must be a refusal, never an exception.
        text, by, note = args.get("id"), args.get("by"), args.get("note")
        answer, role = str(args.get("answer")), args.get("role") or "manager"
        if not isinstance(text, str) or not text:
            return {"ok": False, "error": "ack needs the alert's code or id"}
        if not isinstance(by, str | None) or not isinstance(note, str | None) or not isinstance(role, str):
            return {"ok": False, "error": "by, note and role must be text"}
        actor = by or Actor.STAFF.value
        try:
            alert = self.answer(text, answer, now, by=actor, note=note, role=role)
        except NoSuchAlert as exc:
            return {"ok": False, "error": str(exc), "reason": "not_found"}
        except AmbiguousAlert as exc:
            return {"ok": False, "error": str(exc), "reason": "ambiguous"}
        except AnswerRefused as exc:
            return {"ok": False, "error": str(exc), "reason": "refused"}
        except IllegalTransition as exc:
            return {"ok": False, "error": str(exc), "reason": "conflict", "state": exc.state.value}
        return {"ok": True, "alert": alert.to_dict(), "actor": actor}


_REFUND_BY_MANAGER = ("only a manager may record a refund done outside the terminal on this till / "
                      "仅店长可登记终端以外完成的退款")
_WORD_ONLY: dict[Cause, str] = {
    Cause.STAFF_LEGIT: "only a manager may mark a charge genuine on this till / 仅店长可确认正常交易",
    Cause.STAFF_REFUNDED: _REFUND_BY_MANAGER,
    Cause.STAFF_APP_REFUNDED: _REFUND_BY_MANAGER,
}


def paid_in_app(evidence: Mapping[str, Any]) -> bool:
    """A wallet payment, refunded in its merchant app: the remedy the alert's evidence recorded
    (agent/alerts/remedy.py); the alert book and the till page ask the same question."""
    remedy = evidence.get("remedy") if isinstance(evidence, Mapping) else None
    return isinstance(remedy, dict) and remedy.get("where") == "app"


class AnswerRefused(ValueError):
    """An answer refused before it reaches the table: unknown, no reason for legit, or a role not allowed."""


# Why an alert claimed as voided (by a slip or a person) but never confirmed ends as it does.
_UNCONFIRMED: dict[AlertState, str] = {
    AlertState.VOID_PRINTED: "the printed void was never confirmed by the terminal",
    AlertState.VOID_CLAIMED: "the void staff reported was never seen on the terminal",
}


def closing_remedy(alert: Alert) -> str | None:
    """What a closing batch makes of an alert (lifecycle.batch_closed_cause): a likely error that asked to
    take the money back (a void, or a wallet's refund, which no batch ends) becomes a refund case; anything
    to verify, or that asked only for a check, expires."""
    action = alert.suggestion.action if alert.suggestion is not None else None
    if alert.certainty == "error" and action in ("void", "refund"):
        return "void"
    return "check"


def _meant(evidence: Mapping[str, Any]) -> int | None:
    """The amount a decimal slip meant (AMT-001's evidence), so the remedy charges it again."""
    meant = evidence.get("meant_minor")
    return meant if isinstance(meant, int) and not isinstance(meant, bool) and meant > 0 else None


def finding_certainty(finding: Finding) -> str:
    """The finding's certainty: the rule's own declaration, else its action (a void asked = a likely error)."""
    declared = getattr(finding, "certainty", None)
    if isinstance(declared, str) and declared:
        return declared
    return "error" if finding.action == "void" else "verify"
