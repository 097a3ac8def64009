"""pydantic models of FallbackPolicy, mirroring crds/understudy.dev_fallbackpolicies.yaml.

The CRD is the source of truth and the API server enforces it; these models let the operator, the CLI and
the backtest reject the same documents with the same messages without an API server. Every cross-field
rule below repeats one CEL rule of the CRD, with the same message; tests/unit/test_api_crd_agreement.py
keeps field names, required-ness, enums and defaults in step.
"""
from __future__ import annotations

import re
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from understudy.api.durations import parse_duration
from understudy.engine.governance_state import MAX_REPLICAS, Phase
from understudy.engine.model import PRIMARY, CreepAction, Mode, RestoreApproval
from understudy.engine.times import from_rfc3339
from understudy.engine.model import MissingData as OnMissingData
from understudy.signals.confine import PromQLError, check_syntax
from understudy.signals.presets import KIND_FIELDS, PRESETS, Preset, ServerMetrics, presets_measuring

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SERVICE_NAME = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
DECIMAL = r"^[0-9]+(\.[0-9]+)?$"
SIGNED_DECIMAL = r"^-?[0-9]+(\.[0-9]+)?$"
METRIC_NAME = r"^[a-zA-Z_:][a-zA-Z0-9_:]*$"
LABEL_NAME = r"^[a-zA-Z_][a-zA-Z0-9_]*$"
REASON = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
CONDITION_TYPE = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
PROMETHEUS_URL = re.compile(r"^https?://[a-z0-9]([-a-z0-9.]*[a-z0-9])?(:[0-9]{1,5})?(/[A-Za-z0-9._~-]*)*$")
DOT_SEGMENT = re.compile(r"/\.\.?(/|$)")


def rule_error(message: str) -> PydanticCustomError:
    """An error whose text is exactly the CRD's CEL message (no "Value error," prefix)."""
    return PydanticCustomError("policy_rule", message)


def _seconds(value: str) -> float | None:
    """What CEL's duration() makes of the string, or None where it (or the CRD's pattern) fails."""
    try:
        return parse_duration(value)
    except ValueError:
        return None


def _positive_duration(value: str) -> str:
    seconds = _seconds(value)
    if seconds is None or seconds <= 0:
        raise rule_error('must be a positive duration such as "250ms", "5s", "1m30s" or "24h"')
    return value


def _at_least(seconds: float, message: str) -> AfterValidator:
    """The CRD's floor on a duration field, e.g. `duration(self) >= duration('1s')`."""

    def check(value: str) -> str:
        parsed = _seconds(value)
        if parsed is not None and parsed < seconds:
            raise rule_error(message)
        return value

    return AfterValidator(check)


def _milliseconds(value: str) -> int:
    """CEL's duration(value).getMilliseconds(): whole milliseconds, computed from nanoseconds exactly."""
    return round(parse_duration(value) * 1e9) // 1_000_000


def _non_negative_duration(value: str) -> str:
    if _seconds(value) is None:
        raise rule_error('must be a duration such as "0s", "30s" or "1m30s"')
    return value


def _ratio(value: str) -> str:
    if float(value) > 1.0:
        raise rule_error('ratio must be between 0 and 1, e.g. "0.05"')
    return value


def _quantile(value: str) -> str:
    if not 0.0 < float(value) < 1.0:
        raise rule_error('quantile must be strictly between 0 and 1, e.g. "0.99"')
    return value


def _prometheus_url(value: str) -> str:
    if value and not PROMETHEUS_URL.match(value):
        raise rule_error(
            "prometheusURL must be an http:// or https:// URL of a lower-case host, an optional port and a path of "
            "letters, digits and ._~- (no user name, password, query, fragment or spaces)")
    if DOT_SEGMENT.search(value):
        raise rule_error("prometheusURL must not contain . or .. path segments")
    return value


def _promql(value: str) -> str:
    """The CRD cannot parse PromQL; the models (`understudy validate`, the operator) can."""
    try:
        check_syntax(value)
    except PromQLError as error:
        raise rule_error(str(error)) from None
    return value


def _date_time(value: str) -> str:
    """The CRD's `format: date-time`: RFC 3339 with a UTC offset, such as "2026-12-01T10:02:03Z"."""
    try:
        from_rfc3339(value)
    except ValueError:
        raise rule_error(f"must be an RFC 3339 time such as \"2026-12-01T10:02:03Z\", not {value!r}") from None
    return value


def _not_primary(value: str) -> str:
    if value == PRIMARY:
        raise rule_error('the name "primary" is reserved for the primary tier')
    return value


def _restore_steps(steps: list[int]) -> list[int]:
    if any(a >= b for a, b in zip(steps, steps[1:])):
        raise rule_error("evaluation.restoreSteps must be strictly increasing")
    if steps[-1] != 100:
        raise rule_error("evaluation.restoreSteps must end at 100, with all traffic back on the better tier")
    return steps


def _unique(what: str) -> AfterValidator:
    """The CRD's `self.all(x, self.exists_one(y, y.name == x.name))` rule for a list of named items."""

    def check(items: list[Any]) -> list[Any]:
        names = [item.name for item in items]
        if len(set(names)) != len(names):
            raise rule_error(f"{what} names must be unique")
        return items

    return AfterValidator(check)


TierName = Annotated[str, Field(max_length=63, pattern=DNS_LABEL)]
DeploymentName = Annotated[str, Field(max_length=253, pattern=DNS_SUBDOMAIN)]
ServiceName = Annotated[str, Field(max_length=63, pattern=SERVICE_NAME)]
ObjectName = Annotated[str, Field(max_length=253, pattern=DNS_SUBDOMAIN)]
Ratio = Annotated[str, Field(max_length=16, pattern=DECIMAL), AfterValidator(_ratio)]
Quantile = Annotated[str, Field(max_length=16, pattern=DECIMAL), AfterValidator(_quantile)]
Threshold = Annotated[str, Field(max_length=32, pattern=SIGNED_DECIMAL)]
PositiveDuration = Annotated[str, Field(max_length=32), AfterValidator(_positive_duration)]
NonNegativeDuration = Annotated[str, Field(max_length=32), AfterValidator(_non_negative_duration)]
MetricName = Annotated[str, Field(max_length=200, pattern=METRIC_NAME)]
LabelName = Annotated[str, Field(max_length=200, pattern=LABEL_NAME)]


class _Spec(BaseModel):
    """Base of the spec's models: camelCase on the wire, typos rejected, fields not reassignable.

    Lists stay lists (pydantic reports a spurious length error for tuples whose items fail); the engine
    gets tuples from understudy.api.convert.
    """

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class _Status(BaseModel):
    """Base of the status's models: tolerant of fields a newer operator may have written."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)


class DurationUnit(str, Enum):
    MILLISECONDS = "Milliseconds"
    SECONDS = "Seconds"


class Release(str, Enum):
    """What the operator does with the traffic and replicas a policy moved when the policy lets go of them."""

    RESTORE_PRIMARY = "RestorePrimary"
    LEAVE = "Leave"


class BackendRef(_Spec):
    """A Gateway API backendRef in the policy's namespace (an InferencePool, a Service, any other kind)."""

    group: Annotated[str, Field(max_length=253, pattern=r"^$|" + DNS_SUBDOMAIN)] = ""
    kind: Annotated[str, Field(max_length=63, pattern=r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$")] = "Service"
    name: Annotated[str, Field(min_length=1, max_length=253)]


class PrimaryTier(_Spec):
    deployment_name: DeploymentName
    service_name: ServiceName
    backend_ref: BackendRef | None = None


class Degradation(_Spec):
    description: Annotated[str, Field(min_length=1, max_length=1024)] | None = None
    accepted_by: Annotated[str, Field(min_length=1, max_length=253)] | None = None


MAX_REQUESTS_PER_REPLICA = 1_000_000
PER_REPLICA_MESSAGE = (
    'capacity.requestsPerReplica must be a positive number of requests per second up to 1000000, '
    'such as 50 or "0.2"')


def _requests_per_second(value: int | str) -> int | str:
    if not 0 < float(value) <= MAX_REQUESTS_PER_REPLICA:
        raise rule_error(PER_REPLICA_MESSAGE)
    return value


RequestRate = Annotated[
    Annotated[int, Field(strict=True)] | Annotated[str, Field(max_length=16, pattern=DECIMAL)],
    AfterValidator(_requests_per_second),
]
"""A rate as an integer or a decimal string (the CRD's x-kubernetes-int-or-string): 50, or "0.2"."""


class Capacity(_Spec):
    per_replica: RequestRate = Field(alias="requestsPerReplica")
    """As written: an integer (what earlier versions took) or a decimal string."""
    scale_on_activate: bool = False
    max_replicas: Annotated[int, Field(ge=1, le=1000)] | None = None

    @property
    def requests_per_replica(self) -> float:
        """Requests per second one ready replica serves."""
        return float(self.per_replica)

    @model_validator(mode="after")
    def _ceiling(self) -> Capacity:
        if self.scale_on_activate and self.max_replicas is None:
            raise rule_error(
                "capacity.scaleOnActivate needs maxReplicas, so a fallback is never scaled without a ceiling"
            )
        return self


class FallbackTier(_Spec):
    name: Annotated[TierName, AfterValidator(_not_primary)]
    deployment_name: DeploymentName
    service_name: ServiceName
    backend_ref: BackendRef | None = None
    degradation: Degradation | None = None
    capacity: Capacity | None = None


class IstioRouting(_Spec):
    virtual_service_name: ObjectName
    route_name: Annotated[str, Field(min_length=1, max_length=253)] | None = None


class ServiceRouting(_Spec):
    name: ServiceName


class GatewayAPIRouting(_Spec):
    http_route_name: ObjectName
    rule_index: Annotated[int, Field(ge=0, le=63)] = 0


class Routing(_Spec):
    istio: IstioRouting | None = None
    service: ServiceRouting | None = None
    gateway_api: GatewayAPIRouting | None = Field(default=None, alias="gatewayAPI")

    @model_validator(mode="after")
    def _exactly_one(self) -> Routing:
        if sum(b is not None for b in (self.istio, self.service, self.gateway_api)) != 1:
            raise rule_error("routing needs exactly one backend: istio, service or gatewayAPI")
        return self


class LatencySignal(_Spec):
    quantile: Quantile
    above: PositiveDuration


class ErrorRatioSignal(_Spec):
    above: Ratio


class ReadyReplicasSignal(_Spec):
    below_ratio: Ratio


class QuerySignal(_Spec):
    promql: Annotated[str, Field(min_length=1, max_length=4096), AfterValidator(_promql)]
    above: Threshold | None = None
    below: Threshold | None = None

    @model_validator(mode="after")
    def _one_comparison(self) -> QuerySignal:
        if (self.above is None) == (self.below is None):
            raise rule_error("a query trigger needs exactly one of above or below")
        return self


class TokenLatencySignal(_Spec):
    """A quantile of the model server's time to first token or time per output token."""

    quantile: Quantile
    above: PositiveDuration


class QueueDepthSignal(_Spec):
    above: Annotated[str, Field(max_length=16, pattern=DECIMAL)]


class KVCacheUsageSignal(_Spec):
    above: Ratio


class TokensPerSecondSignal(_Spec):
    above: Annotated[str, Field(max_length=16, pattern=DECIMAL)] | None = None
    below: Annotated[str, Field(max_length=16, pattern=DECIMAL)] | None = None

    @model_validator(mode="after")
    def _one_comparison(self) -> TokensPerSecondSignal:
        if (self.above is None) == (self.below is None):
            raise rule_error("a tokensPerSecond trigger needs exactly one of above or below")
        return self


def _no_duplicates(names: list[str]) -> list[str]:
    """The CRD's `x-kubernetes-list-type: set`: a tier listed twice is a typo."""
    if len(set(names)) != len(names):
        raise rule_error("appliesTo must not list a tier twice")
    return names


class Trigger(_Spec):
    name: TierName
    latency: LatencySignal | None = None
    error_ratio: ErrorRatioSignal | None = None
    ready_replicas: ReadyReplicasSignal | None = None
    query: QuerySignal | None = None
    time_to_first_token: TokenLatencySignal | None = None
    time_per_output_token: TokenLatencySignal | None = None
    queue_depth: QueueDepthSignal | None = None
    kv_cache_usage: KVCacheUsageSignal | None = None
    tokens_per_second: TokensPerSecondSignal | None = None
    applies_to: (
        Annotated[list[TierName], Field(min_length=1, max_length=9), AfterValidator(_no_duplicates)] | None
    ) = None

    @property
    def signals(self) -> tuple[BaseModel | None, ...]:
        return (self.latency, self.error_ratio, self.ready_replicas, self.query, self.time_to_first_token,
                self.time_per_output_token, self.queue_depth, self.kv_cache_usage, self.tokens_per_second)

    @property
    def kind(self) -> str:
        """The spec field of the trigger's signal, e.g. "latency" or "timeToFirstToken"."""
        return next(SIGNAL_FIELDS[i] for i, signal in enumerate(self.signals) if signal is not None)

    @model_validator(mode="after")
    def _one_signal(self) -> Trigger:
        if sum(s is not None for s in self.signals) != 1:
            raise rule_error(ONE_SIGNAL_MESSAGE)
        return self


SIGNAL_FIELDS = ("latency", "errorRatio", "readyReplicas", "query", "timeToFirstToken", "timePerOutputToken",
                 "queueDepth", "kvCacheUsage", "tokensPerSecond")
"""The spec fields of `Trigger.signals`, in its order."""
ONE_SIGNAL_MESSAGE = (
    "each trigger needs exactly one signal: latency, errorRatio, readyReplicas, query, timeToFirstToken, "
    "timePerOutputToken, queueDepth, kvCacheUsage or tokensPerSecond")


def _listed(presets: tuple[Preset, ...]) -> str:
    names = [p.value for p in presets]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def preset_message(kind: str) -> str:
    """The CRD's message for a trigger kind that the policy's signals.preset cannot read."""
    which = _listed(presets_measuring(kind))
    if kind == "latency":
        return f"triggers[].latency needs signals.durationMetric or a signals.preset whose server measures it: {which}"
    if kind == "errorRatio":
        return ("triggers[].errorRatio needs signals.responseCodeLabel or a signals.preset whose server counts "
                f"failed requests: {which}")
    return f"triggers[].{kind} needs a signals.preset whose server measures it: {which}"


class Signals(_Spec):
    """Where the triggers read: a preset of a mesh's or model server's metric names, each overridable.

    The overrides are stored apart and the resolved names are properties under the names the operator
    reads (`requests_metric`, ...), so a policy without overrides follows its preset.
    """

    preset: Preset = Preset.ISTIO
    prometheus_url: Annotated[str, Field(max_length=2048), AfterValidator(_prometheus_url)] | None = Field(
        default=None, alias="prometheusURL"
    )
    requests_metric_override: MetricName | None = Field(default=None, alias="requestsMetric")
    duration_metric_override: MetricName | None = Field(default=None, alias="durationMetric")
    duration_unit_override: DurationUnit | None = Field(default=None, alias="durationUnit")
    workload_label_override: LabelName | None = Field(default=None, alias="workloadLabel")
    namespace_label_override: LabelName | None = Field(default=None, alias="namespaceLabel")
    response_code_label_override: LabelName | None = Field(default=None, alias="responseCodeLabel")
    min_requests: Annotated[int, Field(ge=0, le=1_000_000)] = 20

    @property
    def server(self) -> ServerMetrics:
        return PRESETS[self.preset]

    @property
    def requests_metric(self) -> str:
        return self.requests_metric_override or self.server.requests

    @property
    def duration_metric(self) -> str:
        """The latency histogram; "" where the preset has none and nothing overrides it (no latency trigger
        is then allowed)."""
        latency = self.server.latency
        return self.duration_metric_override or (latency.metric if latency else "")

    @property
    def duration_unit(self) -> DurationUnit:
        if self.duration_unit_override is not None:
            return self.duration_unit_override
        latency = self.server.latency
        return DurationUnit.SECONDS if latency and latency.seconds else DurationUnit.MILLISECONDS

    @property
    def workload_label(self) -> str:
        return self.workload_label_override or self.server.workload_label

    @property
    def namespace_label(self) -> str:
        return self.namespace_label_override or self.server.namespace_label

    @property
    def response_code_label(self) -> str:
        """Read only where errors are a response-code label: an override, or a preset that counts them so."""
        if self.response_code_label_override:
            return self.response_code_label_override
        errors = self.server.errors
        return errors.response_code_label if errors and errors.response_code_label else "response_code"

    def measures(self, kind: str) -> bool:
        """Whether a trigger of this kind (its spec field) has a metric to read under this preset."""
        if kind == "latency" and self.duration_metric_override:
            return True
        if kind == "errorRatio" and self.response_code_label_override:
            return True
        return kind not in KIND_FIELDS or self.preset in presets_measuring(kind)


class Evaluation(_Spec):
    interval: Annotated[PositiveDuration, _at_least(1.0, "evaluation.interval must be at least 1s")] = "5s"
    window: PositiveDuration = "1m"
    trip_after: Annotated[int, Field(ge=1, le=100)] = 2
    recover_after: Annotated[int, Field(ge=1, le=1000)] = 6
    restore_steps: Annotated[
        list[Annotated[int, Field(ge=1, le=100)]], Field(min_length=1, max_length=10), AfterValidator(_restore_steps)
    ] | None = None
    """None: [10, 50, 100] where the routing can split traffic, one step where it cannot (Service)."""
    min_dwell: NonNegativeDuration = "30s"
    restore_stall_after: PositiveDuration = "10m"
    on_missing_data: OnMissingData = OnMissingData.HOLD
    when_all_breached: TierName | None = None
    restore_approval: RestoreApproval = RestoreApproval.AUTOMATIC

    @model_validator(mode="after")
    def _ordering(self) -> Evaluation:
        if self.recover_after < self.trip_after:
            raise rule_error("evaluation.recoverAfter must be at least tripAfter, or traffic flaps between tiers")
        if parse_duration(self.window) < 2 * parse_duration(self.interval):
            raise rule_error("evaluation.window must be at least twice evaluation.interval, so that consecutive "
                             "evaluations read overlapping windows")
        if parse_duration(self.restore_stall_after) <= parse_duration(self.min_dwell):
            raise rule_error("evaluation.restoreStallAfter must be longer than evaluation.minDwell, "
                             "or every restore step would be reported stalled")
        interval = parse_duration(self.interval)
        if interval > 3600 or _milliseconds(self.interval) * self.trip_after > 3_600_000:
            raise rule_error("evaluation.tripAfter x interval must be at most 1h: a trigger that takes longer to "
                             "trip moves traffic after the incident")
        if interval > 86400 or _milliseconds(self.interval) * self.recover_after > 86_400_000:
            raise rule_error("evaluation.recoverAfter x interval must be at most 24h: a recovered tier would wait "
                             "longer than a day for its traffic")
        return self


class Creep(_Spec):
    max_fallback_ratio: Ratio = "0.10"
    window: PositiveDuration = "24h"
    action: CreepAction = CreepAction.ALERT


class Drill(_Spec):
    tier: TierName
    every: Annotated[PositiveDuration, _at_least(30.0, "drills[].every must be at least 30s")]
    duration: Annotated[PositiveDuration, _at_least(5.0, "drills[].duration must be at least 5s")]
    share: Annotated[int, Field(ge=1, le=50)] = 10

    @model_validator(mode="after")
    def _shorter_than_period(self) -> Drill:
        if parse_duration(self.duration) >= parse_duration(self.every):
            raise rule_error("a drill's duration must be shorter than its period (every)")
        return self


class Override(_Spec):
    pin_tier: TierName | None = None
    paused: bool = False
    restore_approved_at: Annotated[str, AfterValidator(_date_time)] | None = None
    by: Annotated[str, Field(min_length=1, max_length=512)] | None = None

    @property
    def restore_approved_seconds(self) -> float | None:
        """restoreApprovedAt as epoch seconds, to the second."""
        return None if self.restore_approved_at is None else from_rfc3339(self.restore_approved_at) / 1000


class FallbackPolicySpec(_Spec):
    """The desired behaviour: the tiers, how traffic reaches them, and when to move it."""

    mode: Mode = Mode.ENFORCE
    release: Release = Release.RESTORE_PRIMARY
    primary: PrimaryTier
    fallbacks: Annotated[list[FallbackTier], Field(min_length=1, max_length=8), _unique("fallback")]
    routing: Routing
    triggers: Annotated[list[Trigger], Field(min_length=1, max_length=16), _unique("trigger")]
    signals: Signals = Field(default_factory=Signals)
    evaluation: Evaluation = Field(default_factory=Evaluation)
    creep: Creep = Field(default_factory=Creep)
    drills: Annotated[list[Drill], Field(max_length=4)] | None = None
    override: Override | None = None

    @property
    def tier_names(self) -> tuple[str, ...]:
        return (PRIMARY, *(f.name for f in self.fallbacks))

    @model_validator(mode="after")
    def _cross_field(self) -> FallbackPolicySpec:
        """The spec-level CEL rules, in the CRD's order, so the first message matches the API server's."""
        if self.mode is Mode.ENFORCE and not all(
            f.degradation and f.degradation.description and f.degradation.accepted_by for f in self.fallbacks
        ):
            raise rule_error(
                "in Enforce mode every fallback needs degradation.description and degradation.acceptedBy: "
                "degraded behaviour must be documented and signed off before traffic is moved to it"
            )
        for attr, kind, field in (
            ("deployment_name", "Deployment", "deploymentName"),
            ("service_name", "Service", "serviceName"),
        ):
            names = [getattr(self.primary, attr), *(getattr(f, attr) for f in self.fallbacks)]
            if len(set(names)) != len(names):
                raise rule_error(
                    f"every tier needs its own {kind}: the primary and each fallback must name different {field} values"
                )
        tiers, which = set(self.tier_names), '("primary" or a fallback\'s name)'
        if any(set(t.applies_to or ()) - tiers for t in self.triggers):
            raise rule_error(f"triggers[].appliesTo may only name tiers of this policy {which}")
        if self.evaluation.when_all_breached is not None and self.evaluation.when_all_breached not in tiers:
            raise rule_error(f"evaluation.whenAllBreached must name a tier of this policy {which}")
        if self.override and self.override.pin_tier is not None and self.override.pin_tier not in tiers:
            raise rule_error(f"override.pinTier must name a tier of this policy {which}")
        if any(d.tier not in tiers - {PRIMARY} for d in self.drills or ()):
            raise rule_error(
                "drills[].tier must name a fallback of this policy (a drill exercises a fallback, not the primary)")
        if self.routing.service is not None and self.evaluation.restore_steps not in (None, [100]):
            raise rule_error(
                "routing.service moves all traffic at once: evaluation.restoreSteps must be omitted or [100]")
        for kind in KIND_FIELDS:
            if any(t.kind == kind for t in self.triggers) and not self.signals.measures(kind):
                raise rule_error(preset_message(kind))
        if self.routing.gateway_api is None and any(t.backend_ref for t in (self.primary, *self.fallbacks)):
            raise rule_error("backendRef is for routing.gatewayAPI only: Istio and Service routing send each tier's "
                             "traffic to its serviceName")
        return self


class TierWeight(_Status):
    tier: Annotated[str, Field(max_length=63)]
    weight: Annotated[int, Field(ge=0, le=100)]


class ConditionStatus(str, Enum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(_Status):
    """The standard metav1.Condition shape."""

    type: Annotated[str, Field(max_length=316, pattern=CONDITION_TYPE)]
    status: ConditionStatus
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    last_transition_time: str
    reason: Annotated[str, Field(min_length=1, max_length=1024, pattern=REASON)]
    message: Annotated[str, Field(max_length=32768)]


class HistoryEntry(_Status):
    time: str
    from_tier: Annotated[str, Field(max_length=63)]
    to_tier: Annotated[str, Field(max_length=63)]
    reason: Annotated[str, Field(max_length=128, pattern=REASON)]
    trigger: Annotated[str, Field(max_length=63)] | None = None
    observed: Annotated[str, Field(max_length=32)] | None = None
    threshold: Annotated[str, Field(max_length=32)] | None = None
    message: Annotated[str, Field(max_length=1024)]


class DrillRun(_Status):
    tier: Annotated[str, Field(max_length=63)]
    share: Annotated[int, Field(ge=1, le=50)]
    started_at: str
    ends_at: str
    evidence: Annotated[list[Annotated[str, Field(max_length=63)]], Field(max_length=16)] | None = None


class DrillResult(str, Enum):
    PASSED = "Passed"
    FAILED = "Failed"
    INCONCLUSIVE = "Inconclusive"
    ABORTED = "Aborted"
    SKIPPED = "Skipped"


class DrillOutcome(_Status):
    tier: Annotated[str, Field(max_length=63)]
    time: str
    result: DrillResult
    message: Annotated[str, Field(max_length=1024)]


Replicas = Annotated[int, Field(ge=0, le=MAX_REPLICAS)]
Revision = Annotated[str, Field(max_length=20, pattern=r"^[0-9]+$")]


class ScaledTier(_Status):
    tier: Annotated[str, Field(max_length=63)]
    replicas: Replicas
    scaled_to: Replicas | None = None


class PrimaryRevision(_Status):
    revision: Revision
    since: str
    serving_since: str | None = None


class RollbackProgress(_Status):
    """status.rollback: the primary's rollback in the current creep episode."""

    revision: Revision | None = None
    phase: Phase
    since: str
    observed_generation: Annotated[int, Field(ge=0)]
    failed_attempts: Annotated[int, Field(ge=0)]
    retry_at: str | None = None
    message: Annotated[str, Field(max_length=1024)]


class ScaleProgress(_Status):
    """One item of status.scaling: a fallback's scale under way, failing, refused or withheld."""

    tier: Annotated[str, Field(max_length=63)]
    replicas: Replicas
    expected: Replicas
    phase: Phase
    since: str
    observed_generation: Annotated[int, Field(ge=0)]
    failed_attempts: Annotated[int, Field(ge=0)]
    retry_at: str | None = None
    message: Annotated[str, Field(max_length=1024)]


HISTORY_LIMIT = 20
"""status.history's maxItems: the operator keeps the newest entries, Events carry the full trail."""


class FallbackPolicyStatus(_Status):
    """What the operator observed and decided; written by the operator only."""

    observed_generation: Annotated[int, Field(ge=0)] | None = None
    active_tier: Annotated[str, Field(max_length=63)] | None = None
    primary_weight: Annotated[int, Field(ge=0, le=100)] | None = None
    weights: Annotated[list[TierWeight], Field(max_length=9)] | None = None
    conditions: Annotated[list[Condition], Field(max_length=16)] | None = None
    fallback_ratio: Annotated[str, Field(max_length=16, pattern=DECIMAL)] | None = None
    last_known_good_revision: Revision | None = None
    known_good_since: str | None = None
    drill: DrillRun | None = None
    last_drills: Annotated[list[DrillOutcome], Field(max_length=8)] | None = None
    scaled_tiers: Annotated[list[ScaledTier], Field(max_length=8)] | None = None
    primary_revision: PrimaryRevision | None = None
    rollback: RollbackProgress | None = None
    scaling: Annotated[list[ScaleProgress], Field(max_length=8)] | None = None
    history: Annotated[list[HistoryEntry], Field(max_length=HISTORY_LIMIT)] | None = None
    engine: dict[str, Any] | None = None


API_VERSION = "understudy.dev/v1alpha1"
KIND = "FallbackPolicy"


class FallbackPolicy(BaseModel):
    """A whole FallbackPolicy object as stored in the API server or written in a manifest."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=True)

    api_version: Literal["understudy.dev/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["FallbackPolicy"]
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: FallbackPolicySpec
    status: FallbackPolicyStatus | None = None
