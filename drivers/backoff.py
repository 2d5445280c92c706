"""Retry pacing shared by the readers (reopening a device) and delivery (resending a message)."""

from __future__ import annotations

import random


def backoff_delay(failures: int, *, base: float, cap: float, rng: random.Random | None = None,
                  minimum: float | None = None) -> float:
    """Full jitter (AWS architecture blog): uniform(0, min(cap, base * 2**failures)).

    ``minimum`` is a floor the other side asked for (an HTTP Retry-After); it may exceed ``cap``.
    """
    # The exponent is bounded only so that a very long outage cannot overflow the float.
    ceiling = min(cap, base * 2.0 ** min(failures, 62))
    delay = (rng or random).uniform(0.0, ceiling)
    if minimum is not None:
        delay = max(delay, minimum)
    return delay
