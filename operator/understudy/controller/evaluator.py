"""The `Evaluator` the kopf wiring drives: one cycle decides (`cycle.Cycle`), then the writer carries the
plan out (`writer.Writer`). Composed here so that the cycle module itself never imports a writer."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Hashable, Mapping

from kubernetes.client import ApiClient

from understudy.audit.events import EventRecorder
from understudy.audit.metrics import OperatorMetrics
from understudy.controller.boundary import Boundary
from understudy.controller.cycle import Cycle
from understudy.controller.drift import RoutingStore
from understudy.controller.runtime import CycleReport, Runtime
from understudy.controller.store import DeploymentSnapshot, PolicySnapshot
from understudy.controller.workloads import observed_weights
from understudy.controller.writer import Writer
from understudy.signals.reader import SignalReader


@dataclass
class Evaluator:
    """Owns the per-policy runtimes of the leader and runs cycles over kopf's snapshots."""

    api: ApiClient
    reader: SignalReader
    recorder: EventRecorder
    metrics: OperatorMetrics
    checkpoint_seconds: float = 60.0
    """How often the creep accounting is written while the window holds time off the primary."""
    write_workers: int = 8
    """Concurrent writers: a write waits on the API server far longer than it keeps a core busy."""
    runtimes: dict[Hashable, Runtime] = field(default_factory=dict)
    may_write: Callable[[], bool] = lambda: True
    """Asked before each policy's writes (the leader elector's `may_write`)."""

    def __post_init__(self) -> None:
        boundary = Boundary()  # one episode per policy, whether its read, decision or writes failed
        self._cycle = Cycle(self.reader, self.metrics, self.runtimes, self.checkpoint_seconds, boundary=boundary,
                            observe=lambda compiled, namespace: observed_weights(self.api, compiled, namespace),
                            started=time.time())
        self._writer = Writer(self.api, self.recorder, self.metrics, self.runtimes, self.write_workers,
                              boundary=boundary, may_write=self.may_write)

    def close(self) -> None:
        self._writer.close()

    def reset(self) -> None:
        """Forget everything in memory: the next cycle reloads each policy's state from its status."""
        self.runtimes.clear()
        self._cycle.waiting.clear()
        self._cycle.routes.reset()

    def next_due(self) -> float | None:
        return min((r.next_due for r in self.runtimes.values()), default=None)

    def cycle(
        self,
        policies: Mapping[Hashable, PolicySnapshot],
        deployments: Mapping[tuple[str, str], DeploymentSnapshot],
        now: float,
        routing: RoutingStore | None = None,
    ) -> CycleReport:
        started = time.monotonic()
        report = CycleReport()
        plan = self._cycle.plan(policies, deployments, now, report, routing)
        self._writer.carry_out(plan, report, now)
        report.seconds = time.monotonic() - started
        self.metrics.cycle_duration.observe(report.seconds)
        for at in plan.due_at.values():
            if at > 0.0:  # 0.0: a first evaluation, due whenever it comes
                self.metrics.evaluation_lateness.observe(max(0.0, now + report.seconds - at))
        return report
