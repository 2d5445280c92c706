"""Receipt templates: what a printed slip records, read from its text lines.

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
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Any

from drivers.events import ENTRY_MODES, KINDS, RESULTS, ReceiptText, Settlement, Transaction
from drivers.pan import mask_pan
from drivers.timeutil import infer_datetime

TEMPLATE_KINDS = ("sales_slip", "settlement_slip", "qr_payment")

# Fields a template may extract; each has one conversion below.
FIELD_NAMES = frozenset({
    "terminal_id", "merchant_id", "operator", "card", "entry_mode", "card_type", "kind", "result",
    "batch_no", "voucher_no", "trace_no", "receipt_no", "auth_code", "rrn", "original_voucher_no",
    "original_rrn", "datetime", "date", "time", "amount", "currency",
})
DEFAULTABLE = frozenset({"kind", "result", "entry_mode", "card_type", "currency"})
# A map named like one of these must produce one of the allowed values.
MAP_VALUES: dict[str, tuple[str, ...]] = {
    "kind": KINDS, "result": RESULTS, "entry_mode": ENTRY_MODES, "row": ("+", "-"),
}
_TOP_KEYS = frozenset({"name", "kind", "description", "priority", "start", "end", "currency", "required",
                       "defaults", "fields", "maps", "settlement"})
_FIELD_KEYS = frozenset({"labels", "value", "next_line", "map", "anywhere"})
_SETTLEMENT_KEYS = frozenset({"rows", "row_map", "balanced", "unbalanced"})

# A label, then an optional bilingual part "(VOUCHER NO)" or " VOUCHER NO", then an optional colon.
_LABEL_TAIL = r"(?:\s*[(（][^)）]{0,40}[)）]|\s+[A-Za-z][A-Za-z./ ]{0,30}(?=\s*[:：]))?\s*[:：]?\s*"
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

    def slips(self, lines: Sequence[str]) -> list[list[str]]:
        """The slips of this template's layout in one receipt (empty if none)."""
        starts = [i for i, line in enumerate(lines) if any(p.search(line) for p in self.start)]
        if not starts:
            return []
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
             received: datetime | None) -> Transaction | Settlement | None:
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
                minor = parse_amount(match.group("amount"))
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


def parse_amount(text: str | None) -> int | None:
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
        if name == "amount":
            out["amount_minor"] = parse_amount(groups.get("amount", text))
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
            source: str | None = None) -> list[Transaction | Settlement]:
    """The events the first template that reads anything finds on ``receipt``.

    ``receipt.time`` (when the receipt was received) places year-less slip
    dates; ``source`` defaults to the receipt's source.
    """
    src = source or receipt.source
    for template in templates:
        found: list[Transaction | Settlement] = []
        for slip in template.slips(receipt.lines):
            event = template.read(slip, tz=tz, source=src, received=receipt.time)
            if event is not None:
                found.append(event)
        if found:
            return found
    return []


# ---------------------------------------------------------------------- loading

def bundled_template_dir() -> Traversable:
    """config/templates in a checkout; drivers/templates_data in an installed wheel."""
    checkout = Path(__file__).resolve().parents[1] / "config" / "templates"
    if checkout.is_dir():
        return checkout
    return resources.files("drivers") / "templates_data"


def _fail(where: str, key: str, message: str) -> TemplateError:
    return TemplateError(f"{where}: {key}: {message}")


def _regex(pattern: Any, where: str, key: str) -> re.Pattern[str]:
    if not isinstance(pattern, str) or not pattern:
        raise _fail(where, key, f"must be a non-empty regular expression string (got {pattern!r})")
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        raise _fail(where, key, f"bad regular expression {pattern!r}: {exc}") from None


def _regex_list(value: Any, where: str, key: str, *,
                allow_empty: bool = False) -> tuple[re.Pattern[str], ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or (not value and not allow_empty):
        raise _fail(where, key, "must be a regular expression or a non-empty list of them")
    return tuple(_regex(p, where, f"{key}[{i}]") for i, p in enumerate(value))


def _label(pattern: re.Pattern[str], where: str, key: str) -> re.Pattern[str]:
    # Labels start a line or follow a space, so 凭证号 does not match inside 原凭证号.
    return _regex(rf"(?:^|(?<=\s))(?:{pattern.pattern}){_LABEL_TAIL}", where, key)


def _unknown_keys(obj: Mapping[str, Any], allowed: frozenset[str], where: str, prefix: str) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise _fail(where, prefix + unknown[0], f"unknown key (allowed: {', '.join(sorted(allowed))})")


def parse_template(data: Mapping[str, Any], where: str) -> ReceiptTemplate:
    """Validate one template's TOML table; every problem names the file and the key."""
    _unknown_keys(data, _TOP_KEYS, where, "")
    name = data.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9_][a-z0-9_-]*", name):
        raise _fail(where, "name", f"must be a lower-case identifier (got {name!r})")
    kind = data.get("kind")
    if kind not in TEMPLATE_KINDS:
        raise _fail(where, "kind", f"must be one of {', '.join(TEMPLATE_KINDS)} (got {kind!r})")
    priority = data.get("priority", 100)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise _fail(where, "priority", f"must be an integer (got {priority!r})")
    if not isinstance(data.get("description", ""), str):
        raise _fail(where, "description", "must be a string")
    currency = data.get("currency")
    if currency is not None and (not isinstance(currency, str) or not re.fullmatch(r"[A-Z]{3}", currency)):
        raise _fail(where, "currency", f"must be an ISO 4217 code like CNY (got {currency!r})")
    start = _regex_list(data.get("start"), where, "start")
    end = _regex_list(data.get("end", []), where, "end", allow_empty=True)

    raw_maps = data.get("maps", {})
    if not isinstance(raw_maps, dict):
        raise _fail(where, "maps", "must be a table of tables")
    maps: dict[str, tuple[tuple[str, str], ...]] = {}
    for map_name, table in raw_maps.items():
        if not isinstance(table, dict) or not table:
            raise _fail(where, f"maps.{map_name}", "must be a non-empty table of \"printed\" = \"value\"")
        allowed = MAP_VALUES.get(map_name)
        pairs = []
        for key, value in table.items():
            if not isinstance(value, str):
                raise _fail(where, f"maps.{map_name}.{key}", f"must be a string (got {value!r})")
            if allowed is not None and value not in allowed:
                raise _fail(where, f"maps.{map_name}.{key}",
                            f"must be one of {', '.join(allowed)} (got {value!r})")
            pairs.append((key, value))
        maps[map_name] = tuple(pairs)

    raw_fields = data.get("fields", {})
    if not isinstance(raw_fields, dict):
        raise _fail(where, "fields", "must be a table of field tables")
    fields = []
    for field_name, spec in raw_fields.items():
        key = f"fields.{field_name}"
        if field_name not in FIELD_NAMES:
            raise _fail(where, key, f"unknown field (known: {', '.join(sorted(FIELD_NAMES))})")
        if not isinstance(spec, dict):
            raise _fail(where, key, "must be a table")
        _unknown_keys(spec, _FIELD_KEYS, where, key + ".")
        labels = tuple(_label(p, where, f"{key}.labels")
                       for p in _regex_list(spec.get("labels"), where, f"{key}.labels"))
        value = _regex(spec.get("value", r"(?P<v>\S.*)"), where, f"{key}.value")
        map_name = spec.get("map")
        if map_name is not None and map_name not in maps:
            raise _fail(where, f"{key}.map", f"names no [maps.{map_name}] table")
        for flag in ("next_line", "anywhere"):
            if not isinstance(spec.get(flag, False), bool):
                raise _fail(where, f"{key}.{flag}", "must be true or false")
        if spec.get("anywhere") and map_name is None:
            raise _fail(where, f"{key}.anywhere", "needs a map (the words to look for)")
        fields.append(FieldRule(name=field_name, labels=labels, value=value,
                                next_line=spec.get("next_line", True), map=map_name,
                                anywhere=spec.get("anywhere", False)))

    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise _fail(where, "defaults", "must be a table")
    for key, value in defaults.items():
        if key not in DEFAULTABLE:
            raise _fail(where, f"defaults.{key}",
                        f"cannot be defaulted (allowed: {', '.join(sorted(DEFAULTABLE))})")
        allowed = MAP_VALUES.get(key)
        if not isinstance(value, str) or (allowed is not None and value not in allowed):
            raise _fail(where, f"defaults.{key}", f"bad value {value!r}")

    required = data.get("required", ["amount", "kind"] if kind != "settlement_slip" else [])
    if not isinstance(required, list) or not all(isinstance(x, str) for x in required):
        raise _fail(where, "required", "must be a list of field names")
    defined = {r.name for r in fields} | set(defaults)
    for i, name_ in enumerate(required):
        if name_ not in defined:
            raise _fail(where, f"required[{i}]", f"{name_!r} is neither a field nor a default")

    settlement = None
    raw_settlement = data.get("settlement")
    if kind == "settlement_slip":
        if not isinstance(raw_settlement, dict):
            raise _fail(where, "settlement", "a settlement_slip template needs a [settlement] table")
        _unknown_keys(raw_settlement, _SETTLEMENT_KEYS, where, "settlement.")
        rows = _regex_list(raw_settlement.get("rows"), where, "settlement.rows")
        for i, row in enumerate(rows):
            missing = {"label", "count", "amount"} - set(row.groupindex)
            if missing:
                raise _fail(where, f"settlement.rows[{i}]",
                            f"needs the named groups {', '.join(sorted(missing))}")
        row_map = raw_settlement.get("row_map", "row")
        if row_map not in maps:
            raise _fail(where, "settlement.row_map", f"names no [maps.{row_map}] table")
        settlement = SettlementRule(
            rows=rows, row_map=row_map,
            balanced=_regex_list(raw_settlement.get("balanced", []), where, "settlement.balanced",
                                 allow_empty=True),
            unbalanced=_regex_list(raw_settlement.get("unbalanced", []), where, "settlement.unbalanced",
                                   allow_empty=True),
        )
    elif raw_settlement is not None:
        raise _fail(where, "settlement", "only a settlement_slip template has a [settlement] table")

    return ReceiptTemplate(name=name, kind=kind, path=where, priority=priority, start=start, end=end,
                           currency=currency, required=tuple(required), defaults=dict(defaults),
                           fields=tuple(fields), maps=maps, settlement=settlement)


def load_template(path: Traversable | str | Path) -> ReceiptTemplate:
    source = Path(path) if isinstance(path, str) else path
    where = str(source)
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(f"{where}: cannot read template: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TemplateError(f"{where}: not valid TOML: {exc}") from None
    return parse_template(data, where)


def _templates_in(directory: Traversable) -> list[ReceiptTemplate]:
    if not directory.is_dir():
        raise TemplateError(f"{directory}: template directory does not exist")
    entries = sorted((e for e in directory.iterdir() if e.name.endswith(".toml")), key=lambda e: e.name)
    return [load_template(e) for e in entries]


def load_templates(names: Sequence[str] | None = None,
                   dirs: Sequence[str | Path] = ()) -> list[ReceiptTemplate]:
    """Bundled templates plus those in ``dirs`` (a later one replaces a same-named one).

    ``names`` selects and orders them; otherwise they are tried by
    ``priority``, then name.
    """
    by_name: dict[str, ReceiptTemplate] = {}
    for directory in (bundled_template_dir(), *(Path(d) for d in dirs)):
        for template in _templates_in(directory):
            by_name[template.name] = template
    if names is None:
        return sorted(by_name.values(), key=lambda t: (t.priority, t.name))
    if isinstance(names, str):
        names = [names]
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise TemplateError(f"unknown receipt template {unknown[0]!r} (known: {', '.join(sorted(by_name))})")
    return [by_name[n] for n in names]


__all__ = [
    "FIELD_NAMES", "TEMPLATE_KINDS", "FieldRule", "ReceiptTemplate", "SettlementRule", "TemplateError",
    "bundled_template_dir", "extract", "load_template", "load_templates", "lookup", "parse_amount",
    "parse_template",
]
