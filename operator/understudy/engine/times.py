"""Times in status: RFC 3339 strings to the whole second (metav1.Time), from and to epoch milliseconds.

Pure: a time is converted from the number given, never read from a clock.
"""
from __future__ import annotations

import math
from datetime import datetime, timezone


def whole_second_ms(seconds: float) -> int:
    """Epoch seconds as epoch milliseconds, floored to the second: what a status time can say exactly."""
    return math.floor(seconds) * 1000


def to_rfc3339(ms: int) -> str:
    """`2026-11-25T10:00:00Z` for an epoch time in milliseconds (a fraction of a second is dropped)."""
    return datetime.fromtimestamp(ms // 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def from_rfc3339(text: object) -> int:
    """Epoch milliseconds of an RFC 3339 time with an offset, floored to the second; ValueError otherwise."""
    if not isinstance(text, str):
        raise ValueError(f"expected an RFC 3339 time, got {text!r}")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an RFC 3339 time: {text!r}") from None
    if moment.tzinfo is None:
        raise ValueError(f"time {text!r} has no UTC offset")
    return whole_second_ms(moment.timestamp())
