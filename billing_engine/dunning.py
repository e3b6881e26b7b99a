"""Dunning: when to retry a softly declined renewal, and when to give up.

Pure functions. The default schedule retries 1, 2, 3, 5, 7, 10 and 14 days after the
first failure: 8 tries within two weeks, far inside the card networks' limits
(Visa: at most 15 reattempts in 30 days; Mastercard: at most 10 in 24 hours), which
:func:`next_retry_at` also enforces for any custom schedule.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from billing_engine.settings import DEFAULT_DUNNING_SCHEDULE

# brand -> (max attempts, window)
NETWORK_LIMITS: dict[str, tuple[int, timedelta]] = {
    "visa": (15, timedelta(days=30)),
    "mastercard": (10, timedelta(hours=24)),
}


def next_retry_at(
    *,
    first_failure_at: datetime,
    failures: int,
    schedule_days: Sequence[int] = DEFAULT_DUNNING_SCHEDULE,
    brand: str | None = None,
    recent_attempts: Sequence[datetime] = (),
) -> datetime | None:
    """The next retry after ``failures`` failed tries on one invoice (None: give up).

    ``failures`` counts the failed tries so far (1 after the first decline).
    ``recent_attempts`` are this card's attempt times, for the network limits.
    """
    if failures < 1:
        raise ValueError("failures must be >= 1")
    if failures - 1 >= len(schedule_days):
        return None
    when = first_failure_at + timedelta(days=schedule_days[failures - 1])
    limit = NETWORK_LIMITS.get((brand or "").lower())
    if limit is not None:
        max_attempts, window = limit
        times = sorted(recent_attempts)
        # push the retry out until fewer than max_attempts fall in the window before it
        while times and len([t for t in times if when - window < t <= when]) >= max_attempts:
            inside = [t for t in times if when - window < t <= when]
            when = inside[0] + window + timedelta(seconds=1)
            if when > first_failure_at + timedelta(days=schedule_days[-1] + 30):
                return None
    return when
