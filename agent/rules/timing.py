"""Off-hours rules (family TIME), judged on the shop's local wall clock.

TIME-002 (a closure day or, for a shop closed on holidays, a public holiday)
is more specific than TIME-001 (outside the weekly hours): on a closed holiday
both fire and staff read the holiday reason. Both are things to verify, never
likely errors: an off-hours sale is usually a late table or the owner testing
the terminal, so staff are asked to check it (and told that a genuine one needs
nothing), and it expires rather than turning into refund guidance when the
batch closes.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import ClassVar

from pydantic import field_validator

from agent.rules.base import BaseRule, Finding, Observation, TxnView, evidence, is_charge
from agent.rules.calendar import WEEKDAYS, HolidayDataMissing
from agent.rules.params import Duration, RuleParams
from agent.rules.state import RuleState
from agent.rules.text import format_duration, hhmm, money, when

_WEEKDAY_ZH = ("周一", "周二", "周三", "周四", "周五", "周六", "周日")


def _money_moving(view: TxnView) -> bool:
    return is_charge(view) or (view.approved and view.txn.kind == "refund")


def _kind_en(view: TxnView) -> str:
    return "Refund" if view.txn.kind == "refund" else "Charge"


def _kind_zh(view: TxnView) -> str:
    return "退货" if view.txn.kind == "refund" else "消费"


class OutsideHoursParams(RuleParams):
    grace: Duration = timedelta(minutes=15)

    @field_validator("grace")
    @classmethod
    def _grace(cls, v: timedelta) -> timedelta:
        if v >= timedelta(hours=12):
            raise ValueError("must be less than 12h")
        return v


class OutsideHours(BaseRule[OutsideHoursParams]):
    """TIME-001: outside the weekly opening hours (local wall clock, ``grace`` either side, inclusive)."""

    id: ClassVar[str] = "TIME-001"
    version: ClassVar[str] = "1"
    family: ClassVar[str] = "TIME"
    default_severity: ClassVar[str] = "medium"
    specificity: ClassVar[int] = 10
    certainty: ClassVar[str] = "verify"
    action: ClassVar[str] = "check"
    title_en: ClassVar[str] = "Outside opening hours"
    title_zh: ClassVar[str] = "非营业时间交易"
    Params = OutsideHoursParams

    def check(self, state: RuleState, obs: Observation, now: datetime) -> list[Finding]:
        view = obs.view
        cal = state.calendar
        if not obs.is_new or cal.always_open or not _money_moving(view):
            return []
        grace = self.params.grace
        if cal.is_open(view.local, grace):
            return []
        local_day = view.local.date()
        hours = cal.describe_hours(local_day)
        wd = view.local.weekday()
        weekday = WEEKDAYS[wd].capitalize()
        g = format_duration(grace) if grace else "0m"
        # Chinese readers get Chinese words for the schedule ("closed") and the grace ("15 分钟").
        hours_zh = "休息" if hours == "closed" else hours
        g_zh = f"{int(grace.total_seconds() // 60)} 分钟"
        return [self.finding(
            view, [],
            f"{_kind_en(view)} {money(view)} at {hhmm(view)} on {weekday} {when(view)[:10]} (voucher "
            f"{view.voucher_label}) is outside opening hours ({weekday}: {hours}, grace {g})",
            f"{_kind_zh(view)} {money(view)} 发生在 {when(view)[:10]} {_WEEKDAY_ZH[wd]} {hhmm(view)}"
            f"（凭证号 {view.voucher_label}），不在营业时间内（{_WEEKDAY_ZH[wd]}：{hours_zh}，宽限 {g_zh}）",
            evidence(view.local.isoformat(), hours, {"schedule_day": cal.schedule_day(local_day)},
                     grace_seconds=int(grace.total_seconds()),
                     plain_zh=f"{hhmm(view)} 不在营业时间（{_WEEKDAY_ZH[wd]} {hours_zh}）",
                     plain_en=f"{hhmm(view)} is outside opening hours ({weekday}: {hours})"),
        )]


class ClosedDayParams(RuleParams):
    pass


class ClosedDay(BaseRule[ClosedDayParams]):
    """TIME-002: on a configured closure day, or an official holiday when ``closed_on_holidays``.

    When the shop trades on holidays (``closed_on_holidays = false``, the
    default) a holiday sale is ordinary business and is not flagged. Make-up
    workdays (调休) are workdays. For a year the holiday data does not cover,
    holidays are not judged (counted as insufficient data; the engine reports
    the coverage warning); closures still are.
    """

    id: ClassVar[str] = "TIME-002"
    version: ClassVar[str] = "1"
    family: ClassVar[str] = "TIME"
    default_severity: ClassVar[str] = "medium"
    specificity: ClassVar[int] = 20
    certainty: ClassVar[str] = "verify"
    action: ClassVar[str] = "check"
    title_en: ClassVar[str] = "Shop closed that day"
    title_zh: ClassVar[str] = "闭店日交易"
    Params = ClosedDayParams

    def check(self, state: RuleState, obs: Observation, now: datetime) -> list[Finding]:
        view = obs.view
        cal = state.calendar
        if not obs.is_new or not cal.configured or not _money_moving(view):
            return []
        local_day = view.local.date()
        if cal.is_closure(local_day):
            why_en, why_zh, name = "a configured closure day", "设定的闭店日", "closure"
        elif cal.hours.holidays == "cn" and cal.hours.closed_on_holidays:
            try:
                info = cal.holiday_info(local_day)
            except HolidayDataMissing:
                state.note_insufficient(self.id)
                return []
            if not info.holiday:
                return []
            name = info.name or "holiday"
            why_en, why_zh = f"a public holiday ({name}) and the shop is closed on holidays", \
                f"法定节假日（{info.name_zh}），本店节假日不营业"
        else:
            return []
        return [self.finding(
            view, [],
            f"{_kind_en(view)} {money(view)} at {when(view)} (voucher {view.voucher_label}) is on {why_en}",
            f"{_kind_zh(view)} {money(view)} 发生在 {when(view)}"
            f"（凭证号 {view.voucher_label}），当天为{why_zh}",
            evidence(local_day.isoformat(), name, {"holidays": cal.hours.holidays,
                                                   "closed_on_holidays": cal.hours.closed_on_holidays}),
        )]
