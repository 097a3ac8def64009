"""`understudy backtest`: load a policy, read its signals' history, replay it, report.

Exit status: 0 with a report, 1 when Prometheus could not answer, 2 for a bad policy or arguments.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Iterator, TextIO

import yaml
from pydantic import ValidationError

from understudy.api import API_VERSION, KIND, FallbackPolicy
from understudy.api.convert import to_engine_capacities
from understudy.api.errors import describe
from understudy.backtest.cluster import Step, assumptions
from understudy.backtest.render import Context, ProgressLine, plot, table, to_json
from understudy.backtest.replay import backtest_policy, replay, summarise
from understudy.backtest.source import PrometheusHistory, SourceError, parse_span, parse_step, parse_time, step_times
from understudy.cli import PROMETHEUS_ENV, cli_prometheus_url, prometheus_credentials
from understudy.controller.compile import compile_policy
from understudy.controller.store import PolicySnapshot
from understudy.signals.endpoints import redact

OWN_URL_NOTE = ("the policy names its own Prometheus (spec.signals.prometheusURL); these figures come from the "
                "operator's: pass --prometheus to read another")

PROGRESS_EVERY = 500
"""Replayed steps between two progress updates (a bar update per step would cost more than the step)."""


class UsageError(ValueError):
    """Bad arguments or policy: exit status 2."""


def load_policy(path: str) -> tuple[dict[str, Any], FallbackPolicy]:
    """The one FallbackPolicy document in `path` (other kinds are skipped), validated as the API server would."""
    try:
        documents = [d for d in yaml.safe_load_all(Path(path).read_text()) if isinstance(d, dict)]
    except (OSError, yaml.YAMLError) as error:
        raise UsageError(f"{path}: cannot be read: {error}") from None
    policies = [d for d in documents if d.get("apiVersion") == API_VERSION and d.get("kind") == KIND]
    if len(policies) != 1:
        raise UsageError(f"{path}: expected exactly one {KIND} ({API_VERSION}), found {len(policies)}")
    try:
        return policies[0], FallbackPolicy.model_validate(policies[0])
    except ValidationError as error:
        raise UsageError(f"{path}: {KIND} is invalid:\n  " + "\n  ".join(describe(error))) from None


def run(args: argparse.Namespace, out: TextIO, err: TextIO, now: float | None = None) -> int:
    try:
        return _run(args, out, err, time.time() if now is None else now)
    except UsageError as error:
        print(f"understudy backtest: {error}", file=err)
        return 2
    except SourceError as error:
        print(f"understudy backtest: {error}", file=err)
        return 1


def _run(args: argparse.Namespace, out: TextIO, err: TextIO, now: float) -> int:
    document, validated = load_policy(args.filename)
    metadata = document.get("metadata") or {}
    namespace = args.namespace or metadata.get("namespace") or "default"
    name = str(metadata.get("name", "<unnamed>"))
    compiled = compile_policy(PolicySnapshot.of(
        namespace=namespace, name=name, uid="", generation=0, resource_version="",
        spec=document.get("spec") or {}, status={},
    ))
    url = cli_prometheus_url(args)
    if not url:
        raise UsageError(f"no Prometheus: pass --prometheus or set {PROMETHEUS_ENV} to the operator's Prometheus")
    try:
        end = parse_time(args.end, now)
        start = end - parse_span(args.since) if args.since else parse_time(args.start, now)
        step = parse_step(args.step) if args.step else compiled.interval
        times = step_times(start, end, step)
        approval_delay = parse_span(args.approval_delay)
    except ValueError as error:
        raise UsageError(str(error)) from None
    policy, notes = backtest_policy(compiled.policy, step, approval_delay)
    target = replace(compiled.target, policy=policy)
    capacities = to_engine_capacities(validated.spec)

    try:
        credentials = prometheus_credentials(args)
    except ValueError as error:
        raise UsageError(str(error)) from None
    source = PrometheusHistory(url, timeout=args.timeout, credentials=credentials)
    progress = ProgressLine(source.requests_needed(target, times) + len(times), "backtest",
                            enabled=not args.quiet and err.isatty(), stream=err)
    try:
        history = source.read(target, times, progress)
        result = replay(policy, _counted(history.steps(), progress), step, compiled.drills, capacities,
                        approval_delay)
    finally:
        progress.close()
        source.close()

    notes += assumptions(policy, capacities, compiled.drills, history.readiness_known)
    if compiled.target.prometheus_url and not args.prometheus:
        notes = (*notes, OWN_URL_NOTE)
    context = Context(namespace, name, redact(url), history.requests, history.readiness_known, notes)
    summary = summarise(result)
    if args.plot:
        plot(result, context, args.plot)
        print(f"plot written to {args.plot}", file=err)
    if args.json:
        json.dump(to_json(summary, context), out, indent=2)
        out.write("\n")
    else:
        out.write(table(summary, context))
    return 0


def _counted(steps: Iterable[Step], progress: ProgressLine) -> Iterator[Step]:
    pending = 0
    for item in steps:
        yield item
        pending += 1
        if pending == PROGRESS_EVERY:
            progress(pending)
            pending = 0
    progress(pending)
