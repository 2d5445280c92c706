"""Receipt templates applied: what a printed slip records, read from its text lines (pure; no file I/O).

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
from dataclasses import dataclass
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

    def slips(self, lines: Sequence[str]) -> list[list[str]]:
        """The slips of this template's layout in one receipt (empty if none)."""
        starts = [i for i, line in enumerate(lines) if any(p.search(line) for p in self.start)]
        if not starts:
            return []
        if self.kind == "sales_receipt":
            # A till prints one sale per receipt, and its 合计/应收/实收 lines all look like markers:
            # ``start`` only says the layout applies, the whole receipt is the one sale.
            return [list(lines)]
        bounds = [0, *starts[1:], len(lines)]
        out = []
        for lo, hi in itertools.pairwise(bounds):
            slip = list(lines[lo:hi])
            if self.end:
                for k, line in enumerate(slip):
                    if k >= starts[0] - lo and any(p.search(line) for p in self.end):
                        slip = slip[:k + 1]
                        break
            out.append(slip)
        return out

    def read(self, lines: Sequence[str], *, tz: tzinfo, source: str,
             received: datetime | None) -> Transaction | Settlement | Order | None:
        """The event one slip records, or None when a required field is missing."""
        values: dict[str, dict[str, str]] = {}
        for rule in self.fields:
            found = _find(rule, lines, self.maps)
            if found is not None:
                values[rule.name] = found
        fields = _convert(values, self)
        for name in self.required:
            if fields.get(name) is None and not (name == "amount" and fields.get("amount_minor") is not None):
                return None
        when = _when(values, tz, received)
        if self.kind == "settlement_slip":
            return self._settlement(lines, fields, when, source)
        if self.kind == "sales_receipt":
            return self._order(lines, fields, when, source)
        kind = fields.get("kind")
        amount = fields.get("amount_minor")
        if not isinstance(kind, str) or not isinstance(amount, int):
            return None
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


def _find(rule: FieldRule, lines: Sequence[str],
          maps: Mapping[str, tuple[tuple[str, str], ...]]) -> dict[str, str] | None:
    for label in rule.labels:
        for idx, line in enumerate(lines):
            for match in label.finditer(line):
                rest = line[match.end():]
                if rest.strip():
                    found = _value(rule, rest)
                    if found is not None:
                        return found
                    continue
                if not rule.next_line:
                    continue
                for nxt in lines[idx + 1:idx + 1 + _NEXT_LINE_REACH]:
                    if nxt.strip():
                        found = _value(rule, nxt)
                        if found is not None:
                            return found
                        break
    if rule.anywhere and rule.map:
        table = maps.get(rule.map, ())
        for line in lines:
            upper = line.upper()
            for key, _ in sorted(table, key=lambda kv: -len(kv[0])):
                if len(key) >= 2 and key.upper() in upper:
                    return {"v": key}
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
            source: str | None = None) -> list[Transaction | Settlement | Order]:
    """The events the first template that reads anything finds on ``receipt``.

    ``receipt.time`` (when the receipt was received) places year-less slip
    dates; ``source`` defaults to the receipt's source.
    """
    src = source or receipt.source
    for template in templates:
        found: list[Transaction | Settlement | Order] = []
        for slip in template.slips(receipt.lines):
            event = template.read(slip, tz=tz, source=src, received=receipt.time)
            if event is not None:
                found.append(event)
        if found:
            return found
    return []
