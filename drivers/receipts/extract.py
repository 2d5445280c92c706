"""Receipt templates applied: what a printed slip records, read from its text lines (pure; no file I/O).

(Over 500 lines: a template, its line index and its field conversions are one model, read together.)

A template is TOML data (``config/templates/*.toml``), so an installer can add
a shop's slip layout without code. It says when it applies (``start`` /
``end`` line markers), where each field is (label patterns, tried in order of
preference, with the value after ``:``/``：`` on the same line or alone on
the next line) and how printed words map to the event model (``[maps.*]``).

A receipt may hold several slips (three copies printed without a cut): a new
slip starts at every line matching ``start``; lines above the first marker
belong to the first slip. Copy markers (商户存根 / 银行存根 / 持卡人存根) and
reprint markers (重打印) are deliberately not fields: every copy and reprint
of one voucher yields the same Transaction, and the pipeline merges them by
identity (terminal, batch, voucher).

Lines reaching this module are already PAN-scrubbed; card fields still go
through :func:`drivers.pan.mask_pan` so a non-Luhn clear number is masked too.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, tzinfo

from drivers.events import (
    ENTRY_MODES,
    KINDS,
    MAX_TENDERS,
    RESULTS,
    TENDER_METHODS,
    Order,
    ReceiptText,
    Settlement,
    Tender,
    Transaction,
)
from drivers.pan import mask_pan
from drivers.receipts.lines import CURRENCY_ONLY, looks_like_a_sale, normalise
from drivers.timeutil import infer_datetime

TEMPLATE_KINDS = ("sales_slip", "settlement_slip", "qr_payment", "sales_receipt")

# Fields a template may extract; each has one conversion below.
FIELD_NAMES = frozenset({
    "terminal_id", "merchant_id", "operator", "card", "entry_mode", "card_type", "kind", "result",
    "batch_no", "voucher_no", "trace_no", "receipt_no", "auth_code", "rrn", "original_voucher_no",
    "original_rrn", "datetime", "date", "time", "amount", "currency",
    # sales_receipt (the till's 小票): order number, amount due, amount handed over, change given.
    "order_no", "total", "paid", "change", "method",
})
# Money fields: the printed amount in the named group "amount" (else the whole value), in minor units.
MONEY_FIELDS = frozenset({"amount", "total", "paid", "change"})
DEFAULTABLE = frozenset({"kind", "result", "entry_mode", "card_type", "currency"})
# A map named like one of these must produce one of the allowed values.
MAP_VALUES: dict[str, tuple[str, ...]] = {
    "kind": KINDS, "result": RESULTS, "entry_mode": ENTRY_MODES, "row": ("+", "-"), "tender": TENDER_METHODS,
}

_SPLIT_PARTS = re.compile(r"[/()（）]")
_NEXT_LINE_REACH = 2     # a value "on the next line" may follow one blank line
# Every label pattern is wrapped by load.py in this prefix: labels start a line or follow a space.
LABEL_PREFIX = r"(?:^|(?<=\s))(?:"
# After a label, an optional bilingual part "(VOUCHER NO)", " VOUCHER NO", "/VOUCHER NO" or, after an English
# label, " 凭证号" / "/凭证号" (the other language before a colon), then an optional colon. Lines and patterns
# are normalised (drivers/receipts/lines.py) first, so a full-width "：" or "（" is a ":" or "(" here.
# Matched on its own right after a label's match, compiled once: appended to each label's regex it made each
# label ~13x dearer to compile (0.4 ms each, ~60 ms of start-up for the bundled templates). It always matches
# (every part is optional), so the engine never backtracks into the label: the same end as the joined regex.
# [^\x00-\x7f] rather than a CJK range: IGNORECASE compiles a range by case-folding each of its characters.
LABEL_TAIL = re.compile(r"(?:\s*\([^)]{0,40}\)|\s*/?\s*[A-Za-z][A-Za-z./ ]{0,30}(?=\s*:)"
                        r"|\s*/?\s*[^\x00-\x7f]{1,8}(?=\s*:))?\s*:?\s*", re.IGNORECASE)
_REGEX_SPECIAL = frozenset("\\.^$*+?{}[]()|")

Event = Transaction | Settlement | Order
Hit = tuple[int, int, int]      # (label rank in the field's preference order, line index, end of the label)


def _first_char(label: re.Pattern[str]) -> str | None:
    """The upper-cased character every match of a wrapped label starts with, or None when it is not one
    plain literal (then the label is tried at every word start)."""
    src = label.pattern
    if not src.startswith(LABEL_PREFIX):
        return None
    src = src[len(LABEL_PREFIX):]
    depth, top_alternation = 0, False
    for ch in src:                 # a top-level "|" means several possible first characters
        depth += ch == "("
        depth -= ch == ")"
        top_alternation |= ch == "|" and depth == 0
    if top_alternation or not src:
        return None
    first, rest = src[0], src[1:]
    if first == "\\":
        if not rest or rest[0].isalnum():
            return None            # \s, \d ... are classes, not literals
        first, rest = rest[0], rest[1:]
    elif first in _REGEX_SPECIAL:
        return None
    if rest[:1] in ("?", "*", "{"):
        return None                # the first character is optional
    return first.upper()


class TemplateError(ValueError):
    """A receipt template that cannot be used; the message names the file and the key."""


@dataclass(frozen=True, slots=True)
class FieldRule:
    name: str
    labels: tuple[re.Pattern[str], ...]    # in order of preference
    value: re.Pattern[str]
    next_line: bool
    map: str | None
    anywhere: bool                          # no labelled value: look for a map key on any line


@dataclass(frozen=True, slots=True)
class SettlementRule:
    rows: tuple[re.Pattern[str], ...]
    row_map: str
    balanced: tuple[re.Pattern[str], ...]
    unbalanced: tuple[re.Pattern[str], ...]


@dataclass(frozen=True, slots=True)
class TenderRule:
    """A till receipt's tender lines ("银行卡: 50.00", "微信支付 18.00"), any number of them.

    ``rows`` need the named groups ``label`` (mapped to a method by ``[maps.<method_map>]``) and ``amount``;
    an optional ``hint`` group is kept as printed (a wallet name, a card tail). Without tender lines, the
    field ``method`` (a label with the method and no amount, "支付方式: 现金") makes one tender of the
    amount paid, else the total. Change (找零) is taken off the cash tender whatever its printed sign.
    """

    rows: tuple[re.Pattern[str], ...]
    method_map: str


@dataclass(frozen=True, slots=True)
class ReceiptTemplate:
    name: str
    kind: str
    path: str
    priority: int
    start: tuple[re.Pattern[str], ...]
    end: tuple[re.Pattern[str], ...]
    currency: str | None
    required: tuple[str, ...]
    defaults: Mapping[str, str]
    fields: tuple[FieldRule, ...]
    maps: Mapping[str, tuple[tuple[str, str], ...]]
    settlement: SettlementRule | None
    tenders: TenderRule | None = None
    # Built once from the fields: labels by the character they start with (the line index), the rest.
    _buckets: dict[str, tuple[tuple[re.Pattern[str], str, int], ...]] = field(
        init=False, repr=False, compare=False, default_factory=dict)
    _wild: tuple[tuple[re.Pattern[str], str, int], ...] = field(init=False, repr=False, compare=False, default=())
    _start_any: re.Pattern[str] | None = field(init=False, repr=False, compare=False, default=None)
    _start_text: re.Pattern[str] | None = field(init=False, repr=False, compare=False, default=None)
    _end_any: re.Pattern[str] | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        buckets: dict[str, list[tuple[re.Pattern[str], str, int]]] = {}
        wild: list[tuple[re.Pattern[str], str, int]] = []
        for rule in self.fields:
            for rank, label in enumerate(rule.labels):
                first = _first_char(label)
                entry = (label, rule.name, rank)
                if first is None:
                    wild.append(entry)
                else:
                    buckets.setdefault(first, []).append(entry)
        # A word start is tried against its character's labels and the wild ones, in one tuple.
        object.__setattr__(self, "_buckets", {k: (*v, *wild) for k, v in buckets.items()})
        object.__setattr__(self, "_wild", tuple(wild))
        # One search per line for "does any start (end) marker match": the alternation of them all.
        if self.start:
            alternation = "|".join(f"(?:{p.pattern})" for p in self.start)
            object.__setattr__(self, "_start_any", re.compile(alternation, re.IGNORECASE))
            # The same over a whole receipt's text: a marker on a line also matches there (^ and $ at line
            # ends), so no match there means no slip of this layout, in one search instead of one per line.
            object.__setattr__(self, "_start_text", re.compile(alternation, re.IGNORECASE | re.MULTILINE))
        if self.end:
            object.__setattr__(self, "_end_any", re.compile(
                "|".join(f"(?:{p.pattern})" for p in self.end), re.IGNORECASE))

    def slip_bounds(self, norm: Sequence[str], text: str | None = None) -> list[tuple[int, int]]:
        """Where this template's slips are in one receipt's normalised lines (empty if none).

        ``text``, the lines joined by newlines, lets a receipt of another layout be passed over at once.
        """
        start_any = self._start_any
        if start_any is None or (text is not None and self._start_text is not None
                                 and self._start_text.search(text) is None):
            return []
        starts = [i for i, line in enumerate(norm) if start_any.search(line)]
        if not starts:
            return []
        if self.kind == "sales_receipt":
            # A till prints one sale per receipt, and its 合计/应收/实收 lines all look like markers:
            # ``start`` only says the layout applies, the whole receipt is the one sale.
            return [(0, len(norm))]
        bounds = [0, *starts[1:], len(norm)]
        out = []
        end_any = self._end_any
        for lo, hi in itertools.pairwise(bounds):
            if end_any is not None:
                for k in range(max(lo, starts[0]), hi):
                    if end_any.search(norm[k]):
                        hi = k + 1
                        break
            out.append((lo, hi))
        return out

    def slips(self, lines: Sequence[str]) -> list[list[str]]:
        """The slips of this template's layout in one receipt (empty if none), as printed."""
        norm = [normalise(line) for line in lines]
        return [list(lines[lo:hi]) for lo, hi in self.slip_bounds(norm)]

    def index(self, norm: Sequence[str]) -> dict[str, list[Hit]]:
        """Every label of every field found on a slip, in one pass over its lines.

        Labels start a line or follow a space, so only word starts are looked at, and at each only the
        labels that can start with its character (plus the few that do not start with one literal).
        """
        hits: dict[str, list[Hit]] = {}
        buckets, wild, tail = self._buckets, self._wild, LABEL_TAIL.match
        for idx, s in enumerate(norm):
            if not s:
                continue
            p = 0
            while True:
                for label, name, rank in buckets.get(s[p].upper(), wild):
                    match = label.match(s, p)
                    if match is not None:
                        hits.setdefault(name, []).append((rank, idx, tail(s, match.end()).end()))  # type: ignore[union-attr]
                q = s.find(" ", p)
                if q < 0 or q + 1 >= len(s):
                    break
                p = q + 1
        return hits

    def read(self, lines: Sequence[str], *, tz: tzinfo, source: str,
             received: datetime | None) -> Event | None:
        """The event one slip records, or None when a required field is missing."""
        return self.read_why(lines, tz=tz, source=source, received=received)[0]

    def read_why(self, lines: Sequence[str], *, tz: tzinfo, source: str, received: datetime | None,
                 norm: Sequence[str] | None = None) -> tuple[Event | None, str | None]:
        """The event one slip records, or (None, the first required field it lacks)."""
        if norm is None:
            norm = [normalise(line) for line in lines]
        hits = self.index(norm)
        values: dict[str, dict[str, str]] = {}
        for rule in self.fields:
            found = _find(rule, norm, hits.get(rule.name, ()), self.maps)
            if found is not None:
                values[rule.name] = found
        fields = _convert(values, self)
        for name in self.required:
            if fields.get(name) is None and not (name == "amount" and fields.get("amount_minor") is not None):
                return None, name
        when = _when(values, tz, received)
        if self.kind == "settlement_slip":
            settlement = self._settlement(norm, fields, when, source)
            return settlement, None if settlement is not None else "settlement.rows"
        if self.kind == "sales_receipt":
            order = self._order(norm, fields, when, source)
            return order, None if order is not None else "total"
        kind = fields.get("kind")
        amount = fields.get("amount_minor")
        if not isinstance(kind, str):
            return None, "kind"
        if not isinstance(amount, int):
            return None, "amount"
        return self._transaction(fields, kind, amount, when, source), None

    def _transaction(self, fields: Mapping[str, object], kind: str, amount: int, when: datetime | None,
                     source: str) -> Transaction:
        return Transaction(
            source=source, kind=kind, result=_s(fields.get("result")) or "approved", amount_minor=amount,
            time=when, terminal_id=_s(fields.get("terminal_id")), merchant_id=_s(fields.get("merchant_id")),
            batch_no=_s(fields.get("batch_no")), voucher_no=_s(fields.get("voucher_no")),
            receipt_no=_s(fields.get("receipt_no")), trace_no=_s(fields.get("trace_no")),
            rrn=_s(fields.get("rrn")), auth_code=_s(fields.get("auth_code")),
            original_voucher_no=_s(fields.get("original_voucher_no")),
            original_rrn=_s(fields.get("original_rrn")), currency=_s(fields.get("currency")),
            card=_s(fields.get("card")), card_type=_s(fields.get("card_type")),
            entry_mode=_s(fields.get("entry_mode")), operator=_s(fields.get("operator")),
        )

    def _settlement(self, lines: Sequence[str], fields: Mapping[str, object], when: datetime | None,
                    source: str) -> Settlement | None:
        rule = self.settlement
        assert rule is not None
        count, total, rows = 0, 0, 0
        for line in lines:
            for pattern in rule.rows:
                match = pattern.search(line)
                if match is None:
                    continue
                sign = lookup(self.maps.get(rule.row_map, ()), match.group("label"))
                minor = parse_printed_amount(match.group("amount"))
                if sign is None or minor is None:
                    continue
                rows += 1
                count += int(match.group("count"))
                total += minor if sign == "+" else -minor
                break
        if not rows:
            return None
        balanced: bool | None = None
        if any(p.search(line) for line in lines for p in rule.unbalanced):
            balanced = False
        elif any(p.search(line) for line in lines for p in rule.balanced):
            balanced = True
        return Settlement(
            source=source, time=when, terminal_id=_s(fields.get("terminal_id")),
            merchant_id=_s(fields.get("merchant_id")), batch_no=_s(fields.get("batch_no")),
            count=count, total_minor=total, currency=_s(fields.get("currency")), balanced=balanced,
        )


    def _order(self, lines: Sequence[str], fields: Mapping[str, object], when: datetime | None,
               source: str) -> Order | None:
        """The till's sale: the amount due (total), and how it was paid (tender lines, else 支付方式)."""
        total, paid, change = (_i(fields.get(n)) for n in ("total", "paid", "change"))
        tenders: list[Tender] = []
        rule = self.tenders
        if rule is not None:
            table = self.maps.get(rule.method_map, ())
            for line in lines:
                for pattern in rule.rows:
                    match = pattern.search(line)
                    if match is None:
                        continue
                    method = lookup(table, match.group("label"))
                    minor = parse_printed_amount(match.group("amount"))
                    if method is None or minor is None:
                        continue
                    # As printed, from the method's word to the end of its hint ("银行卡(尾号6691)").
                    end = match.end("hint") if match.groupdict().get("hint") else match.end("label")
                    hint = line[match.start("label"):end].strip()
                    tenders.append(Tender(method=method, amount_minor=minor, hint=hint or None))
                    break
        if not tenders and isinstance(fields.get("method"), str):
            # "支付方式: 现金" with no amount of its own: one tender of what was handed over, else the total.
            amount = paid if paid is not None else total
            if amount is not None:
                tenders.append(Tender(method=str(fields["method"]), amount_minor=amount,
                                      hint=_s(fields.get("method_hint"))))
        if total is None:
            total = sum(t.amount_minor for t in tenders) - (change or 0) if tenders else None
        if total is None or total < 0 or len(tenders) > MAX_TENDERS:
            return None
        if change:
            # Only cash is given change; the cash tender's printed amount is what was handed over.
            for i, t in enumerate(tenders):
                if t.method == "cash" and t.amount_minor >= change:
                    tenders[i] = Tender(method="cash", amount_minor=t.amount_minor - change, hint=t.hint)
                    break
        return Order(source=source, time=when, total_minor=total, order_no=_s(fields.get("order_no")),
                     currency=_s(fields.get("currency")), tenders=tuple(tenders))


def _i(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _s(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


# ---------------------------------------------------------------------- reading values

def lookup(table: Iterable[tuple[str, str]], text: str | None) -> str | None:
    """Map printed words to a value: an exact key, else a key exactly equal to one part
    of a bilingual value ("消费/SALE"), else the longest key (2+ characters) inside it.
    """
    if text is None:
        return None
    pairs = list(table)
    norm = text.strip().upper()
    for key, value in pairs:
        if key.upper() == norm:
            return value
    for part in _SPLIT_PARTS.split(norm):
        part = part.strip()
        for key, value in pairs:
            if part and key.upper() == part:
                return value
    best: tuple[int, str] | None = None
    for key, value in pairs:
        k = key.upper()
        if len(k) >= 2 and k in norm and (best is None or len(k) > best[0]):
            best = (len(k), value)
    return best[1] if best else None


def parse_printed_amount(text: str | None) -> int | None:
    """"1,280.00" -> 128000 minor units; digits only, never through float."""
    if text is None:
        return None
    cleaned = text.replace(",", "").strip()
    match = re.fullmatch(r"(\d+)(?:\.(\d{1,2}))?", cleaned)
    if match is None:
        return None
    fraction = (match.group(2) or "").ljust(2, "0")
    return int(match.group(1)) * 100 + int(fraction)


def _value(rule: FieldRule, text: str) -> dict[str, str] | None:
    match = rule.value.match(text.strip())
    if match is None:
        return None
    groups = {k: v for k, v in match.groupdict().items() if v is not None}
    groups.setdefault("v", match.group(0).strip())
    return groups


def _find(rule: FieldRule, norm: Sequence[str], hits: Sequence[Hit],
          maps: Mapping[str, tuple[tuple[str, str], ...]]) -> dict[str, str] | None:
    """The field's value after its most preferred label, first line first (``hits`` from the index)."""
    for _, idx, end in sorted(hits):
        rest = norm[idx][end:].strip()
        if rest and not (rule.next_line and CURRENCY_ONLY.fullmatch(rest)):
            found = _value(rule, rest)
            if found is not None:
                return found
            continue
        if not rule.next_line:
            continue
        nxt = _next_value_line(norm, idx)
        if nxt is None:
            continue
        if rest:                        # "金额: RMB" then "12.00": the currency on the label's line
            nxt = f"{rest} {nxt}"
        elif CURRENCY_ONLY.fullmatch(nxt):
            # "金额:" / "RMB:" / "12.00": the currency code alone, the amount on the line after it.
            nxt = f"{nxt} {_next_value_line(norm, norm.index(nxt, idx + 1)) or ''}"
        found = _value(rule, nxt)
        if found is not None:
            return found
    if rule.anywhere and rule.map:
        table = maps.get(rule.map, ())
        for line in norm:
            upper = line.upper()
            for key, _ in sorted(table, key=lambda kv: -len(kv[0])):
                if len(key) >= 2 and key.upper() in upper:
                    return {"v": key}
    return None


def _next_value_line(norm: Sequence[str], idx: int) -> str | None:
    """The first non-blank line within reach after line ``idx``."""
    for k in range(idx + 1, min(idx + 1 + _NEXT_LINE_REACH, len(norm))):
        if norm[k]:
            return norm[k]
    return None


def _convert(values: Mapping[str, Mapping[str, str]], template: ReceiptTemplate) -> dict[str, object]:
    out: dict[str, object] = {}
    maps = template.maps
    for name, groups in values.items():
        text = groups["v"].strip()
        if name in MONEY_FIELDS:
            # A printed sign ("找零: -32.00") says which way the money went, which the field name
            # already says; the amount is kept positive.
            printed = groups.get("amount", text)
            out["amount_minor" if name == "amount" else name] = parse_printed_amount(
                printed if name == "amount" else printed.lstrip("-+ "))
            if groups.get("cur"):
                out["currency"] = lookup(maps.get("currency", ()), groups["cur"]) or groups["cur"].upper()
        elif name == "card":
            out["card"] = mask_pan(text)
            entry = next((v for k, v in groups.items() if k.startswith("entry")), None)
            if entry:
                out.setdefault("entry_mode", lookup(maps.get("entry_mode", ()), entry))
        elif name in ("datetime", "date", "time"):
            continue
        else:
            rule = next(r for r in template.fields if r.name == name)
            if rule.map:
                mapped = lookup(maps.get(rule.map, ()), text)
                if mapped is not None or name not in out:
                    out[name] = mapped
                if name == "method":
                    out["method_hint"] = text
            else:
                out[name] = text
    for name, value in template.defaults.items():
        if out.get(name) is None:
            out[name] = value
    if out.get("currency") is None and template.currency:
        out["currency"] = template.currency
    return out


def _when(values: Mapping[str, Mapping[str, str]], tz: tzinfo, received: datetime | None) -> datetime | None:
    parts: dict[str, str] = {}
    if "datetime" in values:
        parts.update(values["datetime"])
    else:
        parts.update(values.get("date", {}))
        parts.update({k: v for k, v in values.get("time", {}).items() if k in ("hour", "minute", "second")})
    try:
        month, day = int(parts["month"]), int(parts["day"])
        hour, minute = int(parts["hour"]), int(parts["minute"])
    except (KeyError, ValueError):
        return None
    second = int(parts.get("second") or 0)
    if parts.get("year"):
        try:
            return datetime(int(parts["year"]), month, day, hour, minute, second, tzinfo=tz)
        except ValueError:
            return None
    if received is None:
        return None
    try:
        return infer_datetime(month, day, hour, minute, second, tz=tz, received=received)
    except ValueError:
        return None


def extract(receipt: ReceiptText, templates: Sequence[ReceiptTemplate], *, tz: tzinfo,
            source: str | None = None) -> list[Event]:
    """The events the first template that reads anything finds on ``receipt``.

    ``receipt.time`` (when the receipt was received) places year-less slip
    dates; ``source`` defaults to the receipt's source.
    """
    return read_receipt(receipt, templates, tz=tz, source=source)[0]


def read_receipt(receipt: ReceiptText, templates: Sequence[ReceiptTemplate], *, tz: tzinfo,
                 source: str | None = None) -> tuple[list[Event], ReceiptText]:
    """The events on ``receipt``, and the receipt marked when something on it was seen but not understood:

    ``unread="missing_field"`` (with the template and the first required field it lacks) when a template's
    layout fits a slip but cannot read it, ``unread="no_template"`` when no template fits a receipt that
    looks like a payment slip or a till receipt. Either way the receipt is kept, never silently dropped.
    """
    src = source or receipt.source
    norm = [normalise(line) for line in receipt.lines]
    text = "\n".join(norm)
    miss: tuple[str, str] | None = None
    for template in templates:
        found: list[Event] = []
        for lo, hi in template.slip_bounds(norm, text):
            event, missing = template.read_why(receipt.lines[lo:hi], tz=tz, source=src, received=receipt.time,
                                               norm=norm[lo:hi])
            if event is not None:
                found.append(event)
            elif miss is None and missing is not None:
                miss = (template.name, missing)
        if found:
            if miss is not None and miss[0] == template.name:
                # Some slips of this receipt were read, one was not: say which field it lacked.
                receipt = replace(receipt, unread="missing_field", unread_template=miss[0], unread_field=miss[1])
            return found, receipt
    if miss is not None:
        return [], replace(receipt, unread="missing_field", unread_template=miss[0], unread_field=miss[1])
    if looks_like_a_sale(norm):
        return [], replace(receipt, unread="no_template")
    return [], receipt
