"""The evaluation loop's liveness rule (controller.health), on an injected clock."""
from __future__ import annotations

import pytest

from understudy.controller.health import LoopHealth


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_healthy_until_the_loop_misses_the_bound_then_healthy_again_after_a_pass() -> None:
    clock = Clock()
    health = LoopHealth(stall_seconds=60, clock=clock)
    clock.now += 59
    assert health.check() is None, "start-up counts as a pass"
    health.beat()
    clock.now += 60
    assert health.check() is None
    clock.now += 1.5
    why = health.check()
    assert why is not None and "62s" in why and "60s" in why
    health.beat()
    assert health.check() is None and health.stalled_for() == 0


@pytest.mark.parametrize("bound", [0, -1])
def test_the_bound_must_be_positive(bound: float) -> None:
    with pytest.raises(ValueError):
        LoopHealth(stall_seconds=bound)


def test_the_probe_fails_healthz_while_the_loop_is_stalled() -> None:
    import asyncio

    import kopf

    from understudy.controller.handlers import evaluation_loop_alive

    clock = Clock()
    memo = kopf.Memo(health=LoopHealth(stall_seconds=60, clock=clock))
    assert asyncio.run(evaluation_loop_alive(memo=memo)) == "ok"
    clock.now += 61
    with pytest.raises(kopf.PermanentError, match="has not completed a pass for 61s"):
        asyncio.run(evaluation_loop_alive(memo=memo))
