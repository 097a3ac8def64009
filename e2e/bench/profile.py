"""Profile of the slowest thing the benchmarks measure: the operator's evaluation cycle over every policy.

The scale benchmark leaves its policies (and their statuses) behind; this runs `loop.Evaluator.cycle`
in-process over all of them, the way `handlers.evaluation_loop` does (snapshots as the operator's watch keeps them,
a real SignalReader against the real Prometheus, real API writes), once cold (fresh runtimes: compile
every spec, read every routing object once) and then warm (the steady state), under pyinstrument when it
is installed (`pip install pyinstrument`) and cProfile otherwise.

Run alone: not meant to; `python -m e2e.bench` runs it after the scale benchmark.
"""
from __future__ import annotations

import cProfile
import gc
import io
import pstats
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from e2e.bench.common import Stack


@dataclass
class Phase:
    name: str
    seconds: float
    report: Any
    top: list[tuple[str, float, float]] = field(default_factory=list)
    """(function at file:line, seconds of own time, share of the phase's wall time)"""
    inclusive: list[tuple[str, float, float]] = field(default_factory=list)
    """The same for the operator's own functions, callees included (pyinstrument only)."""
    tree: str = ""


@dataclass
class ProfileResult:
    profiler: str
    policies: int
    phases: list[Phase] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    def say(self, text: str) -> None:
        print(text, flush=True)
        self.lines.append(text)


def _snapshots(api: Any, namespace: str) -> dict[Any, Any]:
    from kubernetes import client

    from understudy.controller.store import PolicySnapshot

    items = client.CustomObjectsApi(api).list_namespaced_custom_object(
        "understudy.dev", "v1alpha1", namespace, "fallbackpolicies")["items"]
    return {(o["metadata"]["namespace"], o["metadata"]["name"]): PolicySnapshot.of(
        namespace=o["metadata"]["namespace"], name=o["metadata"]["name"], uid=o["metadata"]["uid"],
        generation=int(o["metadata"].get("generation") or 0),
        resource_version=str(o["metadata"]["resourceVersion"]),
        spec=o.get("spec") or {}, status=o.get("status") or {}) for o in items}


def _deployments(api: Any, namespace: str) -> dict[Any, Any]:
    """The namespace's Deployments as the operator's watch keeps them: without them every tier reads as absent
    once the start-up readiness grace is over, and the profile would time a fleet-wide failover."""
    from kubernetes import client

    from understudy.controller.handlers import REVISION_ANNOTATION
    from understudy.controller.store import DeploymentSnapshot

    return {(namespace, d.metadata.name): DeploymentSnapshot(
        ready=int(d.status.ready_replicas or 0),
        desired=int(d.spec.replicas if d.spec.replicas is not None else 1),
        revision=(d.metadata.annotations or {}).get(REVISION_ANNOTATION))
        for d in client.AppsV1Api(api).list_namespaced_deployment(namespace).items}


def _identity(frame: Any) -> str:
    return f"{frame.function} ({frame.file_path_short}:{frame.line_no})"


def _pyinstrument_top(session: Any, wall: float, limit: int) -> tuple[list[tuple[str, float, float]],
                                                                      list[tuple[str, float, float]]]:
    """Own time per function (pyinstrument's synthetic `[self]` leaves credited to their parent), and
    inclusive time per operator function (`understudy/...`), recursion counted once."""
    own: dict[str, float] = defaultdict(float)
    inclusive: dict[str, float] = defaultdict(float)
    stack: list[tuple[Any, frozenset[str]]] = [(session.root_frame(), frozenset())]
    while stack:
        frame, above = stack.pop()
        if frame is None:
            continue
        if frame.is_synthetic:
            if frame.parent is not None:
                own[_identity(frame.parent)] += frame.time
            continue
        ident = _identity(frame)
        if "understudy/" in (frame.file_path_short or "") and ident not in above:
            inclusive[ident] += frame.time
        stack.extend((child, above | {ident}) for child in frame.children)

    def ranked(table: dict[str, float]) -> list[tuple[str, float, float]]:
        rows = sorted(table.items(), key=lambda kv: -kv[1])[:limit]
        return [(name, seconds, seconds / wall if wall else 0.0) for name, seconds in rows]

    return ranked(own), ranked(inclusive)


def _cprofile_top(profile: cProfile.Profile, wall: float, limit: int) -> list[tuple[str, float, float]]:
    stats = pstats.Stats(profile, stream=io.StringIO())
    rows = []
    for (filename, line, function), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        short = "/".join(filename.split("/")[-2:])
        rows.append((f"{function} ({short}:{line})", tottime, tottime / wall if wall else 0.0))
    return sorted(rows, key=lambda r: -r[1])[:limit]


def run(st: Stack, namespace: str, warm_cycles: int = 2, limit: int = 12) -> ProfileResult:
    from kubernetes import client

    from understudy.audit.events import EventRecorder
    from understudy.controller.handlers import GC_THRESHOLDS
    from understudy.audit.metrics import OperatorMetrics
    from understudy.controller.evaluator import Evaluator
    from understudy.signals.reader import SignalReader

    try:
        import pyinstrument
        profiler_name = f"pyinstrument {pyinstrument.__version__}"
    except ImportError:
        pyinstrument = None  # type: ignore[assignment]
        profiler_name = "cProfile (pyinstrument is not installed)"

    thresholds = gc.get_threshold()
    api = st.pooled_client(8)
    reader = SignalReader(st.prometheus.url, timeout=5.0)
    try:
        snapshots, deployments = _snapshots(api, namespace), _deployments(api, namespace)
        metrics = OperatorMetrics()
        evaluator = Evaluator(api, reader, EventRecorder(client.EventsV1Api(api), instance="bench-profile",
                                                         metrics=metrics), metrics)
        result = ProfileResult(profiler_name, len(snapshots))
        result.say(f"== Profile of Evaluator.cycle over {len(snapshots):,} policies ({profiler_name})")
        now = (time.time() // 5.0 + 1) * 5.0  # on the 5 s grid, so every policy is due in every cycle below
        gc.set_threshold(*GC_THRESHOLDS)  # the operator's own, so collections cost what they cost there
        for i in range(warm_cycles + 1):
            name = "cold cycle (fresh runtimes)" if i == 0 else f"steady cycle {i}"
            at = now + i * 5.0  # every policy due again (interval 5 s)
            if pyinstrument is not None:
                prof = pyinstrument.Profiler(interval=0.001)
                prof.start()
                t0 = time.perf_counter()
                report = evaluator.cycle(snapshots, deployments, at)
                wall = time.perf_counter() - t0
                session = prof.stop()
                top, inclusive = _pyinstrument_top(session, wall, limit)
                tree = prof.output_text(unicode=False, color=False, show_all=False)
            else:
                cp = cProfile.Profile()
                t0 = time.perf_counter()
                cp.enable()
                report = evaluator.cycle(snapshots, deployments, at)
                cp.disable()
                wall = time.perf_counter() - t0
                top, inclusive, tree = _cprofile_top(cp, wall, limit), [], ""
            phase = Phase(name, wall, report, top=top, inclusive=inclusive, tree=tree)
            result.phases.append(phase)
            result.say(f"  {name}: {wall:.2f} s wall; {report.evaluated} evaluated, {report.queries} queries, "
                       f"{report.status_writes} status writes, {report.routing_writes} routing writes, "
                       f"{report.events} events")
            for fn, seconds, share in top[:8]:
                result.say(f"      own {share * 100:5.1f}%  {seconds:6.3f} s  {fn}")
            for fn, seconds, share in inclusive[:10]:
                result.say(f"      incl {share * 100:5.1f}%  {seconds:6.3f} s  {fn}")
        evaluator.close()
        return result
    finally:
        gc.set_threshold(*thresholds)
        reader.close()
        api.close()
