"""Notices as people read them on a phone: Chinese first, English after, short.

:func:`compose` turns a :class:`Notice` into a :class:`Document` (a headline,
head lines and one block per alert); ``to_markdown``, ``to_text`` and
``to_feishu_post`` lay it out for a robot and keep it inside that robot's
size limit by dropping whole alert blocks from the end and saying how many
("… 另有 N 条 / N more"). Every string that leaves here went through
:func:`drivers.pan.scrub_text`, so a PAN that slipped into a reason upstream
is still not sent.

Text from the wire (operator, voucher, reasons quoting them) and from the
configuration (shop name) is data, never markup (issue 14, observation 5):
:func:`clean_text` folds every line break inside a value into a space, so a
value can never start a line (a heading, a quote, a list item, a forged
"已处理" line) in any layout, and breaks URL schemes so no client turns a
value into a link. :func:`md_escape` then makes the markdown robots' syntax
inert: WeCom's markdown (headings, ``**``/``*``, ``[x](url)``, `` `code` ``,
``>``, ``<font color>``, ``<@userid>``) and DingTalk's (the same plus
``![img](url)``, ``-``/``1.`` lists, ``<font>``). Neither robot documents a
backslash escape, so the characters are replaced by their full-width twins,
which read the same to a person and mean nothing to either renderer. Feishu
``post`` ``text`` elements are literal (no ``un_escape``, no ``md`` tag is
used), so only the line-break and URL folding applies there.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, tzinfo
from typing import Any, Literal

from agent.alerts.lifecycle import RESOLUTION_NOTICES, STATE_LABELS, AlertState, NoticeKind
from agent.delivery.channels.base import Notice, dumps
from agent.units import format_money
from drivers.pan import scrub_text

SEVERITY_LABEL = {"high": ("高", "high"), "medium": ("中", "medium"), "low": ("低", "low")}
_RESOLVED_HEADLINE = ("已处理", "Resolved")
HEADLINE = {
    NoticeKind.OPENED: ("可疑交易", "Suspicious transaction"),
    NoticeKind.DIGEST: ("可疑交易汇总", "Suspicious transactions"),
    NoticeKind.REVIEW: ("结算前复核", "Pre-settlement review"),
    NoticeKind.ALL_CLEAR: ("今日无待处理异常", "no open findings"),
    NoticeKind.ESCALATED: ("批次已结算，需要退货", "Batch settled: refund needed"),
    NoticeKind.REMINDER: ("提醒：仍待处理", "Reminder: still open"),
    NoticeKind.VOID_PRINTED: ("撤销单已打印，终端尚未确认", "Void printed, not yet confirmed by the terminal"),
    NoticeKind.DEVICE: ("设备需要检查", "Check the equipment"),
    **{kind: _RESOLVED_HEADLINE for kind in RESOLUTION_NOTICES},
}
# Published limits of the robots (bytes of UTF-8). Feishu's 30 KB is for the whole request body,
# so the post content gets a margin for the envelope, timestamp and sign.
WECOM_MARKDOWN_LIMIT = 4096
DINGTALK_MARKDOWN_LIMIT = 20000
FEISHU_BODY_LIMIT = 30 * 1024
FEISHU_CONTENT_LIMIT = FEISHU_BODY_LIMIT - 1024
# A single runaway line (a huge reason) must not push every other alert out of a message.
MAX_LINE_CHARS = 600
# The number staff read off a slip, in the order a suggestion's voucher_no is taken from a transaction.
VOUCHER_FIELDS = ("voucher_no", "receipt_no", "trace_no", "rrn")

Style = Literal["strong", "plain", "quote"]


@dataclass(frozen=True, slots=True)
class Line:
    text: str
    style: Style = "plain"


@dataclass(frozen=True, slots=True)
class Document:
    title: str                            # one line, both languages (DingTalk title, Feishu post title)
    head: tuple[Line, ...]                # always kept
    blocks: tuple[tuple[Line, ...], ...]  # one per alert, dropped from the end to fit
    omitted: int = 0                      # blocks dropped before this document was built


# ---------------------------------------------------------------------------- alert fields


def rule_titles(alert: Mapping[str, Any]) -> tuple[str, str]:
    """(zh, en) title of the alert's rule: from the alert if it carries one, else the catalogue."""
    rule = str(alert.get("rule") or "?")
    zh, en = alert.get("title_zh"), alert.get("title_en")
    if isinstance(zh, str) and isinstance(en, str):
        return zh, en
    from agent.rules import RULES  # the catalogue pulls in pydantic; only needed for a live alert

    cls = RULES.get(rule)
    return (getattr(cls, "title_zh", rule), getattr(cls, "title_en", rule)) if cls else (rule, rule)


def _parse_time(value: Any, tz: tzinfo | None) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.astimezone(tz) if tz else parsed


def _local(when: datetime, tz: tzinfo | None) -> datetime:
    return when.astimezone(tz) if tz else when


def subject_transaction(alert: Mapping[str, Any]) -> dict[str, Any]:
    """The transaction the suggestion acts on (the one to void), else the latest one involved."""
    txns = [t for t in alert.get("transactions") or [] if isinstance(t, dict)]
    if not txns:
        return {}
    suggestion = alert.get("suggestion") or {}
    ref = suggestion.get("voucher_no") if isinstance(suggestion, dict) else None
    if ref:
        for txn in txns:
            if ref in (txn.get(name) for name in VOUCHER_FIELDS):
                return txn
    return txns[-1]


def _voucher(txn: Mapping[str, Any]) -> str:
    for name in VOUCHER_FIELDS:
        value = txn.get(name)
        if value:
            return str(value)
    return "?"


def time_left(deadline: datetime, now: datetime) -> tuple[str, str]:
    """(zh, en) remaining time, to the minute; past deadlines say so."""
    seconds = int((deadline - now).total_seconds())
    if seconds <= 0:
        return "已过截止时间", "deadline passed"
    hours, minutes = divmod((seconds + 59) // 60, 60)
    if hours:
        return f"还剩 {hours} 小时 {minutes} 分", f"{hours} h {minutes} min left"
    return f"还剩 {minutes} 分", f"{minutes} min left"


@dataclass(frozen=True, slots=True)
class AlertFacts:
    """What every layout says about one alert, already formatted."""

    severity_zh: str
    severity_en: str
    title_zh: str
    title_en: str
    rule: str
    state: str
    reason_zh: str
    reason_en: str
    voucher: str
    amount: str
    hhmm: str
    date: str
    card: str | None
    action: str | None
    deadline: str | None
    left_zh: str | None
    left_en: str | None
    steps_zh: str
    steps_en: str


def facts(alert: Mapping[str, Any], *, notice_deadline: datetime | None, now: datetime,
          tz: tzinfo | None) -> AlertFacts:
    txn = subject_transaction(alert)
    raw_suggestion = alert.get("suggestion")
    suggestion: Mapping[str, Any] = raw_suggestion if isinstance(raw_suggestion, dict) else {}
    title_zh, title_en = rule_titles(alert)
    sev_zh, sev_en = SEVERITY_LABEL.get(str(alert.get("severity")), ("?", str(alert.get("severity"))))
    amount_minor = suggestion.get("amount_minor", txn.get("amount_minor"))
    amount = format_money(amount_minor, txn.get("currency")) if isinstance(amount_minor, int) else "?"
    when = _parse_time(txn.get("time"), tz)
    deadline = _parse_time(suggestion.get("deadline"), tz) or (
        _local(notice_deadline, tz) if notice_deadline else None)
    deadline_text = left_zh = left_en = None
    if deadline is not None:
        local_now = _local(now, deadline.tzinfo)
        same_day = deadline.date() == local_now.date()
        deadline_text = deadline.strftime("%H:%M" if same_day else "%m-%d %H:%M")
        left_zh, left_en = time_left(deadline, now)
    reason_en = str(alert.get("reason") or "")
    return AlertFacts(
        severity_zh=sev_zh, severity_en=sev_en, title_zh=title_zh, title_en=title_en,
        rule=str(alert.get("rule") or "?"), state=str(alert.get("state") or AlertState.OPEN),
        reason_zh=str(alert.get("reason_zh") or reason_en), reason_en=reason_en,
        voucher=str(suggestion.get("voucher_no") or _voucher(txn)), amount=amount,
        hhmm=when.strftime("%H:%M") if when else "?", date=when.strftime("%Y-%m-%d") if when else "?",
        card=txn.get("card") or None, action=suggestion.get("action") if suggestion else None,
        deadline=deadline_text, left_zh=left_zh, left_en=left_en,
        steps_zh=str(suggestion.get("steps_zh") or ""), steps_en=str(suggestion.get("steps_en") or ""),
    )


def action_lines(f: AlertFacts) -> tuple[str, str] | None:
    """The sentence staff act on, (zh, en): 撤销凭证号 000123（RMB 1,280.00，14:03），请在 23:00 前操作."""
    by_zh = f"请在 {f.deadline} 前" if f.deadline else "请在结算前"
    by_en = f"before {f.deadline}" if f.deadline else "before settlement"
    left_zh = f"（{f.left_zh}）" if f.left_zh else ""
    left_en = f" ({f.left_en})" if f.left_en else ""
    if f.action == "void":
        return (f"撤销凭证号 {f.voucher}（{f.amount}，{f.hhmm}），{by_zh}操作{left_zh}",
                f"Void voucher {f.voucher} ({f.amount}, {f.hhmm}) {by_en}{left_en}")
    if f.action == "check":
        return (f"核对凭证号 {f.voucher}（{f.amount}，{f.hhmm}）；如有误，{by_zh}撤销{left_zh}",
                f"Check voucher {f.voucher} ({f.amount}, {f.hhmm}); if it is wrong, void it {by_en}{left_en}")
    if f.action == "refund":
        return (f"退货：凭证号 {f.voucher}（{f.amount}，{f.date}），批次已结算，无法撤销",
                f"Refund voucher {f.voucher} ({f.amount}, {f.date}): the batch has settled, a void is no "
                f"longer possible")
    return None


# ---------------------------------------------------------------------------- composing


def _transaction_line(f: AlertFacts) -> str:
    card = f" · 卡号 card {f.card}" if f.card else ""
    return f"凭证号 voucher {f.voucher} · {f.amount} · {f.hhmm}{card}"


def _title_line(f: AlertFacts) -> str:
    return f"【{f.severity_zh} {f.severity_en}】{f.title_zh} / {f.title_en}（{f.rule}）"


def _block(kind: NoticeKind, f: AlertFacts) -> tuple[Line, ...]:
    if kind in RESOLUTION_NOTICES:
        zh, en = STATE_LABELS.get(f.state, (f.state, f.state))
        return (Line(f"凭证号 {f.voucher} · {f.amount} · {f.title_zh} / {f.title_en}：{zh} / {en}"),)
    lines: list[Line] = [Line(_title_line(f), "strong")]
    if kind != NoticeKind.REVIEW:
        lines.append(Line(f.reason_zh, "quote"))
        if kind != NoticeKind.DIGEST and f.reason_en and f.reason_en != f.reason_zh:
            lines.append(Line(f.reason_en, "quote"))
    lines.append(Line(_transaction_line(f)))
    action = action_lines(f)
    if action is not None:
        lines.append(Line(action[0], "strong"))
        lines.append(Line(action[1]))
    if kind != NoticeKind.DIGEST:
        if f.steps_zh:
            lines.append(Line(f"操作：{f.steps_zh}", "quote"))
        if f.steps_en:
            lines.append(Line(f"Steps: {f.steps_en}", "quote"))
    return tuple(lines)


def compose(notice: Notice, now: datetime, tz: tzinfo | None = None) -> Document:
    """Everything a notice says, before any layout or size limit."""
    head_zh, head_en = notice.title or HEADLINE[notice.kind]
    n = len(notice.alerts)
    if notice.kind == NoticeKind.DIGEST:
        head_zh, head_en = f"{head_zh}（{n} 条）", f"{n} {head_en.lower()}"
    elif notice.kind == NoticeKind.REVIEW:
        head_zh, head_en = f"{head_zh}：{n} 条待处理", f"{head_en}: {n} open"
    title = f"{head_zh} / {head_en}"
    stamp = _local(notice.created, tz).strftime("%m-%d %H:%M")
    head = [Line(title, "strong"), Line(f"{notice.shop} · {stamp}")]
    if notice.kind == NoticeKind.REVIEW and notice.deadline is not None:
        left_zh, left_en = time_left(notice.deadline, now)
        cutoff = _local(notice.deadline, tz).strftime("%H:%M")
        head.append(Line(f"结算时间 {cutoff}（{left_zh}）/ settlement at {cutoff} ({left_en})"))
    if notice.kind == NoticeKind.ALL_CLEAR or (notice.kind == NoticeKind.REVIEW and not notice.alerts):
        head.append(Line("今日无待处理异常 / no open findings"))
    head.extend(Line(text) for text in notice.lines)
    blocks = tuple(
        _block(notice.kind, facts(alert, notice_deadline=notice.deadline, now=now, tz=tz))
        for alert in notice.alerts
    )
    doc = Document(title=title, head=tuple(head), blocks=blocks)
    return _scrubbed(doc)


# Characters that end a line or reorder what is shown: C0/C1 controls (ESC/POS commands on the printer,
# line breaks in every robot), Unicode line/paragraph separators, and bidirectional overrides and
# isolates (they can make "000123" display as "321000").
_UNSAFE_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
# A scheme or "www." that a chat client would turn into a link on its own, even in plain text.
# No word boundary: linkifiers find "http://" inside "ahttp://x" too; a full-width colon after "hotel" costs nothing.
_LINKY = re.compile(r"(?i)(https?|ftp|file|javascript|data|mailto|tel|dingtalk|weixin|wxwork|lark|feishu)(\s*):"
                    r"|www\.")


def _defang(match: re.Match[str]) -> str:
    if match.group(1) is None:
        return match.group(0)[:-1] + "．"
    return f"{match.group(1)}{match.group(2)}："


def clean_text(text: str) -> str:
    """One line of plain text, safe for every channel: no line breaks, no controls, no links, no PAN.

    A value that came with a newline is folded into the line it belongs to: one value can never
    start a new line, block or quote wherever it is shown.
    """
    text = _UNSAFE_CHARS.sub(" ", text)
    text = _LINKY.sub(_defang, text)
    text = scrub_text(text)
    return text if len(text) <= MAX_LINE_CHARS else text[: MAX_LINE_CHARS - 1] + "…"


def _scrubbed(doc: Document) -> Document:
    def fix(lines: tuple[Line, ...]) -> tuple[Line, ...]:
        return tuple(replace(line, text=clean_text(line.text)) for line in lines)

    return Document(title=clean_text(doc.title), head=fix(doc.head), blocks=tuple(fix(b) for b in doc.blocks),
                    omitted=doc.omitted)


def more_line(omitted: int) -> str:
    return f"… 另有 {omitted} 条 / {omitted} more"


def fit(doc: Document, layout: Callable[[Document], Any], size: Callable[[Any], int], limit: int) -> Any:
    """The largest prefix of the alert blocks whose layout fits ``limit``; the rest is counted."""
    total = len(doc.blocks)
    for keep in range(total, -1, -1):
        candidate = Document(doc.title, doc.head, doc.blocks[:keep], doc.omitted + total - keep)
        laid_out = layout(candidate)
        if size(laid_out) <= limit:
            return laid_out
    raise ValueError(f"even the headline of this notice does not fit in {limit} bytes")


def _utf8(text: str) -> int:
    return len(text.encode("utf-8"))


# ---------------------------------------------------------------------------- layouts

MarkdownFlavor = Literal["wecom", "dingtalk"]


# Markdown syntax anywhere in a line -> a full-width twin. '*' is also why masked cards need it: two
# of them in one paragraph would pair up as emphasis and the asterisks would vanish. '\\' so a value
# cannot escape the '**' we put around it; '&' so no entity turns back into '<'.
_MD_INLINE = str.maketrans({
    "*": "＊", "_": "＿", "~": "～", "`": "＇", "[": "［", "]": "］", "<": "＜", ">": "＞",
    "\\": "＼", "&": "＆", "|": "｜",
})
# ... and what is syntax only at the start of a line: headings, lists, setext underlines, and
# leading spaces (an indented code block).
_MD_LEADING = re.compile(r"^(?:[#\-+=]|\d{1,9}[.)])")
_LEADING_TWIN = str.maketrans({"#": "＃", "-": "－", "+": "＋", "=": "＝", ".": "．", ")": "）"})


def md_escape(text: str) -> str:
    """``text`` (already one clean line) made inert for WeCom and DingTalk markdown; it reads the same."""
    text = text.translate(_MD_INLINE).lstrip()
    lead = _MD_LEADING.match(text)
    if lead:
        text = lead.group(0).translate(_LEADING_TWIN) + text[lead.end():]
    return text


def _markdown_layout(doc: Document, flavor: MarkdownFlavor) -> str:
    # WeCom breaks lines on "\n"; DingTalk's renderer needs a blank line between paragraphs.
    sep = "\n" if flavor == "wecom" else "\n\n"

    def line(item: Line) -> str:
        text = md_escape(item.text)
        if item.style == "strong":
            return f"**{text}**"
        if item.style == "quote":
            return f"> {text}"
        return text

    parts = [f"### {md_escape(doc.head[0].text)}", *_below_headline(doc, line)]
    if flavor == "dingtalk":
        parts = [p for p in parts if p]
    return sep.join(parts)


def _below_headline(doc: Document, line: Callable[[Line], str]) -> list[str]:
    """The rest of the head, then each alert block after an empty line, then how many were left out."""
    parts = [line(item) for item in doc.head[1:]]
    for block in doc.blocks:
        parts.append("")
        parts.extend(line(item) for item in block)
    if doc.omitted:
        parts.extend(["", more_line(doc.omitted)])
    return parts


def to_markdown(doc: Document, *, flavor: MarkdownFlavor, limit_bytes: int) -> str:
    return str(fit(doc, lambda d: _markdown_layout(d, flavor), _utf8, limit_bytes))


def _text_layout(doc: Document) -> str:
    return "\n".join([doc.head[0].text, *_below_headline(doc, lambda item: item.text)])


def to_text(doc: Document, *, limit_bytes: int) -> str:
    return str(fit(doc, _text_layout, _utf8, limit_bytes))


def _feishu_layout(doc: Document) -> dict[str, Any]:
    paragraphs: list[list[dict[str, Any]]] = [[{"tag": "text", "text": item.text}] for item in doc.head[1:]]
    for block in doc.blocks:
        paragraphs.append([{"tag": "text", "text": ""}])
        paragraphs.extend([{"tag": "text", "text": item.text}] for item in block)
    if doc.omitted:
        paragraphs.append([{"tag": "text", "text": more_line(doc.omitted)}])
    # One bilingual zh_cn post: every reader sees both languages, Chinese first.
    return {"zh_cn": {"title": doc.head[0].text, "content": paragraphs}}


def to_feishu_post(doc: Document, *, limit_bytes: int = FEISHU_CONTENT_LIMIT) -> dict[str, Any]:
    result: dict[str, Any] = fit(doc, _feishu_layout, lambda post: len(dumps(post)), limit_bytes)
    return result
