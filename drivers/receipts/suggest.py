"""A template proposed from sample receipts (``settleguard template suggest``; pure, no file I/O).

An installer has a capture of the shop's slips, not regular expressions. This finds label/value pairs on
the normalised lines (known labels in Chinese and English; the value after the label or alone on the next
line), decides from the values what each field is (money, a date and time, a card mask, a voucher-like
number, a word such as 消费), and writes the TOML a template file needs. Nothing is asked that the sample
shows: the layout kind (a card slip when it has a card mask or voucher numbers, a till receipt when it has
a total), the start marker (the slip's title line, or the total line of a till receipt), the currency.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from drivers.receipts.lines import normalise

# Printed label -> field. Tried longest first at each word start, so 原凭证号 is never 凭证号.
KNOWN_LABELS: dict[str, str] = {
    "商户编号": "merchant_id", "商户号": "merchant_id", "MERCHANT NO": "merchant_id", "MERCHANT ID": "merchant_id",
    "终端编号": "terminal_id", "终端号": "terminal_id", "设备号": "terminal_id", "TERMINAL NO": "terminal_id",
    "TERMINAL ID": "terminal_id",
    "操作员号": "operator", "操作员": "operator", "收银员": "operator", "OPERATOR NO": "operator",
    "OPERATOR": "operator", "CASHIER": "operator",
    "卡号": "card", "CARD NO": "card", "CARD NUMBER": "card",
    "交易类型": "kind", "TRANS TYPE": "kind", "TXN TYPE": "kind",
    "批次号": "batch_no", "BATCH NO": "batch_no",
    "原凭证号": "original_voucher_no", "ORIG VOUCHER NO": "original_voucher_no",
    "凭证号": "voucher_no", "VOUCHER NO": "voucher_no",
    "流水号": "trace_no", "TRACE NO": "trace_no",
    "授权码": "auth_code", "AUTH NO": "auth_code", "AUTH CODE": "auth_code",
    "原参考号": "original_rrn", "检索参考号": "rrn", "参考号": "rrn", "REFER NO": "rrn", "REF NO": "rrn",
    "日期/时间": "datetime", "日期时间": "datetime", "交易时间": "datetime", "销售时间": "datetime",
    "DATE/TIME": "datetime", "日期": "date", "DATE": "date", "时间": "time", "TIME": "time",
    "交易金额": "amount", "金额": "amount", "AMOUNT": "amount", "AMT": "amount",
    "销售单号": "order_no", "小票号": "order_no", "单据号": "order_no", "订单号": "order_no", "单号": "order_no",
    "ORDER NO": "order_no", "ORDER": "order_no", "RECEIPT NO": "order_no",
    "应收金额": "total", "应收": "total", "应付": "total", "合计金额": "total", "合计": "total", "总计": "total",
    "TOTAL": "total", "实收金额": "paid", "实收": "paid", "实付": "paid", "PAID": "paid", "找零": "change",
    "CHANGE": "change", "支付方式": "method", "付款方式": "method", "结算方式": "method",
}
_LABELS_LONGEST_FIRST = sorted(KNOWN_LABELS, key=len, reverse=True)
_SLIP_FIELDS = frozenset({"merchant_id", "terminal_id", "operator", "card", "kind", "batch_no", "voucher_no",
                          "original_voucher_no", "trace_no", "auth_code", "rrn", "original_rrn", "datetime", "date",
                          "time", "amount"})
_RECEIPT_FIELDS = frozenset({"order_no", "datetime", "date", "time", "total", "paid", "change", "method"})
_MONEY_FIELDS = frozenset({"amount", "total", "paid", "change"})

# After a label, a bilingual part and a colon (as the loader allows); then the value.
_TAIL = re.compile(r"(?:\s*\([^)]{0,40}\)|\s*/?\s*[A-Za-z][A-Za-z./ ]{0,30}(?=\s*:))?\s*:?\s*")
_MONEY = re.compile(r"(?P<sign0>-)?\s*(?P<cur>RMB|CNY|¥|\$|USD|EUR|€)?\s*(?P<sign>[-+])?\s*"
                    r"(?P<amount>\d{1,3}(?:,\d{3})+\.\d{1,2}|\d+\.\d{1,2}|\d+)\s*元?$", re.IGNORECASE)
_DATETIME = re.compile(r"(?:\d{4}[/.-])?\d{1,2}[/.-]\d{1,2}\s+\d{1,2}:\d{2}(?::\d{2})?$")
_DATE = re.compile(r"(?:\d{4}[/.-])?\d{1,2}[/.-]\d{1,2}$")
_TIME = re.compile(r"\d{1,2}:\d{2}(?::\d{2})?$")
_CARD = re.compile(r"[0-9*xX#](?:[ -]?[0-9*xX#]){11,22}(?:\s*/?\s*[CSIM]|\s*\(?\S{2,4}\)?)?$")
_ID = re.compile(r"#?\s*([0-9A-Za-z][0-9A-Za-z-]{1,39})$")
_SLIP_TITLE = re.compile(r"签购单|POS\s*SLIP|TRANSACTION\s+RECEIPT", re.IGNORECASE)

_V_MONEY = (r"(?P<sign0>-)?\s*(?P<cur>RMB|CNY|¥|\$|USD|EUR|€)?\s*(?P<sign>[-+])?\s*"
            r"(?P<amount>\d{1,3}(?:,\d{3})+(?:\.\d{1,2})?|\d+(?:\.\d{1,2})?)\s*元?")
_V_DATETIME = (r"(?:(?P<year>\d{4})[/.-])?(?P<month>\d{1,2})[/.-](?P<day>\d{1,2})\s+(?P<hour>\d{1,2}):"
               r"(?P<minute>\d{2})(?::(?P<second>\d{2}))?")
_V_DATE = r"(?:(?P<year>\d{4})[/.-])?(?P<month>\d{1,2})[/.-](?P<day>\d{1,2})"
_V_TIME = r"(?P<hour>\d{1,2}):(?P<minute>\d{2})(?::(?P<second>\d{2}))?"
_V_CARD = (r"(?P<v>[0-9*xX#](?:[ -]?[0-9*xX#]){11,22})(?:(?:\s*/\s*|\s+)(?P<entry>[CSIM])\b"
           r"|\s*[(]?(?P<entry_word>插卡|刷卡|挥卡|闪付|非接|手输|手工输入)[)]?)?")

KIND_WORDS = {"消费": "sale", "SALE": "sale", "PURCHASE": "sale", "撤销": "void", "消费撤销": "void", "VOID": "void",
              "退货": "refund", "REFUND": "refund", "预授权": "preauth", "PRE-AUTH": "preauth", "AUTH": "preauth",
              "预授权完成": "preauth_complete", "AUTH COMPLETE": "preauth_complete", "冲正": "reversal",
              "REVERSAL": "reversal", "余额查询": "balance", "查余额": "balance", "BALANCE": "balance"}
ENTRY_WORDS = {"C": "chip", "S": "swipe", "I": "contactless", "M": "manual", "插卡": "chip", "刷卡": "swipe",
               "挥卡": "contactless", "闪付": "contactless", "非接": "contactless", "手输": "manual",
               "手工输入": "manual"}
TENDER_WORDS = {"银行卡": "card", "储蓄卡": "card", "信用卡": "card", "刷卡": "card", "银联": "card",
                "微信支付": "qr", "微信": "qr", "支付宝": "qr", "云闪付": "qr", "扫码": "qr", "现金": "cash",
                "人民币": "cash", "会员卡": "other", "储值卡": "other", "购物卡": "other", "优惠券": "other",
                "CASH": "cash", "CARD": "card"}
CURRENCY_WORDS = {"RMB": "CNY", "CNY": "CNY", "¥": "CNY", "$": "USD", "USD": "USD", "€": "EUR", "EUR": "EUR"}


@dataclass
class Pair:
    """One label and its value as found on a slip."""
    field: str
    label: str          # as printed (normalised), the known part only
    value: str
    line: int


@dataclass
class Suggestion:
    kind: str
    toml: str
    pairs: list[list[Pair]]                     # per receipt of the sample
    unknown: list[str] = field(default_factory=list)   # "label: value" lines no known label names


def _pairs(norm: Sequence[str]) -> tuple[list[Pair], list[str]]:
    pairs: list[Pair] = []
    unknown: list[str] = []
    for idx, line in enumerate(norm):
        if not line:
            continue
        starts = [0, *(i + 1 for i, ch in enumerate(line) if ch == " ")]
        found: list[tuple[int, int, str, str]] = []      # (start, value start, field, label)
        upper = line.upper()
        for p in starts:
            if found and p < found[-1][1]:
                continue
            for label in _LABELS_LONGEST_FIRST:
                if upper.startswith(label, p):
                    end = p + len(label)
                    if end < len(line) and label.isascii() and line[end].isalnum():
                        continue                          # "DATE" is not the start of "DATED"
                    tail = _TAIL.match(line, end)
                    found.append((p, tail.end() if tail else end, KNOWN_LABELS[label], line[p:end]))
                    break
        if not found:
            head, sep, rest = line.partition(":")
            if sep and rest.strip() and len(head) <= 20:
                unknown.append(line)
            continue
        for k, (_, vstart, name, label) in enumerate(found):
            vend = found[k + 1][0] if k + 1 < len(found) else len(line)
            value = line[vstart:vend].strip()
            if not value:
                nxt = next((norm[j] for j in range(idx + 1, min(idx + 3, len(norm))) if norm[j]), "")
                if nxt and not any(nxt.upper().startswith(lab) for lab in _LABELS_LONGEST_FIRST):
                    value = nxt
            if value:
                pairs.append(Pair(name, label, value, idx))
    return pairs, unknown


def _typed(pair: Pair) -> Pair | None:
    """The pair with its field decided by what the value is; None when the value cannot be that field."""
    v = pair.value
    if pair.field in ("datetime", "date", "time"):
        for name, pattern in (("datetime", _DATETIME), ("date", _DATE), ("time", _TIME)):
            if pattern.match(v):
                return Pair(name, pair.label, v, pair.line)
        return None
    if pair.field in _MONEY_FIELDS:
        return pair if _MONEY.match(v) else None
    if pair.field == "card":
        return pair if _CARD.match(v) and re.search(r"[*xX#]", v) else None
    if pair.field in ("kind", "method"):
        return pair if not re.match(r"[-+]?\d", v) else None
    return pair if _ID.match(v) else None


def _id_value(values: list[str]) -> str:
    cores = [m.group(1) for v in values if (m := _ID.match(v))]
    lengths = {len(c) for c in cores}
    prefix = r"#?\s*" if any(v.startswith("#") for v in values) else ""
    if cores and all(c.isdigit() for c in cores) and len(lengths) == 1:
        return rf"{prefix}(?P<v>\d{{{lengths.pop()}}})\b"
    if cores and all(c.isdigit() for c in cores):
        return rf"{prefix}(?P<v>\d{{{min(lengths)},{max(lengths)}}})\b"
    return rf"{prefix}(?P<v>[0-9A-Za-z][0-9A-Za-z-]{{1,39}})\b"


def _toml_str(text: str) -> str:
    return "'" + text + "'" if "'" not in text and "\n" not in text else json.dumps(text)


def _label_regex(label: str) -> str:
    return r"\s*".join(re.escape(part) for part in label.split(" "))


def suggest(receipts: Sequence[Sequence[str]], *, name: str = "shop_layout") -> Suggestion:
    """A template for the layout of ``receipts`` (each a receipt's printed lines, as decoded)."""
    norms = [[normalise(line) for line in r] for r in receipts]
    found = [_pairs(n) for n in norms]
    typed = [[t for p in pairs if (t := _typed(p)) is not None] for pairs, _ in found]
    unknown = sorted({u for _, unk in found for u in unk})
    names = {p.field for pairs in typed for p in pairs}
    text = "\n".join("\n".join(n) for n in norms)
    slip = bool(_SLIP_TITLE.search(text)) or bool({"card", "voucher_no", "batch_no"} & names)
    kind = "sales_slip" if slip else "sales_receipt"
    allowed = _SLIP_FIELDS if slip else _RECEIPT_FIELDS
    if not slip and "total" not in names and "amount" in names:
        for pairs in typed:            # a till receipt's one money line named 金额 / AMOUNT is its total
            for p in pairs:
                if p.field == "amount":
                    p.field = "total"
        names = {p.field for pairs in typed for p in pairs}
    by_field: dict[str, list[Pair]] = defaultdict(list)
    for pairs in typed:
        for p in pairs:
            if p.field in allowed:
                by_field[p.field].append(p)

    currencies = {CURRENCY_WORDS[m.group("cur").upper()] for ps in by_field.values() for p in ps
                  if p.field in _MONEY_FIELDS and (m := _MONEY.match(p.value)) and m.group("cur")}
    cjk = bool(re.search(r"[\u4e00-\u9fff]", text))
    currency = currencies.pop() if len(currencies) == 1 else ("CNY" if cjk and not currencies else None)

    out = [f"# Suggested by `settleguard template suggest` from {len(receipts)} receipt(s): check the labels and",
           "# what it read from each receipt, then put this file in a [templates] dir.",
           f'name = "{name}"', f'kind = "{kind}"', f'description = "{name} (suggested)"',
           "priority = 5"]
    if slip:
        title = next((line for n in norms for line in n if _SLIP_TITLE.search(line)), None)
        if title is None:                      # the first line every receipt starts with
            firsts = {next((line for line in n if line), "") for n in norms}
            title = firsts.pop() if len(firsts) == 1 else ""
        start = [rf"^\s*{_label_regex(title)}\s*$"] if title else [r"签购单"]
    else:
        totals = sorted({p.label for p in by_field.get("total", [])}, key=len, reverse=True)
        start = [rf"^\s*(?:{'|'.join(_label_regex(t) for t in totals)})"] if totals else [r"^\s*合\s*计"]
    out.append("start = [" + ", ".join(_toml_str(s) for s in start) + "]")
    if currency:
        out.append(f'currency = "{currency}"')
    required = (["amount", "kind"] if "kind" in by_field else ["amount"]) if slip else ["total"]
    out.append("required = [" + ", ".join(f'"{r}"' for r in required) + "]")
    out.append("")
    if slip:
        out.append("[defaults]")
        out.append('result = "approved"        # a terminal prints a slip only for an approved transaction')
        if "kind" not in by_field:
            out.append('kind = "sale"              # no transaction type printed: every slip is a sale')
        if re.search(r"签购单|银联|UNIONPAY|\bCUP\b", text, re.IGNORECASE) and "card_type" not in by_field:
            out.append('card_type = "UnionPay"     # a 签购单 is the UnionPay slip')
        out.append("")

    maps: dict[str, dict[str, str]] = {}
    for fname in sorted(by_field, key=lambda f: min(p.line for p in by_field[f])):
        ps = by_field[fname]
        labels = sorted({p.label for p in ps}, key=lambda lab: (-len(lab), lab))
        out.append(f"[fields.{fname}]")
        out.append("labels = [" + ", ".join(_toml_str(_label_regex(lab)) for lab in labels) + "]")
        if fname in _MONEY_FIELDS:
            out.append(f"value = {_toml_str(_V_MONEY)}")
            maps["currency"] = CURRENCY_WORDS
        elif fname == "datetime":
            out.append(f"value = {_toml_str(_V_DATETIME)}")
        elif fname == "date":
            out.append(f"value = {_toml_str(_V_DATE)}")
        elif fname == "time":
            out.append(f"value = {_toml_str(_V_TIME)}")
        elif fname == "card":
            out.append(f"value = {_toml_str(_V_CARD)}")
            maps["entry_mode"] = ENTRY_WORDS
        elif fname == "kind":
            out.append('map = "kind"')
            maps["kind"] = KIND_WORDS
        elif fname == "method":
            out.append(r"value = '(?P<v>[^\s:0-9]+)\s*$'")
            out.append('map = "tender"')
            maps["tender"] = TENDER_WORDS
        else:
            out.append(f"value = {_toml_str(_id_value([p.value for p in ps]))}")
        out.append("")
    for map_name, table in maps.items():
        out.append(f"[maps.{map_name}]")
        out.extend(f"{json.dumps(k, ensure_ascii=False)} = {json.dumps(v)}" for k, v in table.items())
        out.append("")
    if unknown:
        out.append("# Lines with a label this does not know (add a [fields.*] table if one matters):")
        out.extend(f"#   {u}" for u in unknown[:12])
    return Suggestion(kind=kind, toml="\n".join(out).rstrip() + "\n", pairs=typed, unknown=unknown)
