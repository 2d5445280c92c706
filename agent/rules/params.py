"""Typed settings as people write them in TOML: the base of every rule's Params, and the value types
that rules and agent.config share.

The types live here rather than in agent.units because they need pydantic, and the notice renderer
and the report import agent.units without paying for pydantic.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, field_validator

from agent.units import parse_duration, parse_money


class RuleParams(BaseModel):
    """Parameters every rule takes; a rule's own Params subclass adds its knobs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    severity: str | None = None       # None -> the rule's default

    @field_validator("severity")
    @classmethod
    def _sev(cls, v: str | None) -> str | None:
        if v is not None and v not in ("high", "medium", "low"):
            raise ValueError("must be high, medium or low")
        return v


# No setting means more than a few years; longer ones overflow a date when subtracted from "now".
LONGEST = timedelta(days=3660)


def _duration(v: Any) -> timedelta:
    value = v if isinstance(v, timedelta) else parse_duration(v)
    if value > LONGEST:
        raise ValueError(f"{v!r} is longer than any setting needs (at most {LONGEST.days}d)")
    return value


def _money(v: Any) -> int:
    return parse_money(str(v) if isinstance(v, Decimal) else v)


# '10m'-style durations.
Duration = Annotated[timedelta, BeforeValidator(_duration)]
# "5000.00"-style amounts in minor units of a 2-decimal currency: config does not know the currency
# of each transaction, so agent.units.in_currency rescales for JPY, KWD and the like.
Money = Annotated[int, BeforeValidator(_money)]


def must(holds: Callable[[Any], bool], message: str) -> AfterValidator:
    """A check on one setting, after its type is parsed: the config error says ``message``."""

    def check(v: Any) -> Any:
        if not holds(v):
            raise ValueError(message)
        return v

    return AfterValidator(check)


# Constraints more than one setting shares, each with one wording.
PositiveDecimal = Annotated[Decimal, must(lambda v: v > 0, "must be > 0")]
PositiveMoney = Annotated[Money, must(lambda v: v > 0, "must be more than 0")]
Percent = Annotated[Decimal, must(lambda v: 0 < v < 100, "must be between 0 and 100 (percent)")]
