"""Receipt templates loaded: TOML files (bundled, or an installer's directory) -> validated
:class:`~drivers.receipts.extract.ReceiptTemplate` objects. The only file I/O in drivers/receipts."""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Mapping, Sequence
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Any

from drivers.receipts.extract import (
    DEFAULTABLE,
    FIELD_NAMES,
    LABEL_PREFIX,
    MAP_VALUES,
    TEMPLATE_KINDS,
    FieldRule,
    ReceiptTemplate,
    SettlementRule,
    TemplateError,
    TenderRule,
)
from drivers.receipts.lines import normalise_pattern

_TOP_KEYS = frozenset({"name", "kind", "description", "priority", "start", "end", "currency", "required",
                       "defaults", "fields", "maps", "settlement", "tenders"})
_FIELD_KEYS = frozenset({"labels", "value", "next_line", "map", "anywhere"})
_SETTLEMENT_KEYS = frozenset({"rows", "row_map", "balanced", "unbalanced"})
_TENDER_KEYS = frozenset({"rows", "method_map"})


# ---------------------------------------------------------------------- loading

def bundled_template_dir() -> Traversable:
    """config/templates in a checkout; drivers/templates_data in an installed wheel."""
    checkout = Path(__file__).resolve().parents[2] / "config" / "templates"
    if checkout.is_dir():
        return checkout
    return resources.files("drivers") / "templates_data"


def _fail(where: str, key: str, message: str) -> TemplateError:
    return TemplateError(f"{where}: {key}: {message}")


def _regex(pattern: Any, where: str, key: str) -> re.Pattern[str]:
    if not isinstance(pattern, str) or not pattern:
        raise _fail(where, key, f"must be a non-empty regular expression string (got {pattern!r})")
    try:
        return re.compile(normalise_pattern(pattern), re.IGNORECASE)
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
    # Labels start a line or follow a space, so 凭证号 does not match inside 原凭证号. The bilingual tail
    # after a label is one pattern compiled once (extract.LABEL_TAIL), not part of each label's regex.
    return _regex(rf"{LABEL_PREFIX}{pattern.pattern})", where, key)


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
            pairs.append((normalise_pattern(key), value))
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

    # A till receipt needs a total or tender lines, which _order checks itself.
    required = data.get("required", ["amount", "kind"] if kind not in ("settlement_slip", "sales_receipt") else [])
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

    tenders = None
    raw_tenders = data.get("tenders")
    if kind == "sales_receipt" and raw_tenders is not None:
        if not isinstance(raw_tenders, dict):
            raise _fail(where, "tenders", "must be a table")
        _unknown_keys(raw_tenders, _TENDER_KEYS, where, "tenders.")
        rows = _regex_list(raw_tenders.get("rows"), where, "tenders.rows")
        for i, row in enumerate(rows):
            missing = {"label", "amount"} - set(row.groupindex)
            if missing:
                raise _fail(where, f"tenders.rows[{i}]", f"needs the named groups {', '.join(sorted(missing))}")
        method_map = raw_tenders.get("method_map", "tender")
        if method_map not in maps:
            raise _fail(where, "tenders.method_map", f"names no [maps.{method_map}] table")
        tenders = TenderRule(rows=rows, method_map=method_map)
    elif raw_tenders is not None:
        raise _fail(where, "tenders", "only a sales_receipt template has a [tenders] table")
    if kind == "sales_receipt":
        method_rule = next((r for r in fields if r.name == "method"), None)
        if method_rule is not None and method_rule.map not in maps:
            raise _fail(where, "fields.method.map", "needs a map from printed words to card|qr|cash|other")

    return ReceiptTemplate(name=name, kind=kind, path=where, priority=priority, start=start, end=end,
                           currency=currency, required=tuple(required), defaults=dict(defaults),
                           fields=tuple(fields), maps=maps, settlement=settlement, tenders=tenders)


def load_template(path: Traversable | str | Path) -> ReceiptTemplate:
    source = Path(path) if isinstance(path, str) else path
    where = str(source)
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(f"{where}: cannot read template: {exc}") from None
    return _parse_text(where, text)


# Every decoder built in a process (one per printer, the web page's preview, a test) loads the same files:
# a template is immutable, so one parse per file content serves them all. Keyed by the text, so an edited
# file is parsed again; a bad file raises every time (exceptions are not cached).
@functools.lru_cache(maxsize=64)
def _parse_text(where: str, text: str) -> ReceiptTemplate:
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
