"""kopf wiring: two indexes and one evaluation loop, nothing else.

No per-policy timers or daemons: those put a finalizer on every object and tick in herds. kopf keeps an
index of every FallbackPolicy and every Deployment (index handlers write nothing to the objects), and a
single loop started at startup batches the work of all due policies (see `loop.Evaluator`).
"""
from __future__ import annotations

import asyncio
import copy
import logging
import socket
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import kopf
from kubernetes import client, config

from understudy.audit.events import EventRecorder
from understudy.audit.metrics import OperatorMetrics
from understudy.leader import LeaderElector, LeaseConfig
from understudy.loop import GROUP, PLURAL, VERSION, DeploymentSnapshot, Evaluator, PolicySnapshot
from understudy.signals.reader import SignalReader

log = logging.getLogger(__name__)

REVISION_ANNOTATION = "deployment.kubernetes.io/revision"


@dataclass(frozen=True)
class OperatorConfig:
    prometheus_url: str
    query_timeout: float = 2.0
    metrics_port: int | None = 8080
    metrics_address: str = "0.0.0.0"
    leader_election: bool = False
    lease_name: str = "understudy-leader"
    lease_namespace: str = "default"
    identity: str = socket.gethostname()
    checkpoint_seconds: float = 60.0


def api_client() -> client.ApiClient:
    """In a pod, the ServiceAccount; elsewhere, KUBECONFIG (what kopf itself logs in with)."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()


@kopf.index(GROUP, VERSION, PLURAL)
def policy_index(namespace: str, name: str, uid: str, meta: Any, body: Any, **_: Any) -> dict[Any, PolicySnapshot]:
    return {(namespace, name): PolicySnapshot(
        namespace=namespace,
        name=name,
        uid=uid,
        generation=int(meta.get("generation") or 0),
        resource_version=str(meta.get("resourceVersion") or ""),
        spec=copy.deepcopy(dict(body.get("spec") or {})),
        status=copy.deepcopy(dict(body.get("status") or {})),
        created=_epoch(meta.get("creationTimestamp")),
    )}


def _epoch(stamp: Any) -> float:
    if not stamp:
        return 0.0
    return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()


@kopf.index("apps", "v1", "deployments")
def deployment_index(namespace: str, name: str, meta: Any, spec: Any, status: Any, **_: Any) -> dict[Any, DeploymentSnapshot]:
    return {(namespace, name): DeploymentSnapshot(
        ready=int(status.get("readyReplicas") or 0),
        desired=int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1),
        revision=(meta.get("annotations") or {}).get(REVISION_ANNOTATION),
    )}


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, policy_index: kopf.Index,
                deployment_index: kopf.Index, **_: Any) -> None:
    cfg: OperatorConfig = memo.config
    settings.posting.enabled = False  # audit Events are events.k8s.io/v1, posted by audit.events
    settings.watching.server_timeout = 300
    api = api_client()
    metrics = OperatorMetrics()
    if cfg.metrics_port is not None:
        memo.metrics_server, _thread = metrics.serve(cfg.metrics_port, cfg.metrics_address)
    reader = SignalReader(cfg.prometheus_url, timeout=cfg.query_timeout)
    recorder = EventRecorder(client.EventsV1Api(api), instance=cfg.identity, metrics=metrics)
    evaluator = Evaluator(api, reader, recorder, metrics, checkpoint_seconds=cfg.checkpoint_seconds)
    elector = (LeaderElector(api, LeaseConfig(cfg.lease_name, cfg.lease_namespace, cfg.identity))
               if cfg.leader_election else None)
    memo.stopped = asyncio.Event()
    memo.reader, memo.elector = reader, elector
    memo.tasks = [asyncio.create_task(evaluation_loop(evaluator, elector, policy_index, deployment_index,
                                                      memo.stopped))]
    if elector is not None:
        memo.tasks.append(asyncio.create_task(elector.run(memo.stopped)))


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    memo.stopped.set()
    await asyncio.gather(*memo.tasks, return_exceptions=True)
    if memo.elector is not None:
        await asyncio.to_thread(memo.elector.release)
    memo.reader.close()
    server = getattr(memo, "metrics_server", None)
    if server is not None:
        server.shutdown()


async def evaluation_loop(evaluator: Evaluator, elector: LeaderElector | None, policies: kopf.Index,
                          deployments: kopf.Index, stopped: asyncio.Event) -> None:
    """Run a cycle whenever a policy is due; sleep at most a second so every interval is honoured."""
    was_leader = False
    while not stopped.is_set():
        leader = elector is None or elector.is_leader
        if leader and not was_leader:
            evaluator.reset()  # state comes from status: the previous leader may have moved on
        was_leader = leader
        if leader:
            policy_snapshot = {key: value for key, store in policies.items() for value in store}
            deployment_snapshot = {key: value for key, store in deployments.items() for value in store}
            try:
                report = await asyncio.to_thread(evaluator.cycle, policy_snapshot, deployment_snapshot, time.time())
                if report.due:
                    log.debug("cycle: %s", report)
            except Exception:
                log.exception("evaluation cycle failed; the next one retries")
        due = evaluator.next_due() if leader else None
        delay = 1.0 if due is None else min(1.0, max(0.05, due - time.time()))
        try:
            await asyncio.wait_for(stopped.wait(), timeout=delay)
        except asyncio.TimeoutError:
            pass


def run(cfg: OperatorConfig, namespaces: list[str] | None, liveness_port: int | None = None) -> None:
    """Run the operator in this process until it is signalled to stop."""
    liveness = f"http://0.0.0.0:{liveness_port}/healthz" if liveness_port else None
    kopf.run(
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces or (),
        liveness_endpoint=liveness,
        memo=kopf.Memo(config=cfg),
    )
