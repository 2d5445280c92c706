"""The daemon's baseline refresh from a window the journal has grouped: ``AmountBaseline.compute``'s result,
field by field and float for float, without a Python object per sale.

``compute`` takes the window as (instant, amount) pairs. A busy till's 30-day window is tens of thousands of
sales, and at the benchmark's pace (a sale every 2 s) over a million: materialised as rows, datetimes,
tuples, logs and a Counter, one refresh peaked at ~150 bytes a sale of Python objects, and the arenas that
peak left behind stayed in the daemon's RSS (issue 20). Here the journal hands over the distinct amounts
with their counts (two machine integers each, in typed arrays), the sales per UTC quarter-hour (at most
96 a day), and only the few largest sales one by one; every float is made by the same operations on the
same values, in the same order, as ``compute`` makes it:

* the median and the MAD are picked by rank (the deviations by a merge walk out from the median, as both
  sides are sorted), the mean absolute deviation and the tail's sum add the same terms in the same order
  (each distinct amount's term repeated by its count);
* the local hour and day of a UTC quarter-hour are those of every sale in it wherever the zone's offset is
  a whole number of quarter-hours and is the same at both ends of it (every zone in tzdata: none changes
  twice within 15 minutes; checked per quarter-hour, and its sales placed one by one where not).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Iterator
from datetime import date, datetime, timedelta, tzinfo
from heapq import nlargest
from itertools import chain, repeat
from operator import itemgetter
from typing import Any, Protocol

from agent.rules import baseline as b
from agent.rules.baseline import AmountBaseline

QUARTER = timedelta(minutes=15)


class SaleWindow(Protocol):
    """Approved sales in a window, as the journal groups them (agent/store/sale_window.py)."""

    def amount_counts(self) -> Iterable[tuple[int, int]]:
        """(amount, sales) for every distinct amount, ascending (amounts <= 0 included)."""

    def quarter_counts(self, above: int) -> Iterable[tuple[datetime, int]]:
        """(UTC quarter-hour start, sales) of the sales with an amount greater than ``above``."""

    def sales_in(self, start: datetime, end: datetime, above: int) -> Iterable[tuple[datetime, int]]:
        """(instant, amount) of the sales in [start, end) with an amount greater than ``above``."""

    def sales_at_least(self, amount: int) -> Iterable[tuple[datetime, int]]:
        """(instant, amount) of the sales with an amount of at least ``amount`` (the few largest)."""


def baseline_from_window(window: SaleWindow, now: datetime, tz: tzinfo | None) -> tuple[AmountBaseline | None, int]:
    """``AmountBaseline.compute(pairs, now, tz)`` on the window's pairs, and how many pairs there were."""
    amounts, counts = array("q"), array("q")
    rows = 0
    for amount, count in window.amount_counts():
        rows += count
        if amount > 0:   # compute's own filter: not a sale it counts
            amounts.append(amount)
            counts.append(count)
    n = sum(counts)
    if n == 0:
        return None, rows
    log = math.log

    def at_rank(k: int) -> int:   # the k-th (0-based) of the sorted amounts
        seen = 0
        for amount, count in zip(amounts, counts, strict=True):
            seen += count
            if k < seen:
                return amount
        raise IndexError(k)

    half = n // 2
    med = log(at_rank(half)) if n % 2 else (log(at_rank(half - 1)) + log(at_rank(half))) / 2
    mad = _deviation_median(amounts, counts, n, med)
    if mad > 0:
        sigma, method = b.MAD_TO_SIGMA * mad, "mad"
    else:
        mean_ad = sum(_repeated((abs(log(a) - med), c) for a, c in zip(amounts, counts, strict=True))) / n
        sigma, method = (b.MEANAD_TO_SIGMA * mean_ad, "meanad") if mean_ad > 0 else (0.0, "constant")
    p95 = at_rank(max(0, math.ceil(0.95 * n) - 1))
    tail_amounts = _largest(amounts, counts, b.TAIL_KEPT, above=p95)
    hours = _hours(window, p95, tz, tail_amounts)
    return AmountBaseline(
        count=n,
        median_minor=at_rank((n - 1) // 2),
        p05_minor=at_rank(max(0, math.ceil(0.05 * n) - 1)),
        p95_minor=p95,
        p999_minor=at_rank(max(0, math.ceil(0.999 * n) - 1)),
        median_log=med,
        sigma_log=sigma,
        method=method,
        computed_at=now,
        usual_step=_usual_step(amounts, counts, n),
        # Counter(sorted amounts).most_common(K) is a stable nlargest by count over the amounts ascending.
        price_counts=dict(nlargest(b.KNOWN_PRICES_KEPT, zip(amounts, counts, strict=True), key=itemgetter(1))),
        **_histogram(amounts, counts, n),
        zero_share=_zero_share(amounts, counts, n),
        **_tail(amounts, counts, p95),
        tail_amounts=tail_amounts,
        **hours,
    ), rows


def _repeated(terms: Iterable[tuple[float, int]]) -> Iterator[float]:
    """Each term as often as its count, in order: the very sequence of floats compute's sums add."""
    return chain.from_iterable(repeat(value, count) for value, count in terms)


def _deviation_median(amounts: array[int], counts: array[int], n: int, med: float) -> float:
    """statistics.median(|ln a - med|) over the window. Below the median the deviations grow walking down,
    at and above it walking up: merged, they come out sorted, and the ranks the median needs are picked."""
    log = math.log
    split = 0
    while split < len(amounts) and log(amounts[split]) < med:
        split += 1
    lower, upper = split - 1, split
    half = n // 2
    wanted = (half,) if n % 2 else (half - 1, half)
    picked: list[float] = []
    seen = 0
    while len(picked) < len(wanted):
        down = abs(log(amounts[lower]) - med) if lower >= 0 else math.inf
        up = abs(log(amounts[upper]) - med) if upper < len(amounts) else math.inf
        if down < up:
            value, count, lower = down, counts[lower], lower - 1
        else:
            value, count, upper = up, counts[upper], upper + 1
        seen += count
        while len(picked) < len(wanted) and wanted[len(picked)] < seen:
            picked.append(value)
    return picked[0] if n % 2 else (picked[0] + picked[1]) / 2


def _usual_step(amounts: array[int], counts: array[int], n: int) -> int:
    step, half = 1, n / 2
    while step < 10**6 and sum(c for a, c in zip(amounts, counts, strict=True) if a % (step * 10) == 0) >= half:
        step *= 10
    return step


def _histogram(amounts: array[int], counts: array[int], n: int) -> dict[str, Any]:
    """compute's running totals: for each edge, the sales whose ln(amount) is below it."""
    log = math.log
    first = math.floor(log(amounts[0]) / b.LOG_BIN)
    last = min(math.floor(log(amounts[-1]) / b.LOG_BIN), first + b.MAX_BINS - 1)
    cumulative: list[int] = []
    i, below = 0, 0
    for k in range(last - first + 1):
        edge = (first + k + 1) * b.LOG_BIN
        while i < len(amounts) and log(amounts[i]) < edge:
            below += counts[i]
            i += 1
        cumulative.append(below)
    cumulative[-1] = n
    return {"first_bin": first, "cumulative": tuple(cumulative)}


def _zero_share(amounts: array[int], counts: array[int], n: int) -> tuple[float, ...]:
    zeros = [0] * (b.MAX_ZEROS + 1)
    for a, c in zip(amounts, counts, strict=True):
        zeros[b.trailing_zeros(a)] += c
    total = n + b.MAX_ZEROS + 1
    return tuple((zeros[t] + 1) / total for t in range(b.MAX_ZEROS + 1))


def _tail(amounts: array[int], counts: array[int], p95: int) -> dict[str, Any]:
    """compute's ``_tail`` on the logs above ln(P95), each distinct amount's excess repeated by its count."""
    log = math.log
    cut = log(p95)
    excess = [(log(a) - cut, c) for a, c in zip(amounts, counts, strict=True) if log(a) > cut]
    if not excess:
        return {"tail_rate": 0.0, "tail_count": 0}
    count = sum(c for _, c in excess)
    rate = 1.0 / ((sum(_repeated(excess)) + 0.5) / (count + 0.5))
    if count >= 2 and excess[-1][0] > 0:
        rate = max(rate, math.log(count + 1) / excess[-1][0])
    return {"tail_rate": rate, "tail_count": count}


def _largest(amounts: array[int], counts: array[int], kept: int, *, above: int) -> tuple[int, ...]:
    """``tuple(a for a in sorted_amounts[-kept:] if a > above)``, from the top of the grouped amounts."""
    out: list[int] = []
    i = len(amounts) - 1
    while i >= 0 and len(out) < kept and amounts[i] > above:
        out.extend(repeat(amounts[i], min(counts[i], kept - len(out))))
        i -= 1
    out.reverse()
    return tuple(out)


def _place(at: datetime, tz: tzinfo | None) -> tuple[int, date]:
    local = at.astimezone(tz) if tz is not None else at
    return 24 * int(local.weekday() >= 5) + local.hour, local.date()


def _whole_quarter(start: datetime, tz: tzinfo | None) -> bool:
    """Every instant of [start, start + 15 min) has the local hour and day ``start`` has."""
    if tz is None:
        return True
    offset = start.astimezone(tz).utcoffset()
    end = start + QUARTER - timedelta(microseconds=1)
    return offset is not None and offset == end.astimezone(tz).utcoffset() and offset % QUARTER == timedelta(0)


def _hours(window: SaleWindow, p95: int, tz: tzinfo | None, tail_amounts: tuple[int, ...]) -> dict[str, Any]:
    """compute's ``_hours``: sales by hour bin, those above P95, the distinct local days, the kept tail's bins."""
    hour_all, hour_tail = [0] * 48, [0] * 48
    days: set[date] = set()
    for counted, above in ((hour_all, 0), (hour_tail, p95)):
        for start, count in window.quarter_counts(above):
            if _whole_quarter(start, tz):
                i, day = _place(start, tz)
                counted[i] += count
                days.add(day)
                continue
            for at, _ in window.sales_in(start, start + QUARTER, above):   # a zone with an odd offset
                i, day = _place(at, tz)
                counted[i] += 1
                days.add(day)
    # compute sorts (amount, bin) over the sales above P95 and keeps the last TAIL_KEPT bins: the kept amounts
    # are the largest, so the sales from the smallest kept amount up hold them, ties at it ordered by bin. Those
    # are read one by one: TAIL_KEPT plus the ties at the cut (a list price there: up to 5% of the window).
    tail_hours: tuple[int, ...] = ()
    if tail_amounts:
        tail = sorted((a, _place(at, tz)[0]) for at, a in window.sales_at_least(tail_amounts[0]))
        tail_hours = tuple(i for _, i in tail[len(tail) - len(tail_amounts):])
    return {"hour_all": tuple(hour_all), "hour_tail": tuple(hour_tail), "days": len(days), "tail_hours": tail_hours}

