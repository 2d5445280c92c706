"""The alert book: opens alerts from findings and moves them by the lifecycle's table.

Every change goes through :meth:`AlertBook.apply`, which asks
:func:`agent.alerts.lifecycle.next_state`, saves the new revision in the
journal and announces it. The callers are the pipeline (findings, returning
transactions on the wire, batches closing, ``ack`` through the daemon) and the
offline ``ack``; all of them run inside a journal transaction they own.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import datetime, time, tzinfo
from pathlib import Path
from typing import Any

from agent.alerts.announce import Announcer
from agent.alerts.lifecycle import (
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
    states_allowing,
    wire_cause,
)
from agent.alerts.remedy import check_suggestion, next_cutoff, refund_suggestion, void_suggestion
from agent.model import Alert, Suggestion, Transaction, new_ulid
from agent.rules.base import Finding
from agent.store.journal import Journal


class NoSuchAlert(LookupError):
    """No alert has that id (or id prefix)."""


class AmbiguousAlert(LookupError):
    """A short code that names more than one alert; str() lists the candidates."""


# How many candidates an ambiguous short code lists.
SHOW_CANDIDATES = 10
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
                 terminal_line: bool = False) -> None:
        self.journal = journal
        self.terminal_line = terminal_line
        self.announcer = announcer
        self.tz = tz
        self.cutoff = cutoff
        # The pipeline's counters (status line, metrics, replay summary), shared so they roll back together.
        self.counts: dict[str, int] = counts if counts is not None else Counter()
        self.evidence_dir = evidence_dir

    def reconfigure(self, *, tz: tzinfo, cutoff: time | None, terminal_line: bool | None = None) -> None:
        self.tz, self.cutoff = tz, cutoff
        if terminal_line is not None:
            self.terminal_line = terminal_line

    # -- opening ---------------------------------------------------------------------------
    def open(self, finding: Finding, now: datetime) -> Alert | None:
        """A new alert for a finding; None when this finding already has one (it is never a second alert)."""
        subject = finding.subject
        if self.journal.alert_for(finding.rule, subject.key) is not None:
            return None
        deadline = next_cutoff(subject.utc, self.cutoff, self.tz)
        if finding.action == "void":
            suggestion = void_suggestion(subject.txn, deadline=deadline, tz=self.tz)
        else:
            suggestion = check_suggestion(subject.txn, deadline=deadline, tz=self.tz)
        alert = Alert(
            id=new_ulid(now), revision=1, rule=finding.rule, rule_version=finding.version,
            severity=finding.severity, state=INITIAL.value, reason=finding.reason_en, reason_zh=finding.reason_zh,
            evidence=finding.evidence, transactions=tuple(v.txn for v in (*finding.related, subject)),
            suggestion=suggestion, created=now, updated=now, key=subject.key,
        )
        self.journal.save_alert(alert, actor=Actor.SETTLEGUARD.value)
        self.announcer.alert(alert, announces(alert.state), now)
        self.counts["alerts_opened"] += 1
        return alert

    # -- the changes ----------------------------------------------------------------------------
    def apply(self, alert: Alert, cause: Cause, now: datetime, *, actor: str, note: str | None,
              suggestion: Suggestion | None = None, evidence_bundle: str | None = None) -> Alert:
        """The next revision of ``alert`` after ``cause``, saved and announced; IllegalTransition if it may not."""
        state = next_state(alert.state, cause, alert_id=alert.id)
        changes: dict[str, Any] = {"state": state.value, "revision": alert.revision + 1, "updated": now}
        if suggestion is not None:
            changes["suggestion"] = suggestion
        if evidence_bundle is not None:
            changes["evidence"] = {**alert.evidence, "bundle": evidence_bundle}
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
            remedy = alert.suggestion.action if alert.suggestion is not None else None
            cause = batch_closed_cause(remedy, by_cutoff=by_cutoff)
            unconfirmed = alert.state == AlertState.VOID_PRINTED
            if cause is Cause.EXPIRY:
                why = ("the printed void was never confirmed by the terminal" if unconfirmed
                       else "before anyone checked it")
                self.apply(alert, cause, now, actor=Actor.SETTLEGUARD.value, note=f"batch closed ({reason}) {why}")
            else:
                self._escalate(alert, cause, now, note=("batch settled; the printed void was never confirmed by "
                                                        "the terminal") if unconfirmed else None)

    def _escalate(self, alert: Alert, cause: Cause, now: datetime, *, note: str | None = None) -> None:
        subject = alert.transactions[-1]
        bundle = self._write_evidence(alert, now)
        suggestion = refund_suggestion(subject, tz=self.tz, evidence_path=str(bundle) if bundle else None)
        escalated = self.apply(alert, cause, now, actor=Actor.SETTLEGUARD.value,
                               note=note or "batch settled with the finding open", suggestion=suggestion,
                               evidence_bundle=str(bundle) if bundle else None)
        self.counts["alerts_escalated"] += 1
        if bundle is not None:
            # The bundle records the escalation message too; rewrite it now that the revision exists.
            self._write_evidence(escalated, now, path=bundle)

    def _write_evidence(self, alert: Alert, now: datetime, path: Path | None = None) -> Path | None:
        """Everything a refund dispute needs, as files a person can open (evidence/<date>-<id>/)."""
        if self.evidence_dir is None:
            return None
        from agent.alerts.evidence import write_bundle

        return write_bundle(self.journal, alert, now=now, tz=self.tz, root=self.evidence_dir, path=path)

    # -- staff answers ----------------------------------------------------------------------------
    def find(self, code: str) -> Alert:
        """The alert with this exact id, or the only one whose id starts with ``code``.

        Raises NoSuchAlert, or AmbiguousAlert listing the candidates: an answer is never applied to
        one alert picked among several.
        """
        alert = self.journal.get_alert(code)
        if alert is not None:
            return alert
        ids, total = self.journal.alert_ids_matching(code, limit=SHOW_CANDIDATES)
        if total == 0:
            raise NoSuchAlert(f"no alert {code}")
        if total > 1:
            more = f" and {total - len(ids)} more" if total > len(ids) else ""
            raise AmbiguousAlert(f"{code} matches {total} alerts ({', '.join(ids)}{more}); give more of the id")
        found = self.journal.get_alert(ids[0])
        if found is None:
            raise NoSuchAlert(f"no alert {code}")
        return found

    def answer(self, alert_id: str, cause: Cause, now: datetime, *, by: str, note: str | None) -> Alert:
        """A staff answer; raises NoSuchAlert, AmbiguousAlert or IllegalTransition (str() says what to do)."""
        alert = self.find(alert_id)
        if WHO[cause] is not Actor.STAFF:
            raise IllegalTransition(AlertState(alert.state), cause, f"{cause} is not for staff to answer")
        return self.apply(alert, cause, now, actor=by, note=note)

    def ack(self, args: Mapping[str, Any], now: datetime) -> dict[str, Any]:
        """The ``ack`` command (daemon or offline) as the reply the CLI prints."""
        cause = STAFF_ANSWERS.get(str(args.get("answer")))
        if cause is None:
            return {"ok": False, "error": f"answer must be one of {', '.join(STAFF_ANSWERS)}"}
        # The control socket validated these already; checked again because this runs on the
        # pipeline thread, where a bad value must be a refusal, never an exception.
        alert_id, by, note = args.get("id"), args.get("by"), args.get("note")
        if not isinstance(alert_id, str) or not alert_id:
            return {"ok": False, "error": "ack needs the alert id"}
        if not isinstance(by, str | None) or not isinstance(note, str | None):
            return {"ok": False, "error": "by and note must be text"}
        actor = by or Actor.STAFF.value
        try:
            alert = self.answer(alert_id, cause, now, by=actor, note=note)
        except (NoSuchAlert, AmbiguousAlert, IllegalTransition) as exc:
            return {"ok": False, "error": str(exc)}
        return {"ok": True, "alert": alert.to_dict(), "actor": actor}

