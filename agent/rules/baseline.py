"""The shop's typical sale amount, computed once per refresh so each check is O(1).

(Over 500 lines: compute and its running form side by side, as each must give the other's floats.)

Amounts are compared on a log scale: a shop's amounts are roughly log-normal
(many small tickets, a few big ones), and a decimal slip is a constant shift of
log10(amount) by 1, 2 or 3. Spread is the median absolute deviation (MAD) of
log(amount), robust to the very outliers we look for.

Besides the spread, the baseline keeps three bounded summaries that the
decimal-slip rule reads in O(1):

* ``price_counts``: how often each of the most frequent exact amounts was
  charged (at most ``KNOWN_PRICES_KEPT`` of them). A shop sells its big tickets
  at list prices (a set menu, a carton of one brand), so an amount it has
  charged many times is a known price, whatever its z-score.
* a histogram of ln(amount) in steps of ``LOG_BIN`` (at most ``MAX_BINS``
  bins), kept as running totals, so "how many sales were within 10% of this
  amount" is two look-ups. It sees the real shape of the upper tail (drinks
  added to a set menu) that a single log-normal misses.
* the share of amounts by how many trailing zeros they have in minor units
  (how the shop rounds: 18.60, 18.00, 180.00 have 1, 2 and 3).
* the shop's own tail of large bills: above P95, ln(amount) is fitted with an
  exponential (a Pareto tail in amounts; ``tail_rate`` is its maximum-likelihood
  rate). A shop with banquets and group orders has a slow tail, one that never
  bills above RMB 100 a steep one: this says how likely a genuine large bill is,
  and where the budgeted outlier threshold of AMT-002 lies.
* when sale times are given (``(instant, amount)`` pairs), when those large bills
  happen: counts of all sales and of tail sales by local hour, workdays and
  weekends apart (48 bins), and how many distinct days the window had sales; and each
  kept large bill's own hour bin (``tail_hours``), so AMT-001 can score the month's
  large bills at their own hour, as it scores a live charge, when it sets its cut.

When MAD is 0 (over half the sales have one amount) the spread falls back to
the mean absolute deviation scaled to the same units (1.253314 * MeanAD, the
ratio of the two for a normal distribution). When that is 0 too, every sale
had the same amount and there is no spread at all: the outlier rule then
flags only amounts more than a configured factor away from that constant.

``compute`` walks its whole window (the daemon's journal path: a refresh a few times a day).
``RunningBaseline`` keeps the same aggregates as sales enter and leave a window and builds a baseline
equal to ``compute``'s on that window in O(bins + distinct amounts + tail) (replay refreshes once a
simulated day: issue 20).
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, tzinfo
from heapq import nsmallest
from statistics import median
from typing import Any, cast

MEANAD_TO_SIGMA = 1.253314   # sqrt(pi/2): MeanAD of a normal distribution is 0.7979 sigma
MAD_TO_SIGMA = 1.4826        # 1 / 0.6745
KNOWN_PRICES_KEPT = 512      # distinct amounts whose counts are kept: far more than any shop's list prices
LOG_BIN = 0.01               # histogram step on ln(amount): 1%
MAX_BINS = 2400              # ln(1) .. ln(10^10 minor units) at 1%: memory bounded whatever the amounts
NEAR_LOG = math.log(1.1)     # "near an amount": within 10% of it
TAIL_KEPT = 4000             # amounts above P95 kept for calibration: 5% of 80,000 sales a month
MAX_ZEROS = 6                # trailing zeros counted up to 10^6 minor units (10,000.00)
_SQRT2 = math.sqrt(2.0)


def _std_normal_cdf(x: float) -> float:
    """``statistics.NormalDist().cdf(x)``, the same float (its ``0.5 * (1 + erf((x - 0) / (1 * sqrt 2)))``: both
    identities are exact) without a method call's overhead: the AMT calibration asks it thousands of times."""
    return 0.5 * (1.0 + math.erf(x / _SQRT2))


@dataclass(frozen=True, slots=True)
class AmountBaseline:
    count: int
    median_minor: int
    p05_minor: int                # nearest-rank percentiles: amounts that really occurred
    p95_minor: int
    p999_minor: int               # the top 0.1%: a shop's real big tickets live below it, whatever their z
    median_log: float
    sigma_log: float              # robust spread of ln(amount); 0 only when all amounts are equal
    method: str                   # "mad" | "meanad" | "constant"
    computed_at: datetime
    # The largest power of ten that divides at least half the amounts: how this shop rounds prices
    # (100 = whole yuan). A slip keeps the rounding of the amount meant and appends zeros to it.
    usual_step: int = 1
    # The most frequent exact amounts and how often each was charged (see the module docstring).
    price_counts: dict[int, int] = field(default_factory=dict, compare=False, repr=False)
    # Running totals of the ln(amount) histogram: cumulative[i] = amounts in bins first_bin .. first_bin + i.
    first_bin: int = 0
    cumulative: tuple[int, ...] = field(default=(), compare=False, repr=False)
    # zero_share[t]: share of amounts with exactly t trailing zeros (t = MAX_ZEROS: at least that many).
    zero_share: tuple[float, ...] = field(default=(), compare=False, repr=False)
    # Rate of the exponential fitted to ln(amount) - ln(P95) over the amounts above P95 (0: no tail seen).
    tail_rate: float = 0.0
    tail_count: int = 0
    # Sales by (weekend, local hour) -> index weekend * 24 + hour; all sales and those above P95.
    # Empty when the baseline was computed from amounts alone (no times).
    hour_all: tuple[int, ...] = field(default=(), compare=False, repr=False)
    hour_tail: tuple[int, ...] = field(default=(), compare=False, repr=False)
    days: int = 0                 # distinct local days with a sale (0: not known, amounts only)
    # The amounts above P95 themselves (at most TAIL_KEPT, the largest): the genuine large bills a rule can
    # score to learn how often its threshold would have fired on this month's own trading.
    tail_amounts: tuple[int, ...] = field(default=(), compare=False, repr=False)
    # Each of those bills' hour bin (weekend * 24 + local hour), in the same order (equal amounts by hour), so
    # the rule scores them at their own hour as it scores a live charge. Empty when computed without times.
    tail_hours: tuple[int, ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def compute(cls, sales: Sequence[int] | Sequence[tuple[datetime, int]], now: datetime,
                tz: tzinfo | None = None) -> AmountBaseline | None:
        """None when there is nothing to compute from (no positive amount).

        ``sales`` are amounts, or (instant, amount) pairs when the hour of large bills should count;
        ``tz`` is the shop's zone for those instants (default: the instants' own).
        """
        timed: list[tuple[datetime, int]] = []
        if sales and isinstance(sales[0], tuple):
            timed = [(t, a) for t, a in cast("Sequence[tuple[datetime, int]]", sales) if a > 0]
            amounts = sorted(a for _, a in timed)
        else:
            amounts = sorted(a for a in cast("Sequence[int]", sales) if a > 0)
        n = len(amounts)
        if n == 0:
            return None
        logs = [math.log(a) for a in amounts]       # sorted too: log is monotonic
        med = median(logs)
        mad = median(abs(x - med) for x in logs)
        if mad > 0:
            sigma, method = MAD_TO_SIGMA * mad, "mad"
        else:
            mean_ad = sum(abs(x - med) for x in logs) / n
            sigma, method = (MEANAD_TO_SIGMA * mean_ad, "meanad") if mean_ad > 0 else (0.0, "constant")
        return cls(
            count=n,
            median_minor=amounts[(n - 1) // 2],
            p05_minor=amounts[max(0, math.ceil(0.05 * n) - 1)],
            p95_minor=amounts[max(0, math.ceil(0.95 * n) - 1)],
            p999_minor=amounts[max(0, math.ceil(0.999 * n) - 1)],
            median_log=med,
            sigma_log=sigma,
            method=method,
            computed_at=now,
            usual_step=_usual_step(amounts),
            price_counts=dict(Counter(amounts).most_common(KNOWN_PRICES_KEPT)),
            **_histogram(logs),
            zero_share=_zero_share(amounts),
            **_tail(logs, amounts[max(0, math.ceil(0.95 * n) - 1)]),
            tail_amounts=tuple(a for a in amounts[-TAIL_KEPT:] if a > amounts[max(0, math.ceil(0.95 * n) - 1)]),
            **_hours(timed, amounts[max(0, math.ceil(0.95 * n) - 1)], tz),
        )

    # -- the tail of large bills ------------------------------------------------------------
    def tail_survival(self, amount_minor: int) -> float:
        """Share of all sales expected above this amount, from the fitted tail (not modelled at or below P95)."""
        if amount_minor <= self.p95_minor:
            return 1.0
        share = self.tail_count / self.count
        if self.tail_rate <= 0:
            return 0.0
        return share * math.exp(-self.tail_rate * (math.log(amount_minor) - math.log(self.p95_minor)))

    def tail_expected(self, amount_minor: int) -> float:
        """Sales within 10% of this amount that the fitted tail expects (0 below P95)."""
        if amount_minor <= self.p95_minor or self.tail_rate <= 0:
            return 0.0
        lo = max(self.p95_minor + 1, int(amount_minor / math.exp(NEAR_LOG)))
        hi = int(amount_minor * math.exp(NEAR_LOG))
        return self.count * (self.tail_survival(lo) - self.tail_survival(hi))

    def tail_amount(self, share: float) -> int | None:
        """The amount that only ``share`` of all sales exceed, by the fitted tail (None: no tail, or within it)."""
        tail_share = self.tail_count / self.count
        if self.tail_rate <= 0 or share <= 0 or share >= tail_share:
            return None
        return int(math.exp(math.log(self.p95_minor) + math.log(tail_share / share) / self.tail_rate))

    @property
    def trading_days(self) -> int:
        """Days with sales in the window (30 when the baseline had no times)."""
        return self.days or 30

    def hour_factor(self, local: datetime, weekend: bool) -> float:
        """How much likelier a large bill is at this hour (+-1 h) than a sale in general, 1.0 when unknown.

        Shrunk towards 1 by five pseudo tail sales spread like all sales: a month with a handful of
        banquets does not rule out a banquet at lunch.
        """
        return self.hour_factor_at(24 * int(weekend) + local.hour)

    def hour_factor_at(self, hour_bin: int, leave_out: int = 0) -> float:
        """``hour_factor`` for an hour bin (weekend * 24 + hour). ``leave_out``: tail sales of this very bin to
        take out first (1 when scoring one of the month's own large bills, as if it were a live charge)."""
        if not self.hour_all or not self.tail_count:
            return 1.0
        base = hour_bin - hour_bin % 24
        band = [base + (hour_bin + d) % 24 for d in (-1, 0, 1)]
        all_band = sum(self.hour_all[i] for i in band) - leave_out
        total_all = sum(self.hour_all[base:base + 24]) - leave_out
        if all_band <= 0 or total_all <= 0:
            return 1.0
        share_all = all_band / total_all
        tail_band = sum(self.hour_tail[i] for i in band) - leave_out
        total_tail = sum(self.hour_tail[base:base + 24]) - leave_out
        pseudo = 5.0
        return ((tail_band + pseudo * share_all) / (total_tail + pseudo)) / share_all

    def price_count(self, amount_minor: int) -> int:
        """How often exactly this amount was charged (0 when it is not among the most frequent ones)."""
        return self.price_counts.get(amount_minor, 0)

    def near_count(self, amount_minor: int) -> int:
        """Sales within 10% (on the log scale) of this amount."""
        if amount_minor <= 0 or not self.cumulative:
            return 0
        centre = math.log(amount_minor) / LOG_BIN - self.first_bin
        reach = NEAR_LOG / LOG_BIN
        hi = min(len(self.cumulative) - 1, math.floor(centre + reach))
        lo = max(0, math.floor(centre - reach))
        if hi < 0 or lo > len(self.cumulative) - 1 or hi < lo:
            return 0
        return self.cumulative[hi] - (self.cumulative[lo - 1] if lo > 0 else 0)

    def near_expected(self, amount_minor: int) -> float:
        """Sales within 10% of this amount if the shop's amounts were exactly log-normal (median, spread)."""
        if amount_minor <= 0 or self.sigma_log <= 0:
            return 0.0
        z = (math.log(amount_minor) - self.median_log) / self.sigma_log
        half = NEAR_LOG / self.sigma_log
        return self.count * (_std_normal_cdf(z + half) - _std_normal_cdf(z - half))

    def rounding_share(self, amount_minor: int) -> float:
        """Share of this shop's amounts rounded exactly like this one (same number of trailing zeros).

        Smoothed (one pseudo-sale per class), so a rounding never seen is rare, not impossible.
        """
        if not self.zero_share:
            return 1.0
        return self.zero_share[trailing_zeros(amount_minor)]

    def modified_z(self, amount_minor: int) -> float:
        """Robust z-score of ln(amount); infinite when there is no spread and the amount differs."""
        if amount_minor <= 0:
            return -math.inf
        delta = math.log(amount_minor) - self.median_log
        if self.sigma_log > 0:
            return delta / self.sigma_log
        if delta == 0:
            return 0.0
        return math.copysign(math.inf, delta)

    def to_evidence(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "median_minor": self.median_minor,
            "p05_minor": self.p05_minor,
            "p95_minor": self.p95_minor,
            "p999_minor": self.p999_minor,
            "spread_method": self.method,
            "sigma_log": round(self.sigma_log, 6),
            "usual_step_minor": self.usual_step,
            "known_prices": sum(1 for c in self.price_counts.values() if c >= 2),
            "tail_rate": round(self.tail_rate, 4),
            "tail_count": self.tail_count,
            "days": self.days,
            "computed_at": self.computed_at.isoformat(),
        }


def _usual_step(amounts: Sequence[int]) -> int:
    step, half = 1, len(amounts) / 2
    while step < 10**6 and sum(1 for a in amounts if a % (step * 10) == 0) >= half:
        step *= 10
    return step


def trailing_zeros(amount_minor: int) -> int:
    """Trailing zeros of the amount in minor units, capped at MAX_ZEROS (18000 -> 3)."""
    t = 0
    while t < MAX_ZEROS and amount_minor > 0 and amount_minor % 10 == 0:
        amount_minor //= 10
        t += 1
    return t


def _histogram(sorted_logs: Sequence[float]) -> dict[str, Any]:
    """Running totals of ln(amount) in LOG_BIN steps; amounts beyond MAX_BINS from the smallest share the last."""
    if not sorted_logs:
        return {"first_bin": 0, "cumulative": ()}
    first = math.floor(sorted_logs[0] / LOG_BIN)
    last = min(math.floor(sorted_logs[-1] / LOG_BIN), first + MAX_BINS - 1)
    edges = [(first + i + 1) * LOG_BIN for i in range(last - first + 1)]
    cumulative = [bisect_left(sorted_logs, e) for e in edges]
    cumulative[-1] = len(sorted_logs)
    return {"first_bin": first, "cumulative": tuple(cumulative)}


def _zero_share(amounts: Sequence[int]) -> tuple[float, ...]:
    counts = Counter(trailing_zeros(a) for a in amounts)
    total = len(amounts) + MAX_ZEROS + 1
    return tuple((counts[t] + 1) / total for t in range(MAX_ZEROS + 1))


def _tail(sorted_logs: Sequence[float], p95_minor: int) -> dict[str, Any]:
    """Exponential rate of ln(amount) above ln(P95): the maximum-likelihood one (1 / mean excess), or
    steeper when the month's largest amount says so.

    A month of n sales whose largest was M puts about one sale in n above M; an exponential that expects
    far more out there (a log-normal's shoulder read as a long tail) is made to fall to 1 / n at M.
    """
    cut = math.log(p95_minor)
    excess = [x - cut for x in sorted_logs if x > cut]
    if not excess:
        return {"tail_rate": 0.0, "tail_count": 0}
    # Half a pseudo-observation one spread out keeps a tail of one or two bills from looking infinitely steep.
    rate = 1.0 / ((sum(excess) + 0.5) / (len(excess) + 0.5))
    if len(excess) >= 2 and excess[-1] > 0:
        rate = max(rate, math.log(len(excess) + 1) / excess[-1])
    return {"tail_rate": rate, "tail_count": len(excess)}


def _hours(timed: Sequence[tuple[datetime, int]], p95_minor: int, tz: tzinfo | None) -> dict[str, Any]:
    if not timed:
        return {}
    hour_all = [0] * 48
    hour_tail = [0] * 48
    days = set()
    tail: list[tuple[int, int]] = []
    for t, a in timed:
        local = t.astimezone(tz) if tz is not None else t
        i = 24 * int(local.weekday() >= 5) + local.hour
        hour_all[i] += 1
        if a > p95_minor:
            hour_tail[i] += 1
            tail.append((a, i))
        days.add(local.date())
    # The largest TAIL_KEPT, as tail_amounts keeps them; among equal amounts cut there, the later hours.
    tail.sort()
    return {"hour_all": tuple(hour_all), "hour_tail": tuple(hour_tail), "days": len(days),
            "tail_hours": tuple(i for _, i in tail[-TAIL_KEPT:])}


class _Amount:
    """One distinct amount in a running window: its sales, its histogram edge, its sales by hour bin."""

    __slots__ = ("count", "edge", "hours")

    def __init__(self, edge: int) -> None:
        self.count = 0
        self.edge = edge
        self.hours: dict[int, int] = {}


def _edge(x: float) -> int:
    """The smallest k with x < k * LOG_BIN: an amount of ln x is counted in every running total from there.

    ``_histogram``'s edges are ``k * LOG_BIN`` for integer k, the same float whatever its first bin, so
    "ln(amount) < edge" decided once per distinct amount is the comparison compute's bisects make.
    """
    k = math.floor(x / LOG_BIN) + 1
    while not x < k * LOG_BIN:
        k += 1
    while x < (k - 1) * LOG_BIN:
        k -= 1
    return k


class RunningBaseline:
    """What ``AmountBaseline.compute`` derives from (instant, amount) pairs, kept as each sale enters and
    leaves the window, so a refresh costs O(bins + distinct amounts + tail) instead of O(window).

    ``baseline(now)`` equals ``compute(pairs, now, tz)`` on the pairs entered and not left, field by
    field: the same floats, because every float is computed by the same operations on the same values
    (the median and MAD are picked from the sorted ln(amount) by rank; the tail's sum runs over the same
    amounts in the same order). One exception in cost, not result: when MAD is 0 (over half the sales
    share one amount) the mean absolute deviation is summed over the whole window, as compute does.
    A sale's local hour and day are worked out once, by :meth:`place`, and handed back when it leaves.
    """

    def __init__(self, tz: tzinfo | None = None) -> None:
        self.tz = tz
        # Positive amounts, ascending, ln as key for compute's bisects. Distinct integers up to the boundary's
        # 10^12 minor units have distinct ln (steps of ~1e-12 against an ulp of ~4e-15), so the key order is
        # the amounts' order and "ln a > ln P95" is "a > P95".
        from sortedcontainers import SortedKeyList  # replay's only: the daemon's start-up does not import it

        self._sorted = SortedKeyList(key=math.log)
        self._amounts: dict[int, _Amount] = {}
        self._by_count: dict[int, set[int]] = {}      # sales -> the amounts charged that often (price_counts)
        self._edges: dict[int, int] = {}              # histogram edge (see _edge) -> amounts first counted there
        self._zeros = [0] * (MAX_ZEROS + 1)           # amounts by trailing zeros
        self._hour_all = [0] * 48
        self._days: dict[date, int] = {}              # local day -> sales

    def place(self, at: datetime) -> tuple[int, date]:
        """The sale's hour bin (weekend * 24 + local hour) and local day, as ``_hours`` reads them."""
        local = at.astimezone(self.tz) if self.tz is not None else at
        return 24 * int(local.weekday() >= 5) + local.hour, local.date()

    def __len__(self) -> int:
        return len(self._sorted)

    def enter(self, amount_minor: int, hour: int, day: date) -> None:
        """A sale enters the window (amounts <= 0 are not sales compute counts: ignored)."""
        if amount_minor <= 0:
            return
        self._sorted.add(amount_minor)
        entry = self._amounts.get(amount_minor)
        if entry is None:
            entry = self._amounts[amount_minor] = _Amount(_edge(math.log(amount_minor)))
        self._recount(amount_minor, entry.count, entry.count + 1)
        entry.count += 1
        entry.hours[hour] = entry.hours.get(hour, 0) + 1
        self._edges[entry.edge] = self._edges.get(entry.edge, 0) + 1
        self._zeros[trailing_zeros(amount_minor)] += 1
        self._hour_all[hour] += 1
        self._days[day] = self._days.get(day, 0) + 1

    def leave(self, amount_minor: int, hour: int, day: date) -> None:
        """A sale entered with these values leaves the window."""
        if amount_minor <= 0:
            return
        self._sorted.remove(amount_minor)
        entry = self._amounts[amount_minor]
        self._recount(amount_minor, entry.count, entry.count - 1)
        entry.count -= 1
        if entry.count == 0:
            del self._amounts[amount_minor]
        else:
            _decrement(entry.hours, hour)
        _decrement(self._edges, entry.edge)
        self._zeros[trailing_zeros(amount_minor)] -= 1
        self._hour_all[hour] -= 1
        _decrement(self._days, day)

    def baseline(self, now: datetime) -> AmountBaseline | None:
        """The baseline of the sales in the window now; None when there is none."""
        ranked, n = self._sorted, len(self._sorted)
        if n == 0:
            return None
        log = math.log
        half = n // 2
        med = log(ranked[half]) if n % 2 else (log(ranked[half - 1]) + log(ranked[half])) / 2
        mad = self._deviation_median(med)
        if mad > 0:
            sigma, method = MAD_TO_SIGMA * mad, "mad"
        else:   # compute's own sum, in its order: only when over half the sales share one amount
            mean_ad = sum(abs(log(a) - med) for a in ranked) / n
            sigma, method = (MEANAD_TO_SIGMA * mean_ad, "meanad") if mean_ad > 0 else (0.0, "constant")
        p95 = ranked[max(0, math.ceil(0.95 * n) - 1)]
        cut = log(p95)
        above = ranked.bisect_key_right(cut)        # first amount whose ln exceeds ln(P95): compute's tail
        # _usual_step: "a % (10 * step) == 0" is "at least `zeros` trailing zeros" (zeros <= MAX_ZEROS).
        step, zeros, at_least = 1, 1, n / 2
        while step < 10**6 and sum(self._zeros[zeros:]) >= at_least:
            step, zeros = step * 10, zeros + 1
        total = n + MAX_ZEROS + 1
        hour_tail = [0] * 48
        previous = 0
        for a in ranked.islice(above):
            if a != previous:
                for hour, count in self._amounts[a].hours.items():
                    hour_tail[hour] += count
                previous = a
        tail = tuple(ranked.islice(max(above, n - TAIL_KEPT)))
        return AmountBaseline(
            count=n,
            median_minor=ranked[(n - 1) // 2],
            p05_minor=ranked[max(0, math.ceil(0.05 * n) - 1)],
            p95_minor=p95,
            p999_minor=ranked[max(0, math.ceil(0.999 * n) - 1)],
            median_log=med,
            sigma_log=sigma,
            method=method,
            computed_at=now,
            usual_step=step,
            price_counts=self._price_counts(),
            **self._histogram(),
            zero_share=tuple((self._zeros[t] + 1) / total for t in range(MAX_ZEROS + 1)),
            **_tail([log(a) for a in ranked.islice(above)], p95),
            tail_amounts=tail,
            hour_all=tuple(self._hour_all),
            hour_tail=tuple(hour_tail),
            days=len(self._days),
            tail_hours=self._tail_hours(tail),
        )

    def _tail_hours(self, tail: Sequence[int]) -> tuple[int, ...]:
        """compute's tail_hours for the kept tail amounts (ascending): each amount's hour bins ascending; the
        first amount, when the TAIL_KEPT cut falls among its sales, keeps only its latest bins (the last of
        compute's sorted pairs)."""
        out: list[int] = []
        if not tail:
            return ()
        amounts, first = self._amounts, tail[0]
        for a in dict.fromkeys(tail):           # the distinct amounts, ascending
            entry = amounts[a]
            hours = entry.hours
            if entry.count == 1:                # most tail amounts
                out.extend(hours)
                continue
            taken = bisect_right(tail, first) if a == first else entry.count
            bins = [h for h in sorted(hours) for _ in range(hours[h])]
            out.extend(bins[len(bins) - taken:])
        return tuple(out)

    def _deviation_median(self, med: float) -> float:
        """median(|ln a - med|) over the window, by selection: the deviations below the median and those
        at or above it are each sorted (by rank, walking away from the median), so the k-th smallest of
        all is found by bisection over how many come from the lower side."""
        ranked, n = self._sorted, len(self._sorted)
        log = math.log
        split = ranked.bisect_key_left(med)         # ln(a) < med: the lower side, nearest first

        def lower(j: int) -> float:
            return abs(log(ranked[split - 1 - j]) - med)

        def upper(j: int) -> float:
            return abs(log(ranked[split + j]) - med)

        def kth(k: int) -> float:   # the k-th smallest deviation (0-based)
            lo, hi = max(0, k + 1 - (n - split)), min(k + 1, split)
            while lo < hi:                           # i from the lower side, k + 1 - i from the upper side
                i = (lo + hi) // 2
                if lower(i) < upper(k - i):
                    lo = i + 1
                else:
                    hi = i
            i = lo
            return max(lower(i - 1) if i > 0 else -math.inf, upper(k - i) if k - i >= 0 else -math.inf)

        half = n // 2
        return kth(half) if n % 2 else (kth(half - 1) + kth(half)) / 2

    def _recount(self, amount_minor: int, was: int, now: int) -> None:
        if was:
            bucket = self._by_count[was]
            bucket.discard(amount_minor)
            if not bucket:
                del self._by_count[was]
        if now:
            self._by_count.setdefault(now, set()).add(amount_minor)

    def _price_counts(self) -> dict[int, int]:
        """Counter(sorted amounts).most_common(KNOWN_PRICES_KEPT): by count, ties by the smaller amount
        first; read from the amounts grouped by count, so only the groups needed are sorted."""
        out: dict[int, int] = {}
        for count in sorted(self._by_count, reverse=True):
            room = KNOWN_PRICES_KEPT - len(out)
            if room <= 0:
                break
            group = self._by_count[count]
            out.update((a, count) for a in (sorted(group) if len(group) <= room else nsmallest(room, group)))
        return out

    def _histogram(self) -> dict[str, Any]:
        ranked, n = self._sorted, len(self._sorted)
        first = math.floor(math.log(ranked[0]) / LOG_BIN)
        last = min(math.floor(math.log(ranked[-1]) / LOG_BIN), first + MAX_BINS - 1)
        edges = self._edges
        total = sum(edges.get(k, 0) for k in range(self._amounts[ranked[0]].edge, first + 2))
        cumulative = [total]
        for k in range(first + 2, last + 2):
            total += edges.get(k, 0)
            cumulative.append(total)
        cumulative[-1] = n
        return {"first_bin": first, "cumulative": tuple(cumulative)}


def _decrement(counts: dict[Any, int], key: Any) -> None:
    left = counts[key] - 1
    if left:
        counts[key] = left
    else:
        del counts[key]
