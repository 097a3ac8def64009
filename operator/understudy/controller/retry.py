"""A routing write that failed: when to try again, what Ready says meanwhile, and the Events held back.
Pure bookkeeping, kept in the policy's runtime; the writer makes the write.

Any failed routing write (a refused or invalid patch, a conflict that would not settle, 429, 5xx, a
connection that broke) leaves the policy `Ready=False` until a routing write succeeds. The reason is the
routing error's own (`Invalid`, `Conflict`, `TargetNotFound`, ...) or `RoutingUnavailable` for an answer
that says nothing about the routing object (429, 5xx, no answer). Attempts back off from 2 s, doubling up
to 60 s, so a refusing API server is not hammered once a second per policy. The Events that announce a
move of traffic are held until the move is on the routing object: an Event never claims a move that did
not happen (status.history, written before routing as the fence, records the decision either way).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from understudy.engine.model import AuditRecord

FIRST_BACKOFF = 2.0
MAX_BACKOFF = 60.0
ROUTING_MOVES = frozenset({
    "FallbackActivated", "AllTiersBreached", "RestoreStep", "Restored", "RestoreAborted", "Pinned",
    "Unpinned", "DrillStarted",
})
"""Reasons whose Event says traffic moved: posted only once the routing object carries the move."""


def backoff(attempts: int) -> float:
    """Seconds until the next attempt after `attempts` failed ones: 2, 4, 8, ... at most 60."""
    return min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** max(0, attempts - 1))


def moves_traffic(record: AuditRecord) -> bool:
    return record.reason in ROUTING_MOVES or (
        record.from_tier is not None and record.to_tier is not None and record.from_tier != record.to_tier)


@dataclass
class RoutingRetry:
    """One policy's routing since its last failed write; `attempts` 0 means the last write succeeded."""

    attempts: int = 0
    next_at: float = 0.0
    reason: str = ""
    message: str = ""
    held: list[tuple[AuditRecord, datetime]] = field(default_factory=list)

    @property
    def failing(self) -> bool:
        return self.attempts > 0

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def failed(self, reason: str, message: str, now: float) -> bool:
        """Count a failed write (see `routing.base.write_failure` for its reason and message); True when it
        starts an episode (one RoutingFailed Event per episode)."""
        first = self.attempts == 0
        self.attempts += 1
        self.reason, self.message = reason, message
        self.next_at = now + backoff(self.attempts)
        return first

    def succeeded(self) -> list[tuple[AuditRecord, datetime]]:
        """End an episode (if any); returns the held Events, to post now."""
        held, self.held = self.held, []
        self.attempts, self.next_at, self.reason, self.message = 0, 0.0, "", ""
        return held

    def hold(self, records: tuple[AuditRecord, ...], moment: datetime) -> tuple[AuditRecord, ...]:
        """Keep the records that announce a move until it is routed; returns the ones to post now."""
        self.held += [(r, moment) for r in records if moves_traffic(r)]
        return tuple(r for r in records if not moves_traffic(r))

    def ready_error(self) -> str | None:
        """Ready's "Reason: message" while failing, with the attempt count and the back-off before the next
        one (stable between attempts, so waiting causes no status write)."""
        if not self.failing:
            return None
        return (f"{self.reason}: {self.message} (routing write failed, attempt {self.attempts}; "
                f"next attempt in {backoff(self.attempts):.0f}s)")
