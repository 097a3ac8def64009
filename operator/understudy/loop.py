"""The evaluation cycle: every due policy, one batch of PromQL, one `decide` each, and only the writes
that change something.

This is the shell around the engine. It is synchronous and runs in a worker thread; `handlers` feeds it
snapshots of kopf's indexes and calls `cycle` about once a second.

Order of effects for one decision, chosen so that a crash or a second leader cannot corrupt routing:
1. status (with the engine's state) is written first, guarded by the policy's resourceVersion. It is the
   fencing token: a replica acting on stale state gets a 409, drops its decision and reloads.
2. routing is written next (itself guarded by the routing object's resourceVersion). A crash between 1
   and 2 is repaired on restart, because a fresh runtime re-applies the recorded weights.
3. Events are posted last: they are the human-readable trail, status.history is the durable one.
"""
from __future__ import annotations

import json
import logging
import math
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timezone
from typing import Any, Callable, Hashable, Mapping

from kubernetes.client import ApiClient, AppsV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from understudy.api import FallbackPolicySpec, to_engine_policy
from understudy.api.durations import parse_duration
from understudy.api.models import API_VERSION, Capacity, DurationUnit
from understudy.audit.events import EventRecorder, ObjectRef
from understudy.audit.metrics import OperatorMetrics
from understudy.audit.status import build_status, format_ratio, format_time, status_patch
from understudy.controller.boundary import Boundary, Failure, Stage, failed_status, merge_readouts
from understudy.engine import (
    PRIMARY,
    AuditRecord,
    CreepAction,
    Decision,
    Policy,
    Samples,
    State,
    TierState,
    decide,
    initial_state,
    state_from_status,
    state_to_status,
)
from understudy.engine.drills import Drill, DrillOutcome, DrillRun, DrillStep, step_drills
from understudy.rollback.deployment import rollback_to_revision
from understudy.routing import (
    GatewayAPITarget,
    IstioTarget,
    RoutingBackend,
    RoutingTarget,
    RoutingTargetError,
    ServiceTarget,
    Weights,
    backend_for,
)
from understudy.signals.promql import MetricNames, Target
from understudy.signals.reader import SignalError, SignalReader

log = logging.getLogger(__name__)

GROUP, VERSION = API_VERSION.split("/")
PLURAL = "fallbackpolicies"

DEFERRED_POLL_SECONDS = 0.1
"""How soon a policy whose own Prometheus has not answered yet is looked at again (`Readout.deferred`)."""
ACCOUNTING_FIELDS = ("last_evaluation_ms", "creep_buckets")
"""Parts of the engine state that move on every evaluation. They are checkpointed (see
`Evaluator.checkpoint_seconds`), not written each cycle, so a steady state causes no API writes."""
HOT_STATUS_FIELDS = ("primaryRevision", "lastKnownGoodRevision", "drill", "lastDrills", "scaledTiers")
"""Status fields read on every evaluation; the rest of a policy's status stays JSON text until needed, which
at thousands of policies with full histories and creep windows is most of the operator's memory."""
_ESSENTIAL_FIELDS = tuple(f.name for f in fields(State) if f.name not in (*ACCOUNTING_FIELDS, "tiers"))
_TIER_FIELDS = tuple(f.name for f in fields(TierState) if f.name != "clear_streak")


@dataclass(frozen=True, slots=True)
class PolicySnapshot:
    """What the kopf index keeps of one FallbackPolicy.

    Spec is kept as JSON text and status as compressed JSON (see `pack`): the loop parses them only when a
    policy is new or its generation changes, and at thousands of policies the nested dicts would cost ten
    times the memory.
    """

    namespace: str
    name: str
    uid: str
    generation: int
    resource_version: str
    spec_json: str
    status_packed: bytes
    created: float = 0.0
    """metadata.creationTimestamp as epoch seconds: a drill's first period counts from it."""

    @classmethod
    def of(cls, namespace: str, name: str, uid: str, generation: int, resource_version: str,
           spec: Mapping[str, Any], status: Mapping[str, Any], created: float = 0.0) -> PolicySnapshot:
        return cls(namespace, name, uid, generation, resource_version, _compact(spec), pack(status), created)

    @property
    def spec(self) -> dict[str, Any]:
        return dict(json.loads(self.spec_json))

    @property
    def status(self) -> dict[str, Any]:
        return unpack(self.status_packed)


def _compact(value: Mapping[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"))


def pack(value: Mapping[str, Any]) -> bytes:
    """Compressed JSON: a status with a full history and creep window is about 7.8 KB of text, 0.9 KB packed."""
    return zlib.compress(_compact(value).encode(), 1)


def unpack(packed: bytes) -> dict[str, Any]:
    return dict(json.loads(zlib.decompress(packed)))


@dataclass(frozen=True)
class DeploymentSnapshot:
    """What the kopf index keeps of one Deployment: enough for readiness, capacity and rollback."""

    ready: int
    desired: int
    revision: str | None


@dataclass(frozen=True)
class Compiled:
    """A policy's spec turned, once per generation, into everything a cycle needs."""

    policy: Policy
    target: Target
    interval: float
    routing: RoutingTarget
    capacities: Mapping[str, Capacity]
    """Fallback tiers with a stated capacity, by tier name."""
    drills: tuple[Drill, ...] = ()


def compile_policy(snapshot: PolicySnapshot) -> Compiled:
    """Raises pydantic's ValidationError for a spec the CRD let through but the models reject."""
    spec = FallbackPolicySpec.model_validate(snapshot.spec)
    policy = to_engine_policy(spec)
    signals = spec.signals
    metrics = MetricNames(
        requests_metric=signals.requests_metric,
        duration_metric=signals.duration_metric,
        workload_label=signals.workload_label,
        namespace_label=signals.namespace_label,
        response_code_label=signals.response_code_label,
        duration_in_seconds=signals.duration_unit is DurationUnit.SECONDS,
        min_requests=signals.min_requests,
    )
    capacities = {f.name: f.capacity for f in spec.fallbacks if f.capacity is not None}
    target = Target(
        key=(snapshot.namespace, snapshot.name),
        namespace=snapshot.namespace,
        policy=policy,
        metrics=metrics,
        window=parse_duration(spec.evaluation.window),
        prometheus_url=signals.prometheus_url or None,
        needs_load=bool(capacities),
    )
    routing: RoutingTarget
    if spec.routing.istio is not None:
        routing = IstioTarget(spec.routing.istio.virtual_service_name, spec.routing.istio.route_name)
    elif spec.routing.service is not None:
        routing = ServiceTarget(spec.routing.service.name)
    else:
        assert spec.routing.gateway_api is not None  # the CRD and the models demand exactly one backend
        routing = GatewayAPITarget(spec.routing.gateway_api.http_route_name, spec.routing.gateway_api.rule_index)
    drills = tuple(Drill(d.tier, parse_duration(d.every), parse_duration(d.duration), d.share)
                   for d in spec.drills or ())
    return Compiled(policy, target, parse_duration(spec.evaluation.interval), routing, capacities, drills)


@dataclass
class Runtime:
    """The leader's working memory for one policy; rebuilt from status whenever in doubt."""

    uid: str
    generation: int
    compiled: Compiled | None
    invalid: str | None
    state: State | None
    status_packed: bytes
    """The status as last read or written (see `pack`): unpacked only when a new status is built."""
    hot: dict[str, Any]
    """The status fields every evaluation reads (HOT_STATUS_FIELDS), kept parsed."""
    resource_version: str
    backend: RoutingBackend | None
    next_due: float = 0.0
    routed: Weights | None = None
    """Weights known to be on the routing object; None forces one apply (a no-op if already right)."""
    persisted_essential: Essential | None = None
    last_checkpoint: float = 0.0
    routing_error: str | None = None
    signal_error: SignalError | None = None
    """Why the last read left some of this policy's signals unread on purpose (a refused URL or query)."""
    unchanged_by: tuple[Any, ...] | None = None
    """The inputs of the last evaluation that found status already right (reset whenever status changes)."""

    @property
    def status(self) -> dict[str, Any]:
        return unpack(self.status_packed)

    def set_status(self, status: Mapping[str, Any]) -> None:
        self.status_packed = pack(status)
        self.hot = {k: status[k] for k in HOT_STATUS_FIELDS if k in status}
        self.unchanged_by = None


@dataclass
class CycleReport:
    due: int = 0
    evaluated: int = 0
    status_writes: int = 0
    routing_writes: int = 0
    conflicts: int = 0
    events: int = 0
    queries: int = 0
    seconds: float = 0.0

    def add(self, other: CycleReport) -> None:
        """Fold in the counts of one group of writes (each worker counts into a report of its own)."""
        self.status_writes += other.status_writes
        self.routing_writes += other.routing_writes
        self.conflicts += other.conflicts
        self.events += other.events


@dataclass
class Effects:
    """One decision's writes, applied once every due policy has been decided (see `Evaluator._apply`)."""

    key: Hashable
    rt: Runtime
    snap: PolicySnapshot
    decision: Decision
    routed: Decision
    """The decision as routed: a running drill overrides the weights."""
    patch: dict[str, Any] | None
    """The status merge patch (None: status is already right)."""
    moment: datetime
    essential: Essential
    checkpoint: bool
    now: float


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
    may_write: Callable[[], bool] = lambda: True
    """Asked before each policy's writes: a replica that lost its Lease mid-cycle writes nothing more."""
    boundary: Boundary = field(default_factory=Boundary)
    runtimes: dict[Hashable, Runtime] = field(default_factory=dict)
    _waiting: dict[Hashable, float] = field(default_factory=dict)
    """Policies waiting on their own Prometheus -> when their evaluation was due (for the lateness metric)."""

    def __post_init__(self) -> None:
        self._snapshots: Mapping[Hashable, PolicySnapshot] = {}
        self._custom = CustomObjectsApi(self.api)
        self._apps = AppsV1Api(self.api)
        self._writers = ThreadPoolExecutor(max_workers=self.write_workers, thread_name_prefix="understudy-write")

    def close(self) -> None:
        self._writers.shutdown(wait=True)

    def reset(self) -> None:
        """Forget everything in memory: the next cycle reloads each policy's state from its status."""
        self.runtimes.clear()
        self._waiting.clear()

    def next_due(self) -> float | None:
        return min((r.next_due for r in self.runtimes.values()), default=None)

    def cycle(
        self,
        policies: Mapping[Hashable, PolicySnapshot],
        deployments: Mapping[tuple[str, str], DeploymentSnapshot],
        now: float,
    ) -> CycleReport:
        started = time.monotonic()
        report = CycleReport()
        self._sync(policies)
        self._snapshots = policies
        due = [(k, r) for k, r in self.runtimes.items() if r.next_due <= now]
        report.due = len(due)
        valid = [(k, r) for k, r in due if r.compiled is not None]
        due_at = {k: self._waiting.pop(k, rt.next_due) for k, rt in valid}
        for key, rt in due:
            rt.next_due = schedule_next(rt.compiled.interval if rt.compiled else 30.0, now)
            if rt.compiled is None:
                invalid = self.boundary.call(key, Stage.WRITE, lambda: self._report_invalid(
                    key, rt, policies[key], now, report), f"{policies[key].namespace}/{policies[key].name}")
                if isinstance(invalid, Failure):
                    self._report_failure(invalid, now, report)
        failures: list[Failure] = []
        if valid:
            ready = {k: (d.ready, d.desired) for k, d in deployments.items()}
            before = self.reader.stats
            readout, failures = self.boundary.read_isolated(
                lambda targets: self.reader.read_all(targets, ready), merge_readouts,
                [rt.compiled.target for _, rt in valid if rt.compiled], key=lambda t: t.key)
            valid = [(k, rt) for k, rt in valid if k in readout.samples or k in readout.deferred]
            report.queries = self.reader.stats.queries_sent - before.queries_sent
            self.metrics.count_queries(before, self.reader.stats)
            for key, rt in valid:
                if key in readout.deferred:  # its own Prometheus has not answered yet: look again shortly
                    rt.next_due, self._waiting[key] = now + DEFERRED_POLL_SECONDS, due_at.pop(key)
                else:
                    rt.signal_error = readout.errors.get(key)
            pending: list[Effects] = []
            for key, rt in valid:
                if key in readout.deferred:
                    continue
                snap = policies[key]
                effects = self.boundary.call(key, Stage.DECIDE, lambda: self._evaluate(
                    key, rt, snap, readout.samples.get(key, Samples({})), readout.loads.get(key), deployments, now,
                    report), f"{snap.namespace}/{snap.name}")
                if isinstance(effects, Failure):
                    failures.append(effects)
                elif effects is not None:
                    pending.append(effects)
                else:
                    self.boundary.succeeded(key)
            self._apply_all(pending, report)
        for failure in failures:
            self._report_failure(failure, now, report)
        report.seconds = time.monotonic() - started
        self.metrics.cycle_duration.observe(report.seconds)
        for at in due_at.values():
            if at > 0.0:  # 0.0: a first evaluation, due whenever it comes
                self.metrics.evaluation_lateness.observe(max(0.0, now + report.seconds - at))
        return report

    # -- keeping runtimes in line with the index -------------------------------------------------------

    def _sync(self, policies: Mapping[Hashable, PolicySnapshot]) -> None:
        for gone in set(self.runtimes) - set(policies):
            del self.runtimes[gone]
            self._waiting.pop(gone, None)
            self.boundary.forget(gone)
            namespace, name = gone  # type: ignore[misc]
            self.metrics.forget_policy(namespace, name)
        for key, snap in policies.items():
            rt = self.runtimes.get(key)
            if rt is None or rt.uid != snap.uid:
                self.runtimes[key] = self._load(snap)
            elif rt.generation != snap.generation:
                self._recompile(rt, snap)

    def _load(self, snap: PolicySnapshot) -> Runtime:
        compiled, invalid = self._compile(snap)
        status = dict(snap.status or {})
        state: State | None = None
        restored = False
        if compiled is not None:
            state, restored = self._restore_state(compiled.policy, status.get("engine"))
        rt = Runtime(
            uid=snap.uid, generation=snap.generation, compiled=compiled, invalid=invalid, state=state,
            status_packed=b"", hot={}, resource_version=snap.resource_version,
            backend=backend_for(self.api, compiled.routing, compiled.policy.tiers) if compiled else None,
        )
        rt.set_status(status)
        rt.persisted_essential = _essential(state) if state is not None and restored else None
        return rt

    def _recompile(self, rt: Runtime, snap: PolicySnapshot) -> None:
        """A spec change keeps the engine's memory when the tiers are the same, and starts afresh otherwise."""
        compiled, invalid = self._compile(snap)
        rt.generation, rt.compiled, rt.invalid = snap.generation, compiled, invalid
        rt.resource_version = snap.resource_version
        rt.set_status(snap.status)
        rt.next_due = 0.0
        if compiled is None:
            return
        if rt.state is None or tuple(n for n, _ in rt.state.weights) != compiled.policy.tier_names:
            rt.state = initial_state(compiled.policy)
        rt.backend = backend_for(self.api, compiled.routing, compiled.policy.tiers)
        rt.routed = None

    @staticmethod
    def _compile(snap: PolicySnapshot) -> tuple[Compiled | None, str | None]:
        try:
            return compile_policy(snap), None
        except (ValidationError, ValueError) as err:
            return None, " ".join(str(err).split())[:1000]

    @staticmethod
    def _restore_state(policy: Policy, engine_status: Any) -> tuple[State, bool]:
        """The engine state recorded in status, and whether it was usable (else a fresh state)."""
        if isinstance(engine_status, Mapping):
            try:
                state = state_from_status(engine_status)
                if tuple(n for n, _ in state.weights) == policy.tier_names:
                    return state, True
            except ValueError:
                log.warning("engine state in status is unreadable; starting afresh")
        return initial_state(policy), False

    # -- one decision ------------------------------------------------------------------------------------

    def _evaluate(
        self,
        key: Hashable,
        rt: Runtime,
        snap: PolicySnapshot,
        samples: Samples,
        load: float | None,
        deployments: Mapping[tuple[str, str], DeploymentSnapshot],
        now: float,
        report: CycleReport,
    ) -> Effects | None:
        """Decide for one policy; returns the writes it needs, or None when it needs none."""
        assert rt.compiled is not None and rt.state is not None and rt.backend is not None
        report.evaluated += 1
        policy = rt.compiled.policy
        if rt.compiled.capacities:
            samples = replace(samples, capacity=_capacity(rt.compiled, snap.namespace, load, deployments))
        decision = decide(policy, samples, rt.state, now)
        primary = deployments.get((snap.namespace, policy.tiers[0].deployment))
        shell_records: list[AuditRecord] = []
        scaled: list[dict[str, Any]] | None = None
        if rt.compiled.capacities:
            scaled, scale_records = self._scale(rt, snap, decision, load, deployments)
            shell_records += scale_records
        if any(r.reason == "CreepBudgetExceeded" for r in decision.audit):
            shell_records += self._on_creep(rt, snap, decision)
        drill = self._drill(rt, snap, policy, decision, samples, now)
        shell_records += drill.audit
        if shell_records:
            decision = replace(decision, audit=decision.audit + tuple(shell_records))

        moment = datetime.fromtimestamp(now, timezone.utc)
        revision = _primary_revision(rt.hot, primary, moment)
        lkg = _last_known_good(rt.hot, revision, decision, policy.creep_window, now)
        essential = _essential(decision.state)
        window_has_fallback = any(b.off_primary_ms for b in decision.state.creep_buckets)
        checkpoint = essential != rt.persisted_essential or (
            window_has_fallback and now - rt.last_checkpoint >= self.checkpoint_seconds)
        ready = self._ready(rt)
        routed = replace(decision, weights=drill.weights) if drill.weights else decision
        # Everything the new status depends on besides the previous status: when it matches the last
        # evaluation that needed no write, neither does this one, and building the status is skipped.
        inputs = (rt.generation, decision.active_tier, decision.weights, format_ratio(decision.fallback_ratio),
                  decision.creep_exceeded, decision.metrics_available, ready, lkg, revision, scaled,
                  drill.running, drill.outcome)
        quiet = not decision.audit and not checkpoint and not self._must_route(rt, routed)
        if quiet and rt.unchanged_by == inputs:
            self._settle_quietly(rt, snap, decision, essential, now)
            return None
        previous = rt.status
        status = build_status(previous, decision, rt.generation, moment, ready, lkg,
                              engine=state_to_status(decision.state) if checkpoint else None)
        if revision is not None:
            status["primaryRevision"] = revision
        if scaled is not None:
            status["scaledTiers"] = scaled
        _record_drill(previous, status, drill, moment)
        patch = status_patch(previous, status)
        effects = Effects(key, rt, snap, decision, routed, patch, moment, essential, checkpoint, now)
        if not quiet or patch is not None:
            return effects
        rt.unchanged_by = inputs
        self._settle_quietly(rt, snap, decision, essential, now)
        return None

    def _settle_quietly(self, rt: Runtime, snap: PolicySnapshot, decision: Decision, essential: Essential,
                        now: float) -> None:
        """The steady state: nothing to write, only the decision to adopt."""
        _settle(rt, decision, essential, False, now)
        assert rt.compiled is not None
        self.metrics.observe_policy(snap.namespace, snap.name, rt.compiled.policy.tier_names,
                                    decision.active_tier, decision.fallback_ratio)

    # -- writes ---------------------------------------------------------------------------------------------

    def _apply_all(self, pending: list[Effects], report: CycleReport) -> None:
        """Write the decisions of one cycle, several routing objects at a time.

        Policies that share a routing object are written one after another in one worker, so they
        never race each other's resourceVersion; per policy the order stays status, routing, Events.
        """
        groups: dict[Hashable, list[Effects]] = {}
        for e in pending:
            assert e.rt.compiled is not None
            groups.setdefault((e.snap.namespace, e.rt.compiled.routing), []).append(e)
        if len(groups) <= 1:
            for group in groups.values():
                self._apply_group(group, report)
            return
        reports = [CycleReport() for _ in groups]
        futures = [self._writers.submit(self._apply_group, group, r) for group, r in zip(groups.values(), reports)]
        for future, r in zip(futures, reports):
            future.result()
            report.add(r)

    def _apply_group(self, group: list[Effects], report: CycleReport) -> None:
        for e in group:
            if not self.may_write():
                return
            failure = self.boundary.call(e.key, Stage.WRITE, lambda: self._apply(e, report),
                                         f"{e.snap.namespace}/{e.snap.name}")
            if isinstance(failure, Failure):
                self._report_failure(failure, e.now, report)
                self.runtimes.pop(e.key, None)
            else:
                self.boundary.succeeded(e.key)

    def _report_failure(self, failure: Failure, now: float, report: CycleReport) -> None:
        """Ready=False, reason EvaluationFailed, and the Event once per episode (see controller.boundary)."""
        rt, snap = self.runtimes.get(failure.key), self._snapshots.get(failure.key)
        if rt is None or snap is None or not self.may_write():
            return
        try:
            status = failed_status(rt.status, failure, rt.generation, now)
            if status is not None:
                self._write_status(failure.key, rt, snap, status, report)
            if failure.first:
                self.recorder.record(ObjectRef(snap.name, snap.namespace, snap.uid), failure.record,
                                     datetime.fromtimestamp(now, timezone.utc))
                report.events += 1
        except Exception:  # the report of a failure may fail too (the same API trouble): the log has it
            log.exception("reporting the failure of %s/%s failed", snap.namespace, snap.name)

    def _apply(self, e: Effects, report: CycleReport) -> None:
        rt, snap, decision = e.rt, e.snap, e.decision
        if not self._write_patch(e.key, rt, snap, e.patch, report):
            return  # someone else moved the policy on: forget this decision, reload next cycle
        _settle(rt, decision, e.essential, e.checkpoint, e.now)
        routing_records = self._route(rt, snap, e.routed, report)
        if routing_records:
            retry = build_status(rt.status, replace(decision, audit=tuple(routing_records)), rt.generation,
                                 e.moment, self._ready(rt), None)
            self._write_status(e.key, rt, snap, retry, report)
        ref = ObjectRef(snap.name, snap.namespace, snap.uid)
        for record in (*decision.audit, *routing_records):
            self.recorder.record(ref, record, e.moment)
            report.events += 1
        assert rt.compiled is not None
        self.metrics.observe_policy(snap.namespace, snap.name, rt.compiled.policy.tier_names,
                                    decision.active_tier, decision.fallback_ratio, (*decision.audit, *routing_records))

    @staticmethod
    def _must_route(rt: Runtime, decision: Decision) -> bool:
        return decision.route and decision.weights != rt.routed

    @staticmethod
    def _drill(rt: Runtime, snap: PolicySnapshot, policy: Policy, decision: Decision, samples: Samples,
               now: float) -> DrillStep:
        assert rt.compiled is not None
        if not rt.compiled.drills and not rt.hot.get("drill"):
            return DrillStep(None, None, None, ())
        running = rt.hot.get("drill")
        run = None if not running else DrillRun(running["tier"], int(running["share"]),
                                                _epoch(running["startedAt"]), _epoch(running["endsAt"]))
        last = {o["tier"]: _epoch(o["time"]) for o in rt.hot.get("lastDrills") or []}
        return step_drills(rt.compiled.drills, policy, decision, samples, run, last, snap.created, now)

    def _ready(self, rt: Runtime) -> tuple[bool, str, str]:
        if rt.routing_error is not None:
            reason, _, message = rt.routing_error.partition(": ")
            return False, reason, message
        if rt.signal_error is not None:
            return False, rt.signal_error.reason, rt.signal_error.message
        return True, "Evaluating", "Signals are read and decisions applied every evaluation interval."

    def _route(self, rt: Runtime, snap: PolicySnapshot, decision: Decision, report: CycleReport) -> list[AuditRecord]:
        """Apply the weights when they differ from what the routing is known to carry."""
        assert rt.backend is not None
        if not self._must_route(rt, decision):
            return []
        try:
            changed = rt.backend.apply(snap.namespace, decision.weights)
        except RoutingTargetError as err:
            first = rt.routing_error != str(err)
            rt.routing_error = str(err)
            if not first:
                return []
            return [AuditRecord(reason="RoutingFailed", message=f"{err.reason}: {err.message}")]
        except ApiException as err:
            log.warning("routing write for %s/%s failed: %s", snap.namespace, snap.name, err.reason)
            return []
        recovered = rt.routing_error is not None
        rt.routing_error = None
        rt.routed = decision.weights
        if changed:
            report.routing_writes += 1
            self.metrics.api_write(type(rt.backend).__name__)
        if recovered:
            return [AuditRecord(reason="RoutingRestored", message="The routing target accepts weights again.")]
        return []

    def _write_status(self, key: Hashable, rt: Runtime, snap: PolicySnapshot, status: dict[str, Any],
                      report: CycleReport) -> bool:
        return self._write_patch(key, rt, snap, status_patch(rt.status, status), report)

    def _write_patch(self, key: Hashable, rt: Runtime, snap: PolicySnapshot, patch: dict[str, Any] | None,
                     report: CycleReport) -> bool:
        if patch is None:
            return True
        patch["metadata"] = {"resourceVersion": rt.resource_version}
        try:
            written = self._custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, snap.namespace, PLURAL, snap.name, patch)
        except ApiException as err:
            if err.status in (404, 409):
                report.conflicts += 1
                self.runtimes.pop(key, None)
                return False
            raise
        report.status_writes += 1
        self.metrics.api_write("FallbackPolicyStatus")
        body = written if isinstance(written, dict) else written.to_dict()
        rt.set_status(body.get("status") or {})  # the API server answers a status patch with the object
        rt.resource_version = body["metadata"]["resourceVersion"]
        return True

    def _scale(self, rt: Runtime, snap: PolicySnapshot, decision: Decision, load: float | None,
               deployments: Mapping[tuple[str, str], DeploymentSnapshot],
               ) -> tuple[list[dict[str, Any]], list[AuditRecord]]:
        """Scale a skipped fallback up so it can take over, and back once traffic has left it.

        Returns the new status.scaledTiers (the replica counts to return to) and what to audit.
        """
        assert rt.compiled is not None
        scaled = {e["tier"]: int(e["replicas"]) for e in rt.hot.get("scaledTiers") or []}
        records: list[AuditRecord] = []
        weights = dict(decision.weights)
        settled = decision.active_tier == PRIMARY and decision.state.restore_tier is None
        for tier, tier_state in zip(rt.compiled.policy.tiers, decision.state.tiers):
            capacity = rt.compiled.capacities.get(tier.name)
            current = deployments.get((snap.namespace, tier.deployment))
            if capacity is None or current is None or not capacity.scale_on_activate:
                continue
            if tier_state.capacity_short and load is not None:
                wanted = min(capacity.max_replicas or current.desired, math.ceil(load / capacity.requests_per_replica))
                if wanted > current.desired:
                    records.append(self._set_replicas("ScaledUp", snap.namespace, tier.name, tier.deployment, wanted,
                                                      f"to carry {load:.1f} requests/s at "
                                                      f"{capacity.requests_per_replica} per replica"))
                    scaled.setdefault(tier.name, current.desired)
            elif tier.name in scaled and settled and weights.get(tier.name, 0) == 0:
                original = scaled.pop(tier.name)
                records.append(self._set_replicas("ScaledDown", snap.namespace, tier.name, tier.deployment, original,
                                                  "traffic is back on the primary"))
        return [{"tier": t, "replicas": r} for t, r in scaled.items()], records

    def _set_replicas(self, reason: str, namespace: str, tier: str, deployment: str, replicas: int,
                      why: str) -> AuditRecord:
        try:
            self._apps.patch_namespaced_deployment(deployment, namespace, {"spec": {"replicas": replicas}})
        except ApiException as err:
            return AuditRecord(reason="ScaleFailed", tier=tier,
                               message=f"could not scale {deployment} to {replicas} replicas: {err.reason}")
        self.metrics.api_write("Deployment")
        return AuditRecord(reason=reason, tier=tier, message=f"scaled {deployment} to {replicas} replicas, {why}")

    def _on_creep(self, rt: Runtime, snap: PolicySnapshot, decision: Decision) -> list[AuditRecord]:
        """Act on a creep verdict, once per episode, as the policy's creep.action says."""
        assert rt.compiled is not None
        action = rt.compiled.policy.creep_action
        ratio = f"{decision.fallback_ratio:.3f}"
        if action is not CreepAction.ROLLBACK_PRIMARY:
            return []
        deployment = rt.compiled.policy.tiers[0].deployment
        good = rt.hot.get("lastKnownGoodRevision")
        if not good:
            return [AuditRecord(reason="RollbackFailed", tier=PRIMARY,
                                message=f"Fallback ratio {ratio} is over budget, but no healthy revision of "
                                        f"{deployment} is on record: nothing was rolled back.")]
        result = rollback_to_revision(self._apps, snap.namespace, deployment, good)
        if result.rolled_back:
            self.metrics.api_write("Deployment")
            return [AuditRecord(reason="RolledBack", tier=PRIMARY,
                                message=f"Fallback ratio {ratio} is over budget: rolled {deployment} back "
                                        f"to revision {good}, the last one that served without creep.")]
        return [AuditRecord(reason="RollbackFailed", tier=PRIMARY,
                            message=f"Fallback ratio {ratio} is over budget; rollback of {deployment} to "
                                    f"revision {good} was not done: {result.message}")]

    def _report_invalid(self, key: Hashable, rt: Runtime, snap: PolicySnapshot, now: float,
                        report: CycleReport) -> None:
        """A spec the models reject gets Ready=False and one Event per generation; it never stops others."""
        ready = {"type": "Ready", "status": "False", "reason": "InvalidPolicy", "message": rt.invalid or "",
                 "observedGeneration": rt.generation}
        current = rt.status
        conditions = [c for c in current.get("conditions") or [] if c.get("type") != "Ready"]
        previous = next((c for c in current.get("conditions") or [] if c.get("type") == "Ready"), None)
        if previous and all(previous.get(k) == v for k, v in ready.items()):
            return
        stamp = datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        status = {**current, "observedGeneration": rt.generation,
                  "conditions": [*conditions, {**ready, "lastTransitionTime": stamp}]}
        if self._write_status(key, rt, snap, status, report):
            self.recorder.record(ObjectRef(snap.name, snap.namespace, snap.uid),
                                 AuditRecord(reason="InvalidPolicy", message=rt.invalid or ""),
                                 datetime.fromtimestamp(now, timezone.utc))


def _settle(rt: Runtime, decision: Decision, essential: Essential, checkpoint: bool, now: float) -> None:
    """Adopt a decision whose status is on the server (or needed no write)."""
    if checkpoint:
        rt.persisted_essential, rt.last_checkpoint = essential, now
    rt.state = decision.state


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _record_drill(previous: Mapping[str, Any], status: dict[str, Any], step: DrillStep, moment: datetime) -> None:
    """status.drill (the drill in progress), status.lastDrills and the LastDrillPassed condition."""
    if step.running is not None:
        status["drill"] = {"tier": step.running.tier, "share": step.running.share,
                           "startedAt": format_time(datetime.fromtimestamp(step.running.started, timezone.utc)),
                           "endsAt": format_time(datetime.fromtimestamp(step.running.ends, timezone.utc))}
    elif previous.get("drill"):
        status["drill"] = None  # a merge patch null removes it
    outcome: DrillOutcome | None = step.outcome
    if outcome is None:
        return
    stamp = format_time(datetime.fromtimestamp(outcome.time, timezone.utc))
    entry = {"tier": outcome.tier, "time": stamp, "result": outcome.result, "message": outcome.message[:1024]}
    status["lastDrills"] = [*(o for o in previous.get("lastDrills") or [] if o.get("tier") != outcome.tier), entry]
    if outcome.result in ("Passed", "Failed"):
        passed = outcome.result == "Passed"
        before = next((c for c in status["conditions"] if c["type"] == "LastDrillPassed"), None)
        condition = {"type": "LastDrillPassed", "status": "True" if passed else "False",
                     "reason": "DrillPassed" if passed else "DrillFailed", "message": entry["message"],
                     "lastTransitionTime": stamp if not before or before["status"] != ("True" if passed else "False")
                     else before["lastTransitionTime"],
                     "observedGeneration": status["observedGeneration"]}
        status["conditions"] = [*(c for c in status["conditions"] if c["type"] != "LastDrillPassed"), condition]


def schedule_next(interval: float, now: float) -> float:
    """The next instant on the interval's grid (whole multiples of it since the epoch), at least half an
    interval away.

    Policies of one interval thus fall due together and are read in one batch with one reusable query
    plan, rather than in partial batches that each need planning of their own. The half-interval gap
    keeps a new or late policy from being evaluated twice in quick succession, which the engine would
    count as two evaluations towards tripAfter.
    """
    step = (math.floor(now / interval) + 1) * interval
    return step + interval if step - now < interval / 2 else step


def _capacity(compiled: Compiled, namespace: str, load: float | None,
              deployments: Mapping[tuple[str, str], DeploymentSnapshot]) -> dict[str, bool]:
    """Whether each fallback with a stated capacity could carry the whole load on its ready replicas.

    An unknown load (no request series, Prometheus down) blocks nobody: missing data is handled by the
    triggers, and refusing every fallback for want of a number would be the rash choice.
    """
    fits: dict[str, bool] = {}
    for tier in compiled.policy.tiers:
        capacity = compiled.capacities.get(tier.name)
        if capacity is None or load is None:
            continue
        current = deployments.get((namespace, tier.deployment))
        ready = current.ready if current else 0
        fits[tier.name] = ready * capacity.requests_per_replica >= load
    return fits


Essential = tuple[Any, ...]


def _essential(state: State) -> Essential:
    """The part of the engine state whose change must be written at once.

    An untripped tier's clear streak only matters once it trips (it counts towards recovery), so its
    growth is left to the next checkpoint: otherwise every new policy would write its status recoverAfter
    times before settling. Read straight off the dataclasses: this runs for every policy every cycle.
    """
    tiers = tuple(tuple(getattr(t, n) for n in _TIER_FIELDS) + ((t.clear_streak,) if t.tripped else ())
                  for t in state.tiers)
    return tuple(getattr(state, n) for n in _ESSENTIAL_FIELDS) + (tiers,)


def _primary_revision(status: Mapping[str, Any], primary: DeploymentSnapshot | None,
                      moment: datetime) -> dict[str, str] | None:
    """The primary Deployment's current revision and since when this policy has seen it."""
    if primary is None or primary.revision is None:
        return None
    seen = status.get("primaryRevision") or {}
    if seen.get("revision") == primary.revision and seen.get("since"):
        return {"revision": primary.revision, "since": seen["since"]}
    return {"revision": primary.revision, "since": moment.strftime("%Y-%m-%dT%H:%M:%SZ")}


def _last_known_good(status: Mapping[str, Any], revision: Mapping[str, str] | None, decision: Decision,
                     creep_window: float, now: float) -> str | None:
    """The primary's revision becomes known-good once it has carried all traffic for a whole creep window
    with no time off the primary in that window.

    A revision that keeps falling back never gets there, so it can be rolled back to the one before it.
    The first revision a policy sees healthy is taken as known-good at once, so a rollback target exists
    from the start. None keeps the value on record.
    """
    if revision is None:
        return None
    healthy = dict(decision.weights).get(PRIMARY) == 100 and not decision.creep_exceeded
    if not healthy or decision.state.tiers[0].tripped:
        return None
    known = status.get("lastKnownGoodRevision")
    if known is None:
        return revision["revision"]
    if known == revision["revision"]:
        return None
    since = datetime.fromisoformat(revision["since"].replace("Z", "+00:00")).timestamp()
    fallback_free = all(b.off_primary_ms == 0 for b in decision.state.creep_buckets)
    return revision["revision"] if fallback_free and now - since >= creep_window else None
