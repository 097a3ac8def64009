"""The routing retry: backoff, Ready's message, and which Events wait for the routing write."""
from __future__ import annotations

from datetime import datetime, timezone

from kubernetes.client.exceptions import ApiException

from understudy.controller.retry import MAX_BACKOFF, RoutingRetry, backoff, moves_traffic
from understudy.engine.model import AuditRecord
from understudy.routing import RoutingTargetError
from understudy.routing.base import write_failure as failure

MOMENT = datetime(2026, 12, 2, tzinfo=timezone.utc)


def test_backoff_starts_at_two_seconds_doubles_and_stops_at_a_minute() -> None:
    assert [backoff(n) for n in range(1, 8)] == [2.0, 4.0, 8.0, 16.0, 32.0, MAX_BACKOFF, MAX_BACKOFF]


def test_failure_keeps_a_routing_errors_reason_and_calls_the_rest_unavailable() -> None:
    assert failure(RoutingTargetError("Invalid", "refused")) == ("Invalid", "refused")
    reason, message = failure(ApiException(status=503, reason="Service Unavailable"))
    assert reason == "RoutingUnavailable" and "503" in message


def test_an_episode_counts_attempts_holds_moves_and_hands_them_over_on_success() -> None:
    retry = RoutingRetry()
    assert retry.failed(*failure(ApiException(status=429, reason="Too Many Requests")), now=100.0)
    assert not retry.failed(*failure(ApiException(status=429, reason="Too Many Requests")), now=102.0)
    assert retry.attempts == 2 and not retry.due(105.0) and retry.due(106.0)
    error = retry.ready_error()
    assert error is not None and error.startswith("RoutingUnavailable: ") and "attempt 2" in error
    assert "next attempt in 4s" in error
    moved = AuditRecord(reason="FallbackActivated", message="m", from_tier="primary", to_tier="distilled")
    tripped = AuditRecord(reason="TierTripped", message="t", tier="primary")
    assert retry.hold((moved, tripped), MOMENT) == (tripped,)
    assert retry.succeeded() == [(moved, MOMENT)]
    assert not retry.failing and retry.ready_error() is None and retry.held == []


def test_a_move_is_told_by_its_reason_or_by_its_tiers() -> None:
    assert moves_traffic(AuditRecord(reason="Restored", message=""))
    assert moves_traffic(AuditRecord(reason="Whatever", message="", from_tier="a", to_tier="b"))
    assert not moves_traffic(AuditRecord(reason="ScaledUp", message="", tier="distilled"))
