"""The shop's typical sale amount, computed once per refresh so each check is O(1).

Amounts are compared on a log scale: a shop's amounts are roughly log-normal
(many small tickets, a few big ones), and a decimal slip is a constant shift of
log10(amount) by 1, 2 or 3. Spread is the median absolute deviation (MAD) of
log(amount), robust to the very outliers we look for.

When MAD is 0 (over half the sales have one amount) the spread falls back to
the mean absolute deviation scaled to the same units (1.253314 * MeanAD, the
ratio of the two for a normal distribution). When that is 0 too, every sale
had the same amount and there is no spread at all: the outlier rule then
flags only amounts more than a configured factor away from that constant.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from statistics import median
from typing import Any

MEANAD_TO_SIGMA = 1.253314   # sqrt(pi/2): MeanAD of a normal distribution is 0.7979 sigma
MAD_TO_SIGMA = 1.4826        # 1 / 0.6745


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
        )

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
            "computed_at": self.computed_at.isoformat(),
        }


def _usual_step(amounts: Sequence[int]) -> int:
    step, half = 1, len(amounts) / 2
    while step < 10**6 and sum(1 for a in amounts if a % (step * 10) == 0) >= half:
        step *= 10
    return step
