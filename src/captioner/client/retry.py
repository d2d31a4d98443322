"""When to try again, and how long to wait first.

- A ``Retry-After`` (seconds, or an HTTP date) is honoured: the next try is never earlier,
  and up to a quarter later (jitter, so that a crowd of clients told the same second does
  not come back in the same millisecond); waits are capped at ``max_wait_s``.
- Without one, the wait doubles from ``backoff_s`` with every retry, up to ``max_wait_s``,
  and is drawn between half of that and all of it ("equal jitter").
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

__all__ = ["RetryPolicy", "parse_retry_after"]

RETRY_AFTER_JITTER = 0.25  # the most a wait exceeds Retry-After, as a fraction of it


@dataclass(frozen=True)
class RetryPolicy:
    """How many times to retry and how long to wait before each retry.

    Attributes:
        max_retries: retries after the first try (0: never retry).
        backoff_s: the wait before the first retry when the server gives no Retry-After.
        max_wait_s: the longest any one wait, a server's Retry-After included.
    """

    max_retries: int = 5
    backoff_s: float = 0.5
    max_wait_s: float = 30.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be 0 or more, got {self.max_retries}")
        if self.backoff_s < 0 or self.max_wait_s < 0:
            raise ValueError("backoff_s and max_wait_s must be 0 or more")

    def wait_s(self, retry: int, retry_after_s: float | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first retry)."""
        if retry_after_s is not None:
            if retry_after_s >= self.max_wait_s:
                return self.max_wait_s
            jitter = self.rng.uniform(0.0, RETRY_AFTER_JITTER)
            return min(self.max_wait_s, retry_after_s * (1.0 + jitter))
        ceiling = min(self.max_wait_s, self.backoff_s * 2.0 ** (retry - 1))
        return ceiling * self.rng.uniform(0.5, 1.0)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """A ``Retry-After`` header's delay in seconds (0 or more); None when absent or unreadable.

    The header is a number of seconds or an HTTP date (RFC 9110); a date in the past is 0.
    """
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": UTC, as RFC 5322 reads it
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())
