"""What staff should do about a finding, by payment method and terminal model.

The wording is data (config/remedies/*.toml, shipped as agent/alerts/remedies_data like the receipt
templates): a card on a UnionPay-style terminal (void before settlement, refund after, the model's
menu path, whether the card is needed), a ZVT terminal (Storno / Gutschrift), and wallets (WeChat Pay,
Alipay, UnionPay QR, any QR payment: refunded in the merchant app within the platform's window, never
voided on the terminal). A shop names its terminal in ``[terminal] model``; a model the data does not
know gets the file's generic steps. A void is full-amount only, so a decimal slip is voided and charged
again at the amount meant; a refund can be partial, so a slip is refunded only by the excess.
"""

from __future__ import annotations

import logging
import re
import string
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, tzinfo
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.model import Suggestion, Transaction
from agent.units import format_money

if TYPE_CHECKING:
    from agent.config import Config

log = logging.getLogger("settleguard.remedy")

WHERE = ("terminal", "app")
_TOP_KEYS = frozenset({"name", "title_zh", "title_en", "where", "default", "match", "void", "refund", "recharge",
                       "models"})
_MATCH_KEYS = frozenset({"sources", "card_types", "entry_modes"})
_STEP_KEYS = frozenset({"zh", "en", "short_zh", "short_en", "menu_zh", "menu_en", "card_needed", "window_days"})
_MODEL_KEYS = frozenset({"aliases", "void", "refund"})
# What a step's text may name; checked when the file is read so a typo fails at start, not in an alert.
PLACEHOLDERS = frozenset({"menu_zh", "menu_en", "which_zh", "which_en", "find_zh", "find_en", "amount", "refund_zh",
                          "refund_en", "meant", "date", "time", "rrn", "rrn_en", "card_zh", "card_en", "days"})


class RemedyError(ValueError):
    """A remedy file that cannot be used; str() names the file, the key and what is wrong."""


def next_cutoff(after: datetime, cutoff: time | None, tz: tzinfo) -> datetime | None:
    """The first settlement cutoff strictly after ``after`` on the shop's wall clock (None = manual)."""
    if cutoff is None:
        return None
    local = after.astimezone(tz)
    for days in range(0, 3):
        day = local.date() + timedelta(days=days)
        # Round-trip through UTC so a cutoff inside a DST gap lands on a real instant.
        candidate = datetime.combine(day, cutoff, tzinfo=tz).astimezone(tz)
        if candidate > local:
            return candidate
    raise AssertionError("unreachable: a cutoff exists within two days")


# ------------------------------------------------------------------------------ the data

@dataclass(frozen=True, slots=True)
class Step:
    """One way of taking money back (a void, a refund, a charge again), with its own menu path."""

    zh: str
    en: str
    short_zh: str = ""                  # the same as a pointer, for "if it is wrong, ..." in a check
    short_en: str = ""
    menu_zh: str = ""
    menu_en: str = ""
    card_needed: bool = False
    window_days: int | None = None

    def overridden(self, changes: Mapping[str, Any]) -> Step:
        return Step(**{**{k: getattr(self, k) for k in _STEP_KEYS}, **changes})


@dataclass(frozen=True, slots=True)
class Remedy:
    """One remedy file: which payments it covers and how each is taken back."""

    name: str
    title_zh: str
    title_en: str
    where: str                          # "terminal" (void / refund on it) or "app" (the merchant app only)
    refund: Step
    void: Step | None = None            # None: this payment cannot be voided (wallets)
    recharge: Step | None = None        # after a void of a slip: charge the amount meant
    default: bool = False
    sources: frozenset[str] = frozenset()
    card_types: frozenset[str] = frozenset()
    entry_modes: frozenset[str] = frozenset()
    # Normalised model name or alias -> (the model's name, its void and refund overrides).
    models: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = field(default_factory=dict)

    def model(self, name: str | None) -> tuple[str | None, Step | None, Step]:
        """(the model's name if this file knows it, void step, refund step) for a terminal model."""
        known = self.models.get(_norm(name)) if name else None
        if known is None:
            return None, self.void, self.refund
        model_name, void, refund = known
        return (model_name, self.void.overridden(void) if self.void is not None and void else self.void,
                self.refund.overridden(refund) if refund else self.refund)


def _norm(name: str | None) -> str:
    return re.sub(r"[\s_\-]+", "", (name or "")).casefold()


def _fail(where: str, key: str, message: str) -> RemedyError:
    return RemedyError(f"{where}: {key}: {message}")


def _text(value: Any, where: str, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(where, key, f"must be non-empty text (got {value!r})")
    return value


def _template(value: Any, where: str, key: str) -> str:
    text = _text(value, where, key)
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as exc:
        raise _fail(where, key, f"bad placeholder: {exc}") from None
    unknown = names - PLACEHOLDERS
    if unknown:
        known = ", ".join(sorted(PLACEHOLDERS))
        raise _fail(where, key, f"unknown placeholder {{{sorted(unknown)[0]}}} (known: {known})")
    return text


def _step(raw: Any, where: str, key: str, *, partial: bool = False, short: bool = True) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise _fail(where, key, "must be a table")
    extra = set(raw) - _STEP_KEYS
    if extra:
        raise _fail(where, key, f"unknown key {sorted(extra)[0]!r} (known: {', '.join(sorted(_STEP_KEYS))})")
    out: dict[str, Any] = {}
    for name in ("zh", "en", "short_zh", "short_en"):
        if name in raw:
            out[name] = _template(raw[name], where, f"{key}.{name}")
        elif not partial and (short or not name.startswith("short")):
            raise _fail(where, f"{key}.{name}", "is required")
    for name in ("menu_zh", "menu_en"):
        if name in raw:
            out[name] = _text(raw[name], where, f"{key}.{name}")
    if "card_needed" in raw:
        if not isinstance(raw["card_needed"], bool):
            raise _fail(where, f"{key}.card_needed", "must be true or false")
        out["card_needed"] = raw["card_needed"]
    if "window_days" in raw:
        days = raw["window_days"]
        if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 3660:
            raise _fail(where, f"{key}.window_days", f"must be a whole number of days, 1 to 3660 (got {days!r})")
        out["window_days"] = days
    return out


def _strings(raw: Any, where: str, key: str) -> frozenset[str]:
    if not isinstance(raw, list) or not all(isinstance(v, str) and v for v in raw):
        raise _fail(where, key, "must be a list of text")
    return frozenset(v.casefold() for v in raw)


def parse_remedy(raw: Mapping[str, Any], where: str) -> Remedy:
    """A remedy file's table -> :class:`Remedy`; RemedyError naming ``where`` and the key when it is wrong."""
    extra = set(raw) - _TOP_KEYS
    if extra:
        raise _fail(where, sorted(extra)[0], f"unknown key (known: {', '.join(sorted(_TOP_KEYS))})")
    place = raw.get("where")
    if place not in WHERE:
        raise _fail(where, "where", f"must be one of {', '.join(WHERE)} (got {place!r})")
    if "refund" not in raw:
        raise _fail(where, "refund", "is required (every payment can be refunded somewhere)")
    refund = Step(**_step(raw["refund"], where, "refund"))
    if refund.window_days is None:
        raise _fail(where, "refund.window_days", "is required (how long a refund stays possible)")
    void = Step(**_step(raw["void"], where, "void")) if "void" in raw else None
    if place == "app" and void is not None:
        raise _fail(where, "void", "a payment refunded in an app has no terminal void")
    recharge = Step(**_step(raw["recharge"], where, "recharge", short=False)) if "recharge" in raw else None
    match = raw.get("match", {})
    if not isinstance(match, dict) or set(match) - _MATCH_KEYS:
        raise _fail(where, "match", f"must be a table of {', '.join(sorted(_MATCH_KEYS))}")
    models: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {}
    raw_models = raw.get("models", {})
    if not isinstance(raw_models, dict):
        raise _fail(where, "models", "must be a table of models")
    for model_name, spec in raw_models.items():
        key = f"models.{model_name}"
        if not isinstance(spec, dict) or set(spec) - _MODEL_KEYS:
            raise _fail(where, key, f"must be a table of {', '.join(sorted(_MODEL_KEYS))}")
        void_over = _step(spec.get("void", {}), where, f"{key}.void", partial=True)
        refund_over = _step(spec.get("refund", {}), where, f"{key}.refund", partial=True)
        if void_over and void is None:
            raise _fail(where, f"{key}.void", "the file has no [void] to override")
        aliases = spec.get("aliases", [])
        if not isinstance(aliases, list) or not all(isinstance(a, str) and a for a in aliases):
            raise _fail(where, f"{key}.aliases", "must be a list of text")
        for alias in (model_name, *aliases):
            models[_norm(alias)] = (model_name, void_over, refund_over)
    default = raw.get("default", False)
    if not isinstance(default, bool):
        raise _fail(where, "default", "must be true or false")
    return Remedy(
        name=_text(raw.get("name"), where, "name"), title_zh=_text(raw.get("title_zh"), where, "title_zh"),
        title_en=_text(raw.get("title_en"), where, "title_en"), where=place, refund=refund, void=void,
        recharge=recharge, default=default,
        sources=_strings(match.get("sources", []), where, "match.sources"),
        card_types=_strings(match.get("card_types", []), where, "match.card_types"),
        entry_modes=_strings(match.get("entry_modes", []), where, "match.entry_modes"), models=models,
    )


def bundled_remedy_dir() -> Traversable:
    """config/remedies in a checkout; agent/alerts/remedies_data in an installed wheel (pyproject.toml)."""
    checkout = Path(__file__).resolve().parents[2] / "config" / "remedies"
    if checkout.is_dir():
        return checkout
    return resources.files("agent.alerts") / "remedies_data"


def load_remedies(extra_dir: str | Path | None = None) -> list[Remedy]:
    """The bundled remedies plus an installer's directory (a file with a bundled name replaces it)."""
    found: dict[str, Remedy] = {}
    dirs: list[Traversable] = [bundled_remedy_dir()]
    if extra_dir is not None:
        path = Path(extra_dir)
        if not path.is_dir():
            raise RemedyError(f"[terminal] remedies: {path} is not a directory")
        dirs.append(path)
    for directory in dirs:
        for entry in sorted(directory.iterdir(), key=lambda e: e.name):
            if not entry.name.endswith(".toml"):
                continue
            where = str(entry)
            try:
                raw = tomllib.loads(entry.read_text(encoding="utf-8"))
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise RemedyError(f"{where}: not valid TOML: {exc}") from None
            remedy = parse_remedy(raw, where)
            found[remedy.name] = remedy
    defaults = [r.name for r in found.values() if r.default]
    if len(defaults) != 1:
        raise RemedyError(f"remedies: exactly one file must say default = true (found {defaults or 'none'})")
    return list(found.values())


# ------------------------------------------------------------------------------ naming a transaction

def describe(txn: Transaction, tz: tzinfo, *, original: bool = True) -> tuple[str, str]:
    """(zh, en) naming a transaction by the number staff type or read: its voucher, receipt or trace number,
    else its RRN; without any, its time and amount. Never "None"."""
    prefix = "原" if original else ""
    for zh, en, value in (("凭证号", "voucher", txn.voucher_no), ("票据号", "receipt", txn.receipt_no),
                          ("流水号", "trace", txn.trace_no), ("参考号", "reference", txn.rrn)):
        if value:
            return f"{prefix if zh != '参考号' else ''}{zh} {value}", f"{en} {value}"
    found_zh, found_en = find(txn, tz)
    if not original:
        return found_zh, found_en
    # Nothing to type from the alert: staff look the number up on the terminal itself.
    return (f"原凭证号（在终端交易查询中找 {found_zh} 那笔）",
            f"the voucher number (look up {found_en} in the terminal's transaction list)")


def find(txn: Transaction, tz: tzinfo) -> tuple[str, str]:
    """(zh, en) for finding a transaction in a list (a merchant app's bills): its time and amount, then its number."""
    amount = format_money(txn.amount_minor, txn.currency)
    local = txn.time.astimezone(tz) if txn.time else None
    number = txn.rrn or txn.voucher_no or txn.receipt_no or txn.trace_no
    zh = f"{local:%m-%d %H:%M} 的 {amount}" if local else f"时间不明的 {amount}"
    en = f"the {amount} payment at {local:%m-%d %H:%M}" if local else f"the {amount} payment"
    if number:
        zh, en = f"{zh}（单号 {number}）", f"{en} (no. {number})"
    return zh, en


def reference(txn: Transaction) -> str | None:
    """The number a suggestion names (voucher, receipt, trace, else RRN); None when there is none."""
    return txn.voucher_no or txn.receipt_no or txn.trace_no or txn.rrn or None


# ------------------------------------------------------------------------------ the book

@dataclass(frozen=True, slots=True)
class ShopFacts:
    """Who the shop is to its acquirer: for the evidence bundle and the draft statement."""

    name: str = ""
    merchant_name: str | None = None
    merchant_id: str | None = None
    acquirer: str | None = None


class RemedyBook:
    """The remedies a till uses: the data, the shop's terminal models, and who the shop is."""

    def __init__(self, remedies: list[Remedy] | None = None, *, model: str | None = None,
                 models: Mapping[str, str] | None = None, shop: ShopFacts | None = None) -> None:
        self.remedies = remedies if remedies is not None else load_remedies()
        self.default = next(r for r in self.remedies if r.default)
        self.model = model
        self.models = dict(models or {})
        self.shop = shop or ShopFacts()
        for name in {model, *self.models.values()} - {None}:
            if not any(r.model(name)[0] for r in self.remedies):
                # Not an error: the generic steps are right for most terminals; but a typo should be seen.
                log.warning("[terminal] model %r is not in the remedy data; staff get the generic steps", name)

    @classmethod
    def from_config(cls, config: Config) -> RemedyBook:
        t = config.terminal
        return cls(load_remedies(t.remedies), model=t.model, models=t.models,
                   shop=ShopFacts(name=config.shop.name, merchant_name=t.merchant_name, merchant_id=t.merchant_id,
                                  acquirer=t.acquirer))

    def remedy_for(self, txn: Transaction) -> Remedy:
        """The file covering this payment: a named wallet, a QR entry, the source's terminal, else the default."""
        card_type = (txn.card_type or "").casefold()
        for test in (lambda r: card_type and card_type in r.card_types,
                     lambda r: txn.entry_mode is not None and txn.entry_mode in r.entry_modes,
                     lambda r: txn.source.casefold() in r.sources):
            for remedy in self.remedies:
                if test(remedy):
                    return remedy
        return self.default

    def model_for(self, txn: Transaction) -> str | None:
        return self.models.get(txn.terminal_id or "", self.model)

    # -- the suggestions ----------------------------------------------------------------------------
    def _values(self, txn: Transaction, tz: tzinfo, step: Step, *, refund_minor: int,
                meant_minor: int | None) -> dict[str, Any]:
        which_zh, which_en = describe(txn, tz)
        find_zh, find_en = find(txn, tz)
        cur = txn.currency
        amount = format_money(txn.amount_minor, cur)
        refund = format_money(refund_minor, cur)
        if refund_minor != txn.amount_minor and meant_minor is not None:
            refund_zh = f"{refund}（多收部分，应收 {format_money(meant_minor, cur)}）"
            refund_en = f"{refund} (the excess; {format_money(meant_minor, cur)} was meant)"
        else:
            refund_zh = refund_en = refund
        local = txn.time.astimezone(tz) if txn.time else None
        return {
            "menu_zh": step.menu_zh, "menu_en": step.menu_en, "which_zh": which_zh, "which_en": which_en,
            "find_zh": find_zh, "find_en": find_en,
            "amount": amount, "refund_zh": refund_zh, "refund_en": refund_en,
            "meant": format_money(meant_minor, cur) if meant_minor is not None else "",
            "date": local.strftime("%Y-%m-%d") if local else "（见签购单）",
            "time": local.strftime("%H:%M") if local else "时间不明",
            # Without an RRN on the wire the slip has it: say which slip.
            "rrn": txn.rrn or f"（见 {find_zh} 的签购单）", "rrn_en": txn.rrn or f"(on the slip of {find_en})",
            "card_zh": "，需刷原卡" if step.card_needed else "",
            "card_en": ", the original card is needed" if step.card_needed else "",
            "days": step.window_days or "",
        }

    def _say(self, step: Step, values: dict[str, Any]) -> tuple[str, str]:
        return step.zh.format(**values), step.en.format(**values)

    def details(self, txn: Transaction, *, meant_minor: int | None = None) -> dict[str, Any]:
        """What the alert records about its remedy (evidence["remedy"]): the page and the webhook read it."""
        remedy = self.remedy_for(txn)
        model = self.model_for(txn) if remedy.where == "terminal" else None
        known, void, refund = remedy.model(model)
        return {"method": remedy.name, "method_zh": remedy.title_zh, "where": remedy.where,
                "terminal_model": known, "configured_model": model,
                "void_card_needed": void.card_needed if void is not None else None,
                "refund_card_needed": refund.card_needed, "refund_window_days": refund.window_days,
                "meant_minor": meant_minor}

    def take_back(self, txn: Transaction, *, deadline: datetime | None, tz: tzinfo,
                  meant_minor: int | None = None, settled: bool = False) -> Suggestion:
        """The remedy for a likely error: a void while the batch is open (then the slip's amount charged
        again), else a refund (of the excess only, for a slip); a wallet payment is always refunded."""
        remedy = self.remedy_for(txn)
        _, void, refund = remedy.model(self.model_for(txn) if remedy.where == "terminal" else None)
        slip = meant_minor is not None and 0 < meant_minor < txn.amount_minor
        if void is not None and not settled:
            values = self._values(txn, tz, void, refund_minor=txn.amount_minor, meant_minor=meant_minor)
            zh, en = self._say(void, values)
            if slip and remedy.recharge is not None:
                more_zh, more_en = self._say(remedy.recharge, values)
                zh, en = zh + more_zh, en + more_en
            return Suggestion(action="void", voucher_no=reference(txn), amount_minor=txn.amount_minor,
                              steps_zh=zh, steps_en=en, deadline=deadline)
        refund_minor = txn.amount_minor - meant_minor if slip and meant_minor is not None else txn.amount_minor
        values = self._values(txn, tz, refund, refund_minor=refund_minor, meant_minor=meant_minor if slip else None)
        zh, en = self._say(refund, values)
        if not settled and remedy.where == "terminal":   # a terminal with no void configured: say why
            zh, en = "本终端不能撤销，" + zh, "This terminal cannot void; " + en[0].lower() + en[1:]
        return Suggestion(action="refund", voucher_no=reference(txn), amount_minor=refund_minor, steps_zh=zh,
                          steps_en=en, deadline=self._window_end(txn, refund) if remedy.where == "app" else None)

    def check(self, txn: Transaction, *, deadline: datetime | None, tz: tzinfo) -> Suggestion:
        """Something to verify: what to check, that a genuine one needs nothing, and where to take it back if not."""
        remedy = self.remedy_for(txn)
        _, void, refund = remedy.model(self.model_for(txn) if remedy.where == "terminal" else None)
        which_zh, which_en = describe(txn, tz, original=False)
        step = void if void is not None else refund
        values = self._values(txn, tz, step, refund_minor=txn.amount_minor, meant_minor=None)
        how_zh, how_en = step.short_zh.format(**values), step.short_en.format(**values)
        if reference(txn) is not None:
            which_zh, which_en = f"{which_zh}（{values['amount']}，{values['time']}）", \
                f"{which_en} ({values['amount']}, {values['time']})"
        zh = f"核对 {which_zh}：如属正常交易，无需处理；如有误，{how_zh}"
        en = f"Check {which_en}: if it is genuine, nothing to do; if not, {how_en}"
        return Suggestion(action="check", voucher_no=reference(txn), amount_minor=txn.amount_minor, steps_zh=zh,
                          steps_en=en, deadline=deadline if void is not None else self._window_end(txn, refund))

    @staticmethod
    def _window_end(txn: Transaction, refund: Step) -> datetime | None:
        if txn.time is None or refund.window_days is None:
            return None
        return txn.time + timedelta(days=refund.window_days)
