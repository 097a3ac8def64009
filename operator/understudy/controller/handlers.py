"""kopf wiring: the watches and one evaluation loop, nothing else.

No per-policy timers or daemons: those put a finalizer on every object and tick in herds. Event
handlers keep a snapshot of every FallbackPolicy and every Deployment in memory, and `watches` one of
every routing object (they write nothing to the objects); a single loop started at startup batches the
work of all due policies (see `evaluator.Evaluator`). kopf's own indexes are not used: until every object is indexed once, each new object
wakes every waiting per-object worker, which at thousands of policies kept the start-up busy for minutes.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import socket
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping

import kopf
from kubernetes import client

from understudy.audit.events import EventRecorder
from understudy.audit.metrics import OperatorMetrics
from understudy.controller import watches  # noqa: F401  (registers the routing watches)
from understudy.controller.evaluator import Evaluator
from understudy.controller.health import DEFAULT_STALL_SECONDS, LoopHealth
from understudy.controller.leader import LeaderElector, LeaseConfig
from understudy.controller.listing import StartGate, listed_policies
from understudy.controller.store import GROUP, PLURAL, VERSION, DeploymentSnapshot, PolicySnapshot, Store
from understudy.kube.clients import DEFAULT_API_TIMEOUT, api_client
from understudy.signals.confine import Confinement
from understudy.signals.reader import PrometheusAccess, SignalReader

log = logging.getLogger(__name__)

REVISION_ANNOTATION = "deployment.kubernetes.io/revision"

GC_THRESHOLDS = (50_000, 20, 1_000)
"""Young collections every 50,000 net allocations instead of 700, and (in practice) no automatic full
collection: thousands of policies keep a large, long-lived and acyclic working set that every full
collection walks again for nothing (in-process, a steady cycle over 5,000 policies took 0.84-1.39 s of CPU
with the default thresholds and 0.70-0.80 s with these)."""
FULL_COLLECTION_SECONDS = 600.0
"""A full collection at this pace instead, between cycles, still frees whatever cyclic garbage aged."""


@dataclass(frozen=True)
class OperatorConfig:
    prometheus_url: str
    query_timeout: float = 2.0
    access: PrometheusAccess = PrometheusAccess()
    metrics_port: int | None = 8080
    metrics_address: str = "0.0.0.0"
    leader_election: bool = False
    lease_name: str = "understudy-leader"
    lease_namespace: str = "default"
    identity: str = socket.gethostname()
    checkpoint_seconds: float = 60.0
    confinement: Confinement = Confinement()
    api_timeout: float = DEFAULT_API_TIMEOUT
    stall_seconds: float = DEFAULT_STALL_SECONDS


@kopf.on.event(GROUP, VERSION, PLURAL)
async def policy_event(event: Mapping[str, Any], namespace: str, name: str, uid: str, meta: Any, body: Any,
                       memo: kopf.Memo, **_: Any) -> None:
    snapshot = PolicySnapshot.of(
        namespace=namespace,
        name=name,
        uid=uid,
        generation=int(meta.get("generation") or 0),
        resource_version=str(meta.get("resourceVersion") or ""),
        spec=body.get("spec") or {},
        status=body.get("status") or {},
        created=_epoch(meta.get("creationTimestamp")),
        deleting=bool(meta.get("deletionTimestamp")),
        finalizers=tuple(meta.get("finalizers") or ()),
    )
    memo.store.put(memo.store.policies, (namespace, name), snapshot, event.get("type") == "DELETED")


def _epoch(stamp: Any) -> float:
    if not stamp:
        return 0.0
    return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()


@kopf.on.event("apps", "v1", "deployments")
async def deployment_event(event: Mapping[str, Any], namespace: str, name: str, meta: Any, spec: Any,
                           status: Any, memo: kopf.Memo, **_: Any) -> None:
    snapshot = DeploymentSnapshot(
        ready=int(status.get("readyReplicas") or 0),
        desired=int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1),
        revision=(meta.get("annotations") or {}).get(REVISION_ANNOTATION),
    )
    memo.store.put(memo.store.deployments, (namespace, name), snapshot, event.get("type") == "DELETED")


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    cfg: OperatorConfig = memo.config
    settings.posting.enabled = False  # audit Events are events.k8s.io/v1, posted by audit.events
    # One "Handler succeeded" line per watch event would drown the log at thousands of policies.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    settings.watching.server_timeout = 300
    # kopf keeps a worker per watched object until it has been idle this long (5 s by default). At start the
    # watches deliver every policy and every routing object within seconds, so thousands of workers were
    # alive at once; the memory they took stayed with the process (5,000 policies: RSS 363 MiB with 5 s,
    # 307 MiB with 0.5 s, one run each of `python -m e2e.bench.scale 5000:30`).
    settings.queueing.idle_timeout = 0.5
    # A watch whose connection dies silently would wait forever without a client-side bound: kopf restarts
    # it after this, just past the server's own end of the stream (watches resume, no event is lost).
    settings.watching.client_timeout = settings.watching.server_timeout + 60
    settings.watching.connect_timeout = settings.networking.connect_timeout = cfg.api_timeout
    api = api_client(cfg.api_timeout)
    metrics = OperatorMetrics()
    if cfg.metrics_port is not None:
        memo.metrics_server, _thread = metrics.serve(cfg.metrics_port, cfg.metrics_address)
    reader = SignalReader(cfg.prometheus_url, timeout=cfg.query_timeout, access=cfg.access,
                          confinement=cfg.confinement)
    recorder = EventRecorder(client.EventsV1Api(api), instance=cfg.identity, metrics=metrics)
    elector = (LeaderElector(api, LeaseConfig(cfg.lease_name, cfg.lease_namespace, cfg.identity))
               if cfg.leader_election else None)
    evaluator = Evaluator(api, reader, recorder, metrics, checkpoint_seconds=cfg.checkpoint_seconds,
                          **({"may_write": elector.may_write} if elector is not None else {}))
    memo.health = LoopHealth(cfg.stall_seconds)
    memo.stopped = asyncio.Event()
    memo.reader, memo.elector, memo.evaluator = reader, elector, evaluator
    memo.store = Store()
    # Startup handlers run before kopf starts watching: this LIST sees at most what the watch will deliver.
    try:
        listed_at = time.time()
        gate = StartGate(await asyncio.to_thread(listed_policies, api, memo.namespaces), listed_at)
    except Exception:
        log.exception("listing FallbackPolicies at start failed; evaluating as the watch delivers them")
        gate = StartGate.opened()
    memo.tasks = [asyncio.create_task(evaluation_loop(evaluator, elector, memo.store, memo.stopped, memo.health,
                                                      gate))]
    if elector is not None:
        memo.tasks.append(asyncio.create_task(elector.run(memo.stopped)))


@kopf.on.probe(id="evaluationLoop")
async def evaluation_loop_alive(memo: kopf.Memo, **_: Any) -> str:
    """/healthz: fails (HTTP 500) once the evaluation loop has not come round for --stall-seconds."""
    why = memo.health.check()
    if why is not None:
        raise kopf.PermanentError(why)
    return "ok"


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    memo.stopped.set()
    await asyncio.gather(*memo.tasks, return_exceptions=True)
    if memo.elector is not None:
        await asyncio.to_thread(memo.elector.release)
    memo.reader.close()
    memo.evaluator.close()
    server = getattr(memo, "metrics_server", None)
    if server is not None:
        server.shutdown()


async def evaluation_loop(evaluator: Evaluator, elector: LeaderElector | None, store: Store,
                          stopped: asyncio.Event, health: LoopHealth, gate: StartGate) -> None:
    """Run a cycle whenever a policy is due; sleep at most a second so every interval is honoured.

    No cycle runs before `gate` opens: until the watch has delivered the policies that existed at start,
    ownership of a shared route would be judged on a partial list.
    """
    was_leader = False
    seen, policies, deployments = -1, {}, {}
    gc.set_threshold(*GC_THRESHOLDS)
    collected = time.monotonic()
    while not stopped.is_set():
        leader = elector is None or elector.is_leader
        if leader and not was_leader:
            evaluator.reset()  # state comes from status: the previous leader may have moved on
        was_leader = leader
        listing = False
        if leader:
            if store.changes != seen:  # copied here, on the event loop's thread, where the handlers write
                seen, policies, deployments = store.changes, dict(store.policies), dict(store.deployments)
            listing = not gate.open(policies, time.time())
        if leader and not listing:
            try:
                report = await asyncio.to_thread(evaluator.cycle, policies, deployments, time.time(),
                                                 store.routing)
                if report.due:
                    log.debug("cycle: %s", report)
            except Exception:
                log.exception("evaluation cycle failed; the next one retries")
        health.beat()  # a pass completed (a standby's too): a cycle that never returns stops the beats
        if time.monotonic() - collected >= FULL_COLLECTION_SECONDS:
            await asyncio.to_thread(gc.collect)
            collected = time.monotonic()
        due = evaluator.next_due() if leader else None
        delay = 0.1 if listing else 1.0 if due is None else min(1.0, max(0.05, due - time.time()))
        try:
            await asyncio.wait_for(stopped.wait(), timeout=delay)
        except asyncio.TimeoutError:
            pass


def run(cfg: OperatorConfig, namespaces: list[str] | None, liveness_port: int | None = None,
        liveness_address: str = "0.0.0.0") -> None:
    """Run the operator in this process until it is signalled to stop."""
    liveness = f"http://{liveness_address}:{liveness_port}/healthz" if liveness_port else None
    kopf.run(
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces or (),
        liveness_endpoint=liveness,
        memo=kopf.Memo(config=cfg, namespaces=tuple(namespaces or ())),
    )
