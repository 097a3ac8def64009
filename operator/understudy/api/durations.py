"""Go duration strings ("250ms", "1m30s", "24h"), the format the CRD checks with CEL's duration().

Only the subset the CRD's pattern admits: unsigned, no "µs" spelling, "0" alone allowed.
"""
from __future__ import annotations

import re

DURATION_PATTERN = r"^(0|([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+)$"

_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|ms|s|m|h)")
_SECONDS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_MAX_SECONDS = (2**63 - 1) / 1e9
"""Go's time.Duration is int64 nanoseconds: anything longer does not parse on the API server either."""


def parse_duration(text: str) -> float:
    """Seconds in a Go duration string; ValueError when the CRD's duration() would reject it."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"not a duration: {text!r}")
    seconds = sum(float(number) * _SECONDS[unit] for number, unit in _PART.findall(text))
    if seconds > _MAX_SECONDS:
        raise ValueError(f"duration out of range: {text!r}")
    return seconds
