"""Shop calendar, TIME-001 (opening hours) and TIME-002 (holidays, closures), on the local wall clock."""

from __future__ import annotations

from datetime import date, timedelta
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError
from test_rules_support import SHANGHAI, Till, assert_well_formed, at, only, rules_of

from agent.rules.calendar import HolidayDataMissing, HoursConfig, ShopCalendar

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
WEEK = {d: ["09:00-21:30"] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
CN = {**WEEK, "holidays": "cn"}


def cal(**hours: object) -> ShopCalendar:
    return ShopCalendar(HoursConfig.model_validate(hours), SHANGHAI)


# -- calendar ---------------------------------------------------------------------------------
def test_national_day_2025_is_a_holiday_with_its_name() -> None:
    c = cal(holidays="cn")
    assert c.is_holiday(date(2025, 10, 1)) == (True, "National Day")
    assert c.holiday_info(date(2025, 10, 1)).name_zh == "国庆节"
    assert not c.is_workday(date(2025, 10, 1))


def test_sunday_make_up_workday_before_national_day_is_a_workday() -> None:
    c = cal(holidays="cn")
    assert c.is_workday(date(2025, 9, 28)) and c.is_holiday(date(2025, 9, 28)) == (False, None)
    assert c.is_makeup_workday(date(2025, 9, 28))


def test_spring_festival_2026_make_up_saturdays_are_workdays_and_the_festival_is_not() -> None:
    # What chinesecalendar 1.11 ships: Sat 2026-02-14 and Sat 2026-02-28 are make-up workdays.
    c = cal(holidays="cn")
    assert c.is_workday(date(2026, 2, 14)) and c.is_workday(date(2026, 2, 28))
    assert c.is_holiday(date(2026, 2, 17)) == (True, "Spring Festival")


def test_a_year_the_holiday_data_does_not_cover_is_a_loud_warning_not_a_guess() -> None:
    c = cal(holidays="cn")
    msg = c.coverage_warning(2031)
    assert msg is not None and "2031" in msg and "chinesecalendar" in msg and "OFF" in msg
    assert c.coverage_warning(2025) is None
    with pytest.raises(HolidayDataMissing):
        c.is_holiday(date(2031, 10, 1))
    assert cal(holidays="none").coverage_warning(2031) is None


def test_overnight_range_runs_past_midnight_and_grace_edges_are_inclusive() -> None:
    c = cal(**{**WEEK, "fri": ["18:00-02:00"], "sat": "closed"})
    grace = timedelta(minutes=15)
    assert c.is_open(at("2026-03-14 01:59"), grace)           # Saturday morning, Friday's night
    assert c.is_open(at("2026-03-14 02:15"), grace)           # closing + grace, inclusive
    assert not c.is_open(at("2026-03-14 02:15:01"), grace)
    assert not c.is_open(at("2026-03-14 12:00"), grace)       # Saturday closed
    assert c.is_open(at("2026-03-13 17:45"), grace) and not c.is_open(at("2026-03-13 17:44"), grace)


def test_hours_config_refuses_what_a_person_could_not_have_meant() -> None:
    for bad in ({"mon": ["9-17"]}, {"mon": ["09:00-09:00"]}, {"mon": ["25:00-26:00"]},
                {"mon": ["closed", "09:00-12:00"]}, {"holidays": "us"}, {"opening": "9"},
                {"closures": ["2026-13-01"]}):
        with pytest.raises(ValidationError):
            HoursConfig.model_validate(bad)
    ok = HoursConfig.model_validate({"mon": "closed", "tue": "10:00-24:00", "closures": ["2026-12-25"]})
    assert ok.mon == [] and ok.tue == ["10:00-24:00"] and ok.closures == [date(2026, 12, 25)]


# -- TIME-001 ---------------------------------------------------------------------------------
def test_without_configured_hours_the_shop_is_always_open() -> None:
    assert Till().sale(at("2026-03-10 03:00")) == []


def test_sale_at_night_is_outside_opening_hours() -> None:
    till = Till(hours=WEEK)
    f = only(till.sale(at("2026-03-10 23:40")), "TIME-001")
    # Something to verify (issue 16): a late sale is often genuine, so it asks for a check, never a void.
    assert (f.action, f.certainty) == ("check", "verify")
    assert "09:00-21:30" in f.reason_en and "周二" in f.reason_zh
    assert_well_formed(f)
    assert till.sale(at("2026-03-10 21:45"), card="621700******1234") == []   # within the 15 min grace


def test_refund_outside_hours_is_checked_not_voided() -> None:
    till = Till(hours=WEEK)
    f = only(till.sale(at("2026-03-10 23:40"), kind="refund"), "TIME-001")
    assert f.action == "check"


def test_opening_hours_are_judged_on_the_wall_clock_the_morning_clocks_spring_forward() -> None:
    # New York 2026-03-08: 02:00 EST -> 03:00 EDT. The shop opens 09:00 local either way.
    hours = {**WEEK, "sun": ["09:00-17:00"]}
    till = Till(tz=NEW_YORK, hours=hours)
    assert till.sale(at("2026-03-08 08:45", NEW_YORK)) == []
    assert rules_of(till.sale(at("2026-03-08 08:44", NEW_YORK), card="621700******1234")) == ["TIME-001"]


def test_bar_open_until_three_serves_through_the_repeated_hour_of_fall_back_night() -> None:
    # Berlin 2025-10-26: 03:00 CEST -> 02:00 CET, so 02:00-02:59 happens twice. Hours are wall clock:
    # the second 02:30 is before 03:00 on the wall although 3.5 h of real time have passed since 23:00.
    hours = {**WEEK, "sat": ["18:00-03:00"], "sun": ["18:00-03:00"]}
    till = Till(tz=BERLIN, hours=hours, rules={"TIME-001": {"grace": "0m"}})
    assert till.sale(at("2025-10-26 02:30", BERLIN).replace(fold=1)) == []
    assert rules_of(till.sale(at("2025-10-26 03:01", BERLIN), card="621700******1234")) == ["TIME-001"]


def test_make_up_sunday_can_borrow_monday_hours_for_a_shop_closed_on_sundays() -> None:
    hours = {**CN, "sun": "closed", "makeup_workday_hours": "mon"}
    till = Till(hours=hours)
    assert till.sale(at("2025-09-28 10:00")) == []                              # 调休 Sunday
    assert rules_of(till.sale(at("2025-09-21 10:00"), card="621700******1234")) == ["TIME-001"]


# -- TIME-002 ---------------------------------------------------------------------------------
def test_sale_on_a_holiday_is_normal_for_a_shop_that_trades_on_holidays() -> None:
    assert Till(hours=CN).sale(at("2025-10-01 12:00")) == []


def test_sale_on_a_holiday_is_flagged_when_the_shop_closes_on_holidays() -> None:
    till = Till(hours={**CN, "closed_on_holidays": True})
    f = only(till.sale(at("2025-10-01 12:00")), "TIME-002")
    assert "National Day" in f.reason_en and "国庆节" in f.reason_zh
    assert (f.action, f.certainty) == ("check", "verify")
    assert_well_formed(f)
    assert till.sale(at("2025-09-28 12:00"), card="621700******1234") == []    # make-up workday


def test_closed_holiday_outside_hours_makes_one_alert_from_the_holiday_rule() -> None:
    till = Till(hours={**CN, "closed_on_holidays": True})
    findings = till.sale(at("2025-10-01 23:00"))
    assert rules_of(findings) == ["TIME-002"] and findings[0].evidence["also_matched"] == ["TIME-001"]


def test_configured_closure_day_is_flagged_even_without_a_holiday_calendar() -> None:
    till = Till(hours={**WEEK, "closures": ["2026-12-25"]})
    f = only(till.sale(at("2026-12-25 12:00")), "TIME-002")
    assert f.evidence["value"] == "2026-12-25" and "closure" in f.reason_en


def test_uncovered_year_judges_no_holiday_but_still_closures_and_warns() -> None:
    till = Till(hours={**CN, "closed_on_holidays": True, "closures": ["2031-02-01"]})
    assert till.sale(at("2031-10-01 12:00")) == []
    assert till.engine.insufficient["TIME-002"] == 1
    assert rules_of(till.sale(at("2031-02-01 12:00"), card="621700******1234")) == ["TIME-002"]
    warnings = till.engine.warnings(at("2031-03-01 12:00"))
    assert len(warnings) == 1 and "2031" in warnings[0]
    assert till.engine.warnings(at("2025-03-01 12:00")) == []
    assert len(till.engine.warnings(at("2026-12-15 12:00"))) == 1      # December looks at next year too
