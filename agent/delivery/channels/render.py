"""(Over 500 lines: the wording of every notice kind in one place, so each sentence reads the same everywhere.)

Notices as people read them on a phone: what to do and by when, then why, then the details.

:func:`compose` turns a :class:`Notice` into a :class:`Document` (``layout.py`` lays it out for a
robot and splits it to the robot's size limit). The shape of every message about an alert:

1. the one instruction, once, with its deadline: "23:00 前撤销 RMB 128.00（14:03，凭证号 000123）";
   a finding to *verify* says what to check instead and never reads as an order to void;
2. why, in plain words: the rule's title and its reason without scores ("(多输零评分 10.1 >= 4)");
3. the details: short code, risk, card, time left; the terminal steps (a likely error only); how to
   answer — the till page link when ``[web] public_url`` is set, else the ``settleguard ack`` command;
   a verify finding ends with "如属正常交易，无需处理".

A revision a person's answer produced names them ("小王 确认正常：客人确实买了两份"). Several alerts
(digest, review, resolutions) are sorted by severity, then amount, largest first. Chinese only unless
the channel asked for ``languages = ["zh", "en"]``. Every string goes through ``layout.clean_text``
(no line break, no link, no PAN from any value); the one link is built here from checked parts only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any
from urllib.parse import urlsplit

from agent.alerts.lifecycle import CLAIMED_STATES, RESOLUTION_NOTICES, STATE_LABELS, AlertState, NoticeKind
from agent.delivery.channels.base import Notice
from agent.delivery.channels.layout import (
    Document,
    Line,
    Style,
    clean_text,
    md_escape,
    scrubbed,
    to_feishu_posts,
    to_markdown,
    to_markdown_parts,
    to_text,
    to_text_parts,
)
from agent.model import CODE_ALPHABET, SEVERITY_RANK
from agent.units import format_money
from drivers.timeutil import aware_time

__all__ = [
    "DINGTALK_MARKDOWN_LIMIT", "FEISHU_BODY_LIMIT", "FEISHU_CONTENT_LIMIT", "WECOM_MARKDOWN_LIMIT",
    "Document", "Line", "alert_link", "check_public_url", "clean_text", "compose", "facts", "md_escape",
    "to_feishu_posts", "to_markdown", "to_markdown_parts", "to_text", "to_text_parts",
]

# Published limits of the robots, bytes of UTF-8.
# WeCom group robot, markdown.content: "最长不超过4096个字节，必须是utf8编码"
#   (https://developer.work.weixin.qq.com/document/path/91770).
WECOM_MARKDOWN_LIMIT = 4096
# DingTalk custom robot (https://open.dingtalk.com/document/orgapp/custom-robot-access, message types at
# /document/development/robot-message-type) publishes no byte limit for markdown.text, only 20 messages
# a minute; 20,000 bytes is the figure integrators report for its text messages, so it is kept as the
# bound here (a smaller part costs one more message, a larger one risks a refusal).
DINGTALK_MARKDOWN_LIMIT = 20000
# Feishu custom bot: "请求体大小不能超过20k" (code 9499 Bad Request otherwise;
# https://open.feishu.cn/document/client-docs/bot-v3/add-custom-bot). 20,000 rather than 20 KiB,
# and the post content leaves room for the envelope, timestamp and sign.
FEISHU_BODY_LIMIT = 20000
FEISHU_CONTENT_LIMIT = FEISHU_BODY_LIMIT - 512

SEVERITY_LABEL = {"high": ("高", "high"), "medium": ("中", "medium"), "low": ("低", "low")}
Languages = Sequence[str]
ZH_ONLY: tuple[str, ...] = ("zh",)
# The fields of a transaction that identify it to staff, and what each is called on the slip.
IDENTIFIERS = (("voucher_no", "凭证号", "voucher"), ("receipt_no", "票据号", "receipt"),
               ("trace_no", "流水号", "trace no."), ("rrn", "参考号", "RRN"))
# Kept for callers that read the voucher the way a suggestion does.
VOUCHER_FIELDS = tuple(name for name, _, _ in IDENTIFIERS)
VERIFY_FOOTER = ("如属正常交易，无需处理", "If it is a genuine sale, nothing needs doing")


# ---------------------------------------------------------------------------- the one link


_URL_UNSAFE = re.compile(r"[\s()<>\[\]\"'`\\{}|^]")


def check_public_url(url: str) -> str:
    """The till page's base address as links may use it; ValueError when it could not be one.

    http(s) with a host, and none of the characters that would end a markdown link or a chat client's
    autolink early (spaces, brackets, quotes): the address goes into messages unescaped.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("public_url must be an http:// or https:// address with a host")
    if _URL_UNSAFE.search(url) or parts.query or parts.fragment:
        raise ValueError("public_url must be a plain address (no spaces, brackets, quotes, query or fragment)")
    return url.rstrip("/")


def alert_link(public_url: str | None, code: Any) -> str | None:
    """``{public_url}/a/{code}`` (the till page's route for one alert), or None without a page or a code."""
    if not public_url or not isinstance(code, str):
        return None
    if not 4 <= len(code) <= 5 or any(ch not in CODE_ALPHABET for ch in code):
        return None
    return f"{check_public_url(public_url)}/a/{code}"


# ---------------------------------------------------------------------------- alert fields


def rule_titles(alert: Mapping[str, Any]) -> tuple[str, str]:
    """(zh, en) title of the alert's rule: from the alert if it carries one, else the catalogue."""
    rule = str(alert.get("rule") or "")
    zh, en = alert.get("title_zh"), alert.get("title_en")
    if isinstance(zh, str) and isinstance(en, str):
        return zh, en
    from agent.rules import RULES  # the catalogue pulls in pydantic; only needed for a live alert

    cls = RULES.get(rule)
    return (getattr(cls, "title_zh", rule), getattr(cls, "title_en", rule)) if cls else (rule, rule)


def _parse_time(value: Any, tz: tzinfo | None) -> datetime | None:
    parsed = aware_time(value)
    return parsed.astimezone(tz) if parsed and tz else parsed


def _local(when: datetime, tz: tzinfo | None) -> datetime:
    return when.astimezone(tz) if tz else when


def _present(value: Any) -> str | None:
    """A value worth printing: not empty, not a placeholder another layer left ("None", "?")."""
    if value is None:
        return None
    text = str(value).strip()
    return text if text and text not in ("None", "null", "?", "？") else None


def subject_transaction(alert: Mapping[str, Any]) -> dict[str, Any]:
    """The transaction the suggestion acts on (the one to void), else the latest one involved."""
    txns = [t for t in alert.get("transactions") or [] if isinstance(t, dict)]
    if not txns:
        return {}
    suggestion = alert.get("suggestion") or {}
    ref = _present(suggestion.get("voucher_no")) if isinstance(suggestion, dict) else None
    if ref:
        for txn in txns:
            if ref in (txn.get(name) for name in VOUCHER_FIELDS):
                return txn
    return txns[-1]


def identify(txn: Mapping[str, Any], suggestion: Mapping[str, Any]) -> tuple[str, str] | None:
    """(zh, en) of the number that finds this transaction on the terminal: voucher, receipt, trace or
    RRN, named as such; None when it has none (time and amount then identify it)."""
    for name, zh, en in IDENTIFIERS:
        value = _present(txn.get(name))
        if value:
            return f"{zh} {value}", f"{en} {value}"
    value = _present(suggestion.get("voucher_no"))
    return (f"凭证号 {value}", f"voucher {value}") if value else None


def time_left(deadline: datetime, now: datetime) -> tuple[str, str]:
    """(zh, en) remaining time, to the minute; past deadlines say so."""
    seconds = int((deadline - now).total_seconds())
    if seconds <= 0:
        return "已过截止时间", "deadline passed"
    hours, minutes = divmod((seconds + 59) // 60, 60)
    if hours:
        return f"还剩 {hours} 小时 {minutes} 分", f"{hours} h {minutes} min left"
    return f"还剩 {minutes} 分", f"{minutes} min left"


# A parenthetical holding a number and a comparison: a score ("(多输零评分 10.1 >= 4)"), not words.
_SCORE = re.compile(r"\s*[（(][^（）()]*\d[^（）()]*(?:>=|<=|≥|≤|>|<|=|≠)[^（）()]*[）)]")


def plain_words(text: str) -> str:
    """A rule's reason without its score parentheticals."""
    return _SCORE.sub("", text).strip()


# Local paths (an evidence bundle under /var/lib/...) mean nothing on a phone.
_EVIDENCE_PATH = re.compile(r"\s*证据包\s*/\s*evidence:\s*\S+|\s*evidence(?: bundle)?:\s*/\S+")
_PATH = re.compile(r"(?<![\w:/.])/(?:[^\s/，。；：]+/)+[^\s，。；：]*")
# The instruction before the colon of a remedy's steps ("请在 23:00 前撤销凭证号 000123（…）：…") is what
# line 1 already says; only the steps after it are kept, so the instruction is said once.
_INSTRUCTION_HEAD = re.compile(r"^(?:(?:请在|请核对|该批次已结算)[^：]{0,200}?："
                               r"|(?:Void voucher|Check voucher|The batch has settled).{0,200}?: )")


def bare_steps(text: str) -> str:
    text = _EVIDENCE_PATH.sub("", text)
    text = _PATH.sub("", text)
    return _INSTRUCTION_HEAD.sub("", text.strip(), count=1).strip()


@dataclass(frozen=True, slots=True)
class AlertFacts:
    """What every layout says about one alert, already worded (zh, en)."""

    code: str | None
    rule: str
    state: str
    certainty: str           # "error" | "verify"
    severity: str
    severity_zh: str
    severity_en: str
    title_zh: str
    title_en: str
    why_zh: str
    why_en: str
    amount: str
    amount_minor: int
    hhmm: str | None
    date: str | None
    ident: tuple[str, str] | None
    card: str | None
    action: str | None
    deadline: str | None
    left: tuple[str, str] | None
    steps_zh: str
    steps_en: str
    answer: Mapping[str, Any] | None
    link: str | None
    # A wallet payment (evidence.remedy.where == "app"): refunded in that platform, whatever the batch.
    app: tuple[str, str] | None = None
    # Escalated although a void was reported (evidence.unconfirmed = void_claimed | void_printed).
    unconfirmed: str | None = None

    @property
    def verify(self) -> bool:
        return self.certainty == "verify"

    def what(self, with_date: bool = False) -> tuple[str, str]:
        """(zh, en) "RMB 128.00（14:03，凭证号 000123）": the amount and what finds it."""
        when = f"{self.date} {self.hhmm}" if with_date and self.date and self.hhmm else self.hhmm
        zh = [x for x in (when, self.ident[0] if self.ident else None) if x]
        en = [x for x in (when, self.ident[1] if self.ident else None) if x]
        return (f"{self.amount}（{'，'.join(zh)}）" if zh else self.amount,
                f"{self.amount} ({', '.join(en)})" if en else self.amount)


def facts(alert: Mapping[str, Any], *, notice_deadline: datetime | None, now: datetime,
          tz: tzinfo | None, public_url: str | None = None) -> AlertFacts:
    txn = subject_transaction(alert)
    raw_suggestion = alert.get("suggestion")
    suggestion: Mapping[str, Any] = raw_suggestion if isinstance(raw_suggestion, dict) else {}
    title_zh, title_en = rule_titles(alert)
    severity = str(alert.get("severity") or "")
    sev_zh, sev_en = SEVERITY_LABEL.get(severity, ("", severity))
    amount_minor = suggestion.get("amount_minor", txn.get("amount_minor"))
    if not isinstance(amount_minor, int):
        amount_minor = 0
    when = _parse_time(txn.get("time"), tz)
    deadline = _parse_time(suggestion.get("deadline"), tz) or (
        _local(notice_deadline, tz) if notice_deadline else None)
    deadline_text = left = None
    if deadline is not None:
        same_day = deadline.date() == _local(now, deadline.tzinfo).date()
        deadline_text = deadline.strftime("%H:%M" if same_day else "%m-%d %H:%M")
        left = time_left(deadline, now)
    evidence = alert.get("evidence") if isinstance(alert.get("evidence"), dict) else {}
    assert isinstance(evidence, dict)
    # A rule may say why in plain words itself (evidence.plain_zh / plain_en); else its reason, unscored.
    reason_en = str(alert.get("reason") or "")
    why_zh = str(evidence.get("plain_zh") or plain_words(str(alert.get("reason_zh") or reason_en)))
    why_en = str(evidence.get("plain_en") or plain_words(reason_en))
    answer = alert.get("answer") if isinstance(alert.get("answer"), dict) else None
    code = alert.get("code") if isinstance(alert.get("code"), str) and alert.get("code") else None
    return AlertFacts(
        code=code, rule=str(alert.get("rule") or ""), state=str(alert.get("state") or AlertState.OPEN),
        certainty="verify" if alert.get("certainty") == "verify" else "error",
        severity=severity, severity_zh=sev_zh, severity_en=sev_en, title_zh=title_zh, title_en=title_en,
        why_zh=why_zh, why_en=why_en,
        amount=format_money(amount_minor, txn.get("currency")) if amount_minor else "",
        amount_minor=amount_minor,
        hhmm=when.strftime("%H:%M") if when else None, date=when.strftime("%Y-%m-%d") if when else None,
        ident=identify(txn, suggestion), card=_present(txn.get("card")),
        action=_present(suggestion.get("action")), deadline=deadline_text, left=left,
        steps_zh=bare_steps(str(suggestion.get("steps_zh") or "")),
        steps_en=bare_steps(str(suggestion.get("steps_en") or "")),
        answer=answer, link=alert_link(public_url, code), app=_app(evidence),
        unconfirmed=_present(evidence.get("unconfirmed")),
    )


def _app(evidence: Mapping[str, Any]) -> tuple[str, str] | None:
    """(zh, en) of the platform a wallet payment is refunded in; None for a terminal's payment."""
    remedy = evidence.get("remedy")
    if not isinstance(remedy, dict) or remedy.get("where") != "app":
        return None
    zh = _present(remedy.get("method_zh")) or "支付平台"
    en = _present(remedy.get("method")) or "payment platform"
    return zh, en.replace("_", " ")


# ---------------------------------------------------------------------------- sentences


def instruction(f: AlertFacts) -> tuple[str, str]:
    """Line 1 of an alert still to be dealt with: (zh, en) what to do and by when."""
    if f.state in CLAIMED_STATES:
        zh, en = STATE_LABELS[f.state]
        what_zh, what_en = f.what()
        return f"{zh}：{what_zh}", f"{en}: {what_en}"
    settled = f.action == "refund"
    what_zh, what_en = f.what(with_date=settled)
    by_zh = f"请在 {f.deadline} 前" if f.deadline and not settled else "请"
    by_en = f" before {f.deadline}" if f.deadline and not settled else ""
    if f.verify or f.action not in ("void", "refund"):
        tail_zh, tail_en = ("（批次已结算）", " (the batch has settled)") if settled else ("", "")
        gap = "" if what_zh.endswith("）") else " "
        return (f"{by_zh}核对 {what_zh}{gap}是否为真实交易{tail_zh}",
                f"Check{by_en} whether {what_en} is a genuine sale{tail_en}")
    if settled and f.app is not None:
        # No terminal batch ends a wallet payment: it is refunded in the platform, settled or not.
        return (f"请在{f.app[0]}商户后台退款 {what_zh}", f"Refund {what_en} in the {f.app[1]} merchant app")
    if settled and f.unconfirmed in UNCONFIRMED:
        said_zh, said_en = UNCONFIRMED[f.unconfirmed]
        return (f"需退货 {what_zh}：{said_zh}，终端未见撤销，批次已结算",
                f"Refund {what_en}: {said_en}, but the terminal never showed it and the batch has settled")
    if settled:
        return (f"需退货 {what_zh}：批次已结算，无法撤销",
                f"Refund {what_en}: the batch has settled, a void is no longer possible")
    return (f"{f.deadline} 前撤销 {what_zh}" if f.deadline else f"结算前撤销 {what_zh}",
            f"Void {what_en}{by_en or ' before settlement'}")


# Who reported a void the terminal never showed, as the escalation's first line says it.
UNCONFIRMED: dict[str, tuple[str, str]] = {
    AlertState.VOID_CLAIMED: ("员工报已撤销", "a void was reported by staff"),
    AlertState.VOID_PRINTED: ("打印了撤销单", "a void slip was printed"),
}


def answered(f: AlertFacts) -> tuple[str, str] | None:
    """(zh, en) of the person whose answer produced this revision: "小王 确认正常：客人确实买了两份"."""
    if not f.answer:
        return None
    role = str(f.answer.get("role") or "")
    by = _present(f.answer.get("by")) or {"manager": "店长", "cashier": "收银员"}.get(role, "员工")
    by_en = _present(f.answer.get("by")) or {"manager": "the manager", "cashier": "a cashier"}.get(role, "staff")
    note = _present(f.answer.get("note"))
    note_zh, note_en = (f"：{note}", f": {note}") if note else ("", "")
    if f.state == AlertState.DISMISSED:
        return f"{by} 确认正常{note_zh}", f"{by_en} confirmed it is genuine{note_en}"
    if f.state == AlertState.VOID_CLAIMED:
        return f"{by} 已撤销（等待终端确认）{note_zh}", f"{by_en} voided it (waiting for the terminal){note_en}"
    if f.state == AlertState.REFUNDED:
        return f"{by} 已退货{note_zh}", f"{by_en} refunded it{note_en}"
    if f.state == AlertState.VOIDED:
        return f"{by} 已撤销{note_zh}", f"{by_en} voided it{note_en}"
    return None


# The lifecycle's own labels, except where a phone needs other words.
OUTCOME: dict[str, tuple[str, str]] = {
    **STATE_LABELS,
    AlertState.DISMISSED: ("已确认正常", "confirmed genuine"),
    # Nobody checked it: not "resolved".
    AlertState.EXPIRED: ("未核对，已随批次结算过期", "not checked; expired with the batch"),
}


def outcome(f: AlertFacts) -> tuple[str, str]:
    """(zh, en) of what became of an alert: who answered, else its state."""
    return answered(f) or OUTCOME.get(f.state, (f.state, f.state))


def _reply(f: AlertFacts) -> tuple[str, str] | None:
    """How to answer without the till page: the code and the command."""
    if not f.code:
        return None
    legit_zh = f"settleguard ack {f.code} --legit --note 原因"
    legit_en = f"settleguard ack {f.code} --legit --note why"
    if f.verify or f.action not in ("void", "refund"):
        return f"核对后可回复：{legit_zh}", f"Answer after checking: {legit_en}"
    done = "--refunded" if f.action == "refund" else "--voided"
    word = "退货" if f.action == "refund" else "撤销"
    return (f"{word}后回复：settleguard ack {f.code} {done}；如属正常交易：{legit_zh}",
            f"Then answer: settleguard ack {f.code} {done}; if genuine: {legit_en}")


# ---------------------------------------------------------------------------- composing


class _Out:
    """Lines in the channel's languages: each sentence in Chinese, then in English when asked."""

    def __init__(self, languages: Languages) -> None:
        self.zh = "zh" in languages
        self.en = "en" in languages

    def say(self, zh: str, en: str, style: Style = "plain") -> list[Line]:
        lines = [Line(zh, style)] if self.zh else []
        if self.en and en and (en != zh or not self.zh):
            lines.append(Line(en, "plain" if self.zh and style == "strong" else style))
        return lines

    def both(self, zh: str, en: str) -> str:
        """One line holding both (a headline, a title)."""
        if self.zh and self.en and en and en != zh:
            return f"{zh} / {en}"
        return zh if self.zh else en


def _details(f: AlertFacts, out: _Out, *, extra: tuple[str, str] | None = None) -> list[Line]:
    zh = [f"编号 {f.code}" if f.code else "", f"风险{f.severity_zh}" if f.severity_zh else "",
          f"卡号 {f.card}" if f.card else "", f.left[0] if f.left and f.action != "refund" else ""]
    en = [f"code {f.code}" if f.code else "", f"{f.severity_en} risk" if f.severity_en else "",
          f"card {f.card}" if f.card else "", f.left[1] if f.left and f.action != "refund" else ""]
    if extra:
        zh.append(extra[0])
        en.append(extra[1])
    return out.say(" · ".join(x for x in zh if x), " · ".join(x for x in en if x))


def _answer_lines(f: AlertFacts, out: _Out) -> list[Line]:
    if f.link:
        label = out.both(f"在收银台页面处理 {f.code}", f"answer {f.code} on the till page")
        return [Line(label, url=f.link)]
    reply = _reply(f)
    return out.say(*reply) if reply else []


def _todo_block(f: AlertFacts, out: _Out, *, headline: bool, extra: tuple[str, str] | None = None) -> list[Line]:
    """An alert still to be dealt with: [instruction,] why, details, steps, how to answer."""
    lines: list[Line] = []
    if not headline:
        zh, en = instruction(f)
        lines += out.say(zh, en, "strong")
    lines += out.say(f"{f.title_zh}：{f.why_zh}" if f.why_zh else f.title_zh,
                     f"{f.title_en}: {f.why_en}" if f.why_en else f.title_en, "quote")
    lines += _details(f, out, extra=extra)
    if not f.verify and f.state not in CLAIMED_STATES and (f.steps_zh or f.steps_en):
        lines += out.say(f"操作：{f.steps_zh}" if f.steps_zh else "", f"Steps: {f.steps_en}" if f.steps_en else "")
    if f.state not in CLAIMED_STATES or f.link:
        lines += _answer_lines(f, out)
    if f.verify:
        lines += out.say(*VERIFY_FOOTER)
    return [line for line in lines if line.text]


def _outcome_line(f: AlertFacts, out: _Out) -> list[Line]:
    what_zh, what_en = f.what()
    said_zh, said_en = outcome(f)
    code_zh, code_en = (f"{f.code} · ", f"{f.code} · ") if f.code else ("", "")
    line = out.say(f"{code_zh}{f.title_zh} {what_zh}：{said_zh}", f"{code_en}{f.title_en} {what_en}: {said_en}")
    return line + (_answer_lines(f, out) if f.link else [])


def sort_key(alert: Mapping[str, Any]) -> tuple[int, int]:
    """Severity first, then the amount, largest first."""
    suggestion = alert.get("suggestion") if isinstance(alert.get("suggestion"), dict) else {}
    amount = (suggestion or {}).get("amount_minor", subject_transaction(alert).get("amount_minor"))
    return SEVERITY_RANK.get(str(alert.get("severity")), 3), -(amount if isinstance(amount, int) else 0)


# Lines of a review's list kept together in one block (a block is what a split never cuts).
SECTION_CHUNK = 15

_HEADLINES = {
    NoticeKind.DIGEST: ("可疑交易 {n} 条", "{n} suspicious transactions"),
    NoticeKind.REVIEW: ("结算前复核：{n} 条待处理", "Pre-settlement review: {n} open"),
    NoticeKind.ALL_CLEAR: ("今日无待处理异常", "No open findings today"),
    NoticeKind.DEVICE: ("设备需要检查", "Check the equipment"),
}


def _section_blocks(sections: tuple[tuple[str, ...], ...]) -> list[list[Line]]:
    """Each list as blocks of SECTION_CHUNK lines, its heading first (and again, marked, on a later chunk
    that a split puts in another message)."""
    blocks: list[list[Line]] = []
    for heading, *items in sections:
        for start in range(0, max(len(items), 1), SECTION_CHUNK):
            title = heading if start == 0 else f"{heading.rstrip('：:')}（续）"
            blocks.append([Line(title, "strong"), *(Line(item) for item in items[start:start + SECTION_CHUNK])])
    return blocks


def compose(notice: Notice, now: datetime, tz: tzinfo | None = None, *, languages: Languages = ZH_ONLY,
            public_url: str | None = None) -> Document:
    """Everything a notice says, in the channel's languages, before any layout or size limit."""
    out = _Out(languages)
    alerts = sorted(notice.alerts, key=sort_key) if len(notice.alerts) > 1 else list(notice.alerts)
    all_facts = [facts(a, notice_deadline=notice.deadline, now=now, tz=tz, public_url=public_url) for a in alerts]
    stamp = _local(notice.created, tz).strftime("%m-%d %H:%M")
    shop_line = f"{notice.shop} · {stamp}"
    kind = notice.kind
    n = len(all_facts)
    head_zh: str
    head_en: str
    head: list[Line] = []
    blocks: list[list[Line]] = []
    if notice.title is not None:
        head_zh, head_en = notice.title
    elif kind in _HEADLINES:
        head_zh, head_en = (s.format(n=n) for s in _HEADLINES[kind])
    else:
        head_zh, head_en = "", ""
    if kind in RESOLUTION_NOTICES:
        if n == 1 and not head_zh:
            head_zh, head_en = outcome(all_facts[0])
        elif not head_zh:
            unchecked = sum(1 for f in all_facts if f.state == AlertState.EXPIRED and not f.answer)
            done = n - unchecked
            head_zh = "，".join(x for x in (f"已处理 {done} 条" if done else "",
                                            f"未核对 {unchecked} 条" if unchecked else "") if x)
            head_en = ", ".join(x for x in (f"{done} dealt with" if done else "",
                                            f"{unchecked} not checked" if unchecked else "") if x)
        head += [Line(shop_line)]
        blocks = [_outcome_line(f, out) for f in all_facts]
    elif kind in (NoticeKind.DIGEST, NoticeKind.REVIEW) or n > 1:
        if kind == NoticeKind.REVIEW and notice.deadline is not None:
            left_zh, left_en = time_left(notice.deadline, now)
            cutoff = _local(notice.deadline, tz).strftime("%H:%M")
            head_zh += f"，{cutoff} 结算（{left_zh}）"
            head_en += f", settlement at {cutoff} ({left_en})"
        elif kind != NoticeKind.REVIEW and not notice.title:
            soonest = min((f.deadline for f in all_facts if f.deadline and f.action != "refund"), default=None)
            head_zh += f"：请在 {soonest} 前处理" if soonest else "：请处理"
            head_en += f": deal with them before {soonest}" if soonest else ""
        head += [Line(shop_line)]
        if not all_facts and not notice.sections:
            head += out.say("今日无待处理异常", "no open findings")
        blocks = [_todo_block(f, out, headline=False) for f in all_facts]
    elif n == 1:
        f = all_facts[0]
        if not head_zh:
            head_zh, head_en = instruction(f)
            if kind == NoticeKind.REMINDER:
                head_zh, head_en = f"提醒：{head_zh}", f"Reminder: {head_en}"
            elif kind in (NoticeKind.VOID_PRINTED, NoticeKind.VOID_CLAIMED):
                head_zh, head_en = answered(f) or outcome(f)
        blocks = [_todo_block(f, out, headline=True, extra=(shop_line, shop_line))]
    else:
        head += [Line(shop_line)]
    head += [line for text in notice.lines for line in [Line(text)]]
    blocks += _section_blocks(notice.sections)
    headline = out.both(head_zh, head_en)
    return scrubbed(Document(title=headline, head=(Line(headline, "strong"), *head),
                             blocks=tuple(tuple(b) for b in blocks)))
