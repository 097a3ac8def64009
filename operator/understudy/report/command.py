"""`understudy report`: read a FallbackPolicy from the API server and its figures from Prometheus, and print.

Exit status: 0 with a report; 1 when the policy cannot be read, or Prometheus failed (the figures that need
it are then printed as unknown); 2 for bad arguments or a spec the models reject.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from typing import Any, Mapping, TextIO

from pydantic import ValidationError

from understudy.api.errors import describe
from understudy.backtest.command import OWN_URL_NOTE
from understudy.backtest.source import PrometheusHistory, SourceError, parse_span, parse_time
from understudy.cli import PROMETHEUS_ENV, cli_prometheus_url, prometheus_credentials
from understudy.controller.compile import compile_policy
from understudy.controller.store import GROUP, PLURAL, VERSION, PolicySnapshot
from understudy.report.assemble import QueryAnswer, ReportInputs, TierRef, assemble, plan_queries
from understudy.report.render import table, to_json
from understudy.signals.endpoints import redact
from understudy.signals.transport import Credentials


class ReportError(RuntimeError):
    """The report cannot be made at all; `status` is the exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class PrometheusInstant(PrometheusHistory):
    """The backtest's Prometheus reader (same client, timeout and error rule), asked instant queries."""

    def instant(self, query: str, at: float) -> list[dict[str, Any]]:
        params = {"time": f"{at:.3f}", "timeout": f"{self.timeout:g}"}
        try:
            result: list[dict[str, Any]] = self._client.custom_query(query, params=params, timeout=self.timeout)
        except Exception as exc:  # connection, timeout, HTTP or PromQL error: the figure is unknown
            raise SourceError(f"query failed at {redact(self.url)}: {exc}\n  query: {query}") from exc
        return result


def _kubernetes(namespace: str | None) -> tuple[Any, str]:
    """An API client from KUBECONFIG (else in-cluster), and the namespace: the flag, the context's, or default."""
    from kubernetes import config
    from kubernetes.config.config_exception import ConfigException

    path = os.environ.get("KUBECONFIG") or None  # read now: the library reads it once, at import
    try:
        api = config.new_client_from_config(config_file=path)
        if namespace is None:
            _, active = config.list_kube_config_contexts(config_file=path)
            namespace = (active or {}).get("context", {}).get("namespace")
    except (ConfigException, OSError) as kube_error:
        try:
            config.load_incluster_config()
        except ConfigException:
            raise ReportError(f"no Kubernetes configuration: {kube_error}", 1) from None
        from kubernetes.client import ApiClient

        api = ApiClient()
    return api, namespace or "default"


def read_policy(name: str, namespace: str | None) -> dict[str, Any]:
    """The FallbackPolicy object as the API server holds it (spec, status and metadata)."""
    from kubernetes.client import CustomObjectsApi
    from kubernetes.client.exceptions import ApiException

    api, namespace = _kubernetes(namespace)
    try:
        obj: dict[str, Any] = CustomObjectsApi(api).get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name)
    except ApiException as error:
        if error.status == 404:
            raise ReportError(f"fallbackpolicy {namespace}/{name} not found", 1) from None
        raise ReportError(f"cannot read fallbackpolicy {namespace}/{name}: {error.status} {error.reason}", 1) from None
    except Exception as error:  # connection refused, TLS: nothing to report on
        raise ReportError(f"cannot reach the API server: {error}", 1) from None
    finally:
        api.close()
    return obj


def build_inputs(obj: Mapping[str, Any], args: argparse.Namespace, now: float) -> tuple[ReportInputs, str | None]:
    """The report's inputs and the Prometheus URL: the flag, else the operator's (never the policy's own, which
    a tenant chose: an admin's report must not send requests there unasked)."""
    metadata = obj.get("metadata") or {}
    namespace, name = str(metadata.get("namespace", "default")), str(metadata.get("name", ""))
    try:
        compiled = compile_policy(PolicySnapshot.of(namespace=namespace, name=name, uid="", generation=0,
                                                 resource_version="", spec=obj.get("spec") or {}, status={}))
    except ValidationError as error:
        raise ReportError(f"{namespace}/{name}: the spec is invalid:\n  " + "\n  ".join(describe(error)), 2) from None
    try:
        end = parse_time(args.end, now)
        start = end - parse_span(args.since)
        created = parse_time(metadata["creationTimestamp"], now) if metadata.get("creationTimestamp") else None
    except ValueError as error:
        raise ReportError(str(error), 2) from None
    if start >= end:
        raise ReportError("--since must be longer than zero", 2)
    inputs = ReportInputs(
        namespace=namespace, name=name,
        tiers=tuple(TierRef(t.name, t.deployment) for t in compiled.policy.tiers),
        status=obj.get("status") or {},
        metrics=compiled.target.metrics,
        max_fallback_ratio=compiled.policy.creep_max_ratio,
        creep_window=compiled.policy.creep_window,
        evaluation_window=compiled.target.window,
        start=start, end=end, created=created,
        confidence_metric=args.confidence_metric,
        segment_label=args.segment_label,
        quantile=args.quantile,
    )
    return inputs, cli_prometheus_url(args)


def read_answers(inputs: ReportInputs, url: str, timeout: float,
                 credentials: Credentials | None = None) -> tuple[dict[str, QueryAnswer], str | None]:
    """Every planned query's answer; after the first failure the rest are not sent (None: not known)."""
    answers: dict[str, QueryAnswer] = {}
    try:
        source = PrometheusInstant(url, timeout=timeout, credentials=credentials)
    except SourceError as error:
        return answers, str(error)
    try:
        for key, query in plan_queries(inputs).items():
            answers[key] = source.instant(query.promql, query.at)
    except SourceError as error:
        return answers, str(error)
    finally:
        source.close()
    return answers, None


def run(args: argparse.Namespace, out: TextIO, err: TextIO, now: float | None = None) -> int:
    try:
        try:
            credentials = prometheus_credentials(args)
        except ValueError as error:
            raise ReportError(str(error), 2) from None
        obj = read_policy(args.name, args.namespace)
        inputs, url = build_inputs(obj, args, time.time() if now is None else now)
    except ReportError as error:
        print(f"understudy report: {error}", file=err)
        return error.status
    failure: str | None = None
    answers: dict[str, QueryAnswer] = {}
    if url:
        answers, failure = read_answers(inputs, url, args.timeout, credentials)
    report = assemble(inputs, answers)
    notes = list(report.notes)
    if not url:
        notes.insert(0, f"no Prometheus (pass --prometheus or set {PROMETHEUS_ENV}): "
                        "latency, confidence and segments are unknown")
    if ((obj.get("spec") or {}).get("signals") or {}).get("prometheusURL") and not args.prometheus:
        notes.insert(0, OWN_URL_NOTE)
    if failure:
        notes.insert(0, f"Prometheus failed, figures that need it are unknown: {failure.splitlines()[0]}")
    report = replace(report, notes=tuple(notes))
    shown = redact(url) if url else None
    if args.json:
        json.dump(to_json(report, shown), out, indent=2)
        out.write("\n")
    else:
        out.write(table(report, shown))
    if failure:
        print(f"understudy report: {failure}", file=err)
        return 1
    return 0
