"""Liveness of the evaluation loop: /healthz fails once the loop has not come round for too long.

The loop notes each pass (`beat`): after a cycle completes, and on every pass of a standby, which runs no
cycles but must not be restarted for it. A cycle wedged in a call that never returns stops the beats, the
probe fails after `stall_seconds`, and the kubelet restarts the operator. The clock is injected so the rule
is tested without waiting.
"""
from __future__ import annotations

import time
from typing import Callable

DEFAULT_STALL_SECONDS = 60.0


class LoopHealth:
    """When the evaluation loop last came round, and whether that is recent enough."""

    def __init__(self, stall_seconds: float = DEFAULT_STALL_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if stall_seconds <= 0:
            raise ValueError("stall_seconds must be positive")
        self.stall_seconds = stall_seconds
        self._clock = clock
        self._last = clock()
        """Start-up counts as a pass: the first cycle gets a whole bound to complete."""

    def beat(self) -> None:
        self._last = self._clock()

    def stalled_for(self) -> float:
        """Seconds since the last pass."""
        return self._clock() - self._last

    def check(self) -> str | None:
        """None while healthy; otherwise why not (what the probe reports)."""
        stalled = self.stalled_for()
        if stalled <= self.stall_seconds:
            return None
        return f"the evaluation loop has not completed a pass for {stalled:.0f}s (bound {self.stall_seconds:.0f}s)"
