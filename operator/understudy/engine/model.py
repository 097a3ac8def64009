"""The engine's vocabulary: frozen dataclasses built once per spec change.

pydantic stays at the edge (understudy.api); the engine only ever sees these plain, hashable values,
so `decide` is cheap to call thousands of times per cycle and trivially deterministic.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Mapping

PRIMARY = "primary"
"""The primary tier's name: fallbacks may not use it."""


class Mode(str, Enum):
    ENFORCE = "Enforce"
    OBSERVE = "Observe"


class MissingData(str, Enum):
    HOLD = "Hold"
    FALLBACK = "Fallback"


class CreepAction(str, Enum):
    ROLLBACK_PRIMARY = "RollbackPrimary"
    FREEZE = "Freeze"
    ALERT = "Alert"


class RestoreApproval(str, Enum):
    """evaluation.restoreApproval. Manual: traffic leaves a tier on its own, but returns to a better one only
    once a person approves (see `approval`)."""

    AUTOMATIC = "Automatic"
    MANUAL = "Manual"


class SignalKind(str, Enum):
    LATENCY = "latency"
    ERROR_RATIO = "errorRatio"
    READY_REPLICAS = "readyReplicas"
    QUERY = "query"
    TIME_TO_FIRST_TOKEN = "timeToFirstToken"
    TIME_PER_OUTPUT_TOKEN = "timePerOutputToken"
    QUEUE_DEPTH = "queueDepth"
    KV_CACHE_USAGE = "kvCacheUsage"
    TOKENS_PER_SECOND = "tokensPerSecond"


class Comparison(str, Enum):
    ABOVE = "above"
    BELOW = "below"


@dataclass(frozen=True)
class Series:
    """The model server's own metric a trigger reads (from its signals preset), as a PromQL selector; the
    engine only carries it to the signal reader. `scale` turns the metric's unit into the trigger's (1000 for
    a histogram of seconds read in milliseconds); `counts_successes` marks an error ratio whose counter
    counts the requests that succeeded rather than those that failed."""

    selector: str
    scale: float = 1.0
    counts_successes: bool = False


@dataclass(frozen=True)
class Trigger:
    """One explicit limit, evaluated separately on every tier it applies to.

    `threshold` is in the signal's own unit: milliseconds for latency, time to first token and time per
    output token, a 0..1 ratio for error ratio, ready replicas and KV-cache usage, requests for queue depth,
    tokens per second, the query's unit for custom PromQL.
    """

    name: str
    kind: SignalKind
    comparison: Comparison
    threshold: float
    quantile: float | None = None
    promql: str | None = None
    min_requests: int = 0
    applies_to: frozenset[str] = frozenset()
    """Tier names this trigger is evaluated on; empty means every tier."""
    series: Series | None = None
    """Where a model server's signal is read; None for the request metrics of `signals` (and the kinds that
    read no metric)."""

    def applies(self, tier: str) -> bool:
        return not self.applies_to or tier in self.applies_to

    def breached_by(self, value: float) -> bool:
        return value > self.threshold if self.comparison is Comparison.ABOVE else value < self.threshold


@dataclass(frozen=True)
class BackendRef:
    """A Gateway API backendRef in the policy's namespace: an InferencePool, a Service, or any other kind.

    The engine only carries it, from the spec to the routing backend that weighs it."""

    group: str
    kind: str
    name: str


@dataclass(frozen=True)
class Tier:
    name: str
    deployment: str
    service: str
    backend_ref: BackendRef | None = None
    """What a Gateway API rule sends this tier's traffic to; None means the core Service `service`."""


@dataclass(frozen=True)
class Policy:
    """A FallbackPolicy's spec as the engine needs it. Durations are seconds."""

    tiers: tuple[Tier, ...]
    """Primary first, then the fallbacks in order of preference."""
    triggers: tuple[Trigger, ...]
    mode: Mode = Mode.ENFORCE
    trip_after: int = 2
    recover_after: int = 6
    restore_steps: tuple[int, ...] = (10, 50, 100)
    restore_stall_after: float = 600.0
    """evaluation.restoreStallAfter: a restore step that has not advanced for this long is reported once."""
    traffic_split: bool = True
    """The routing can split traffic between tiers (Istio, Gateway API). A Service selector cannot: it
    sends everything to one tier, so a restore there is one step to 100% whatever restore_steps says."""
    min_dwell: float = 30.0
    on_missing_data: MissingData = MissingData.HOLD
    when_all_breached: str | None = None
    """The tier that serves when every tier breaches; None means the last fallback."""
    interval: float = 5.0
    """evaluation.interval: the engine credits at most twice this much time to one evaluation in the creep
    accounting, so a gap (operator down, leader change) is not counted as time spent off the primary."""
    window: float = 60.0
    """evaluation.window, the rate() window request counts cover: a thin restore step credits a count
    once per window (see README), not once per evaluation."""
    creep_max_ratio: float = 0.10
    creep_window: float = 86400.0
    creep_action: CreepAction = CreepAction.ALERT
    pinned_tier: str | None = None
    paused: bool = False
    restore_approval: RestoreApproval = RestoreApproval.AUTOMATIC
    restore_approved_at: float | None = None
    """spec.override.restoreApprovedAt, epoch seconds: with Manual approval, it releases a restore held at or
    before this time (to the second), once this time has come."""
    override_by: str | None = None
    """spec.override.by: who wrote the override, as the spec says; named in the audit of what it changed."""

    @property
    def tier_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tiers)


class ReadingStatus(str, Enum):
    OK = "OK"
    MISSING = "Missing"
    """Prometheus was unreachable, or the series was empty: never read as zero."""
    INSUFFICIENT = "Insufficient"
    """Fewer requests in the window than the trigger's minimum: neither trips nor recovers."""


@dataclass(frozen=True, slots=True)
class Reading:
    status: ReadingStatus
    value: float | None = None
    """The signal's value; on an INSUFFICIENT reading, the value computed from too few requests, if any."""
    requests: float | None = None
    """On an INSUFFICIENT reading, the requests the tier served in the window (None: not known). A restore
    step adds these up over evaluations when each window alone holds too few (see README)."""

    @staticmethod
    def ok(value: float) -> Reading:
        return Reading(ReadingStatus.OK, value)

    @staticmethod
    def insufficient(requests: float, value: float | None = None) -> Reading:
        return Reading(ReadingStatus.INSUFFICIENT, value, requests)


MISSING = Reading(ReadingStatus.MISSING)
INSUFFICIENT = Reading(ReadingStatus.INSUFFICIENT)
"""Too few requests, and how many is not known."""


@dataclass(frozen=True)
class Samples:
    """What the shell observed for one evaluation.

    readings[tier][trigger] is the trigger's reading on that tier; an absent entry counts as missing.
    A tier that served no requests in the window should report INSUFFICIENT, not MISSING: that is what
    lets a tripped tier with no traffic recover and be probed by the first restore step.
    capacity[tier] is False when the tier's ready replicas cannot carry the load it would receive;
    an absent entry means it can.
    ready[tier] is the ready replica count of the tier's Deployment, 0 when the Deployment does not exist;
    a tier absent from it has unknown readiness (the backtest without kube-state-metrics). A tier with 0
    ready replicas never receives traffic while another tier can take it.
    """

    readings: Mapping[str, Mapping[str, Reading]]
    capacity: Mapping[str, bool] = field(default_factory=dict)
    ready: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditRecord:
    """One line of the audit trail; `reason` is a stable CamelCase word (see README)."""

    reason: str
    message: str
    tier: str | None = None
    trigger: str | None = None
    observed: float | None = None
    threshold: float | None = None
    from_tier: str | None = None
    to_tier: str | None = None
