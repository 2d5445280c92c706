"""The shop's typical sale amount, computed once per refresh so each check is O(1).

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

When MAD is 0 (over half the sales have one amount) the spread falls back to
the mean absolute deviation scaled to the same units (1.253314 * MeanAD, the
ratio of the two for a normal distribution). When that is 0 too, every sale
had the same amount and there is no spread at all: the outlier rule then
flags only amounts more than a configured factor away from that constant.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from statistics import NormalDist, median
from typing import Any

MEANAD_TO_SIGMA = 1.253314   # sqrt(pi/2): MeanAD of a normal distribution is 0.7979 sigma
MAD_TO_SIGMA = 1.4826        # 1 / 0.6745
KNOWN_PRICES_KEPT = 512      # distinct amounts whose counts are kept: far more than any shop's list prices
LOG_BIN = 0.01               # histogram step on ln(amount): 1%
MAX_BINS = 2400              # ln(1) .. ln(10^10 minor units) at 1%: memory bounded whatever the amounts
NEAR_LOG = math.log(1.1)     # "near an amount": within 10% of it
MAX_ZEROS = 6                # trailing zeros counted up to 10^6 minor units (10,000.00)
_STD_NORMAL = NormalDist()


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

    @classmethod
    def compute(cls, amounts_minor: Sequence[int], now: datetime) -> AmountBaseline | None:
        """None when there is nothing to compute from (no positive amount)."""
        amounts = sorted(a for a in amounts_minor if a > 0)
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
        )

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
        return self.count * (_STD_NORMAL.cdf(z + half) - _STD_NORMAL.cdf(z - half))

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
