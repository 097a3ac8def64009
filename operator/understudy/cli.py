"""The `understudy` command.

One `add_<command>` function registers each subcommand's arguments and one `<command>` function runs it
and returns the exit status, so `run` and `backtest` slot in beside `validate` without touching it.
"""
from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import yaml
from pydantic import ValidationError

from understudy.api import API_VERSION, KIND, FallbackPolicy
from understudy.api.errors import describe

GROUP = API_VERSION.split("/")[0]
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")

Subparsers = argparse._SubParsersAction  # the type argparse gives add_subparsers(); private but stable

PROMETHEUS_ENV = "UNDERSTUDY_PROMETHEUS_URL"
PROMETHEUS_HELP = (f"Prometheus base URL (default: ${PROMETHEUS_ENV}, the operator's Prometheus; never the policy's "
                   "own spec.signals.prometheusURL, which only this flag can choose)")


def cli_prometheus_url(args: argparse.Namespace) -> str | None:
    """The Prometheus `report` and `backtest` read: the flag, else the operator's (the environment)."""
    import os

    return args.prometheus or os.environ.get(PROMETHEUS_ENV) or None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="understudy",
        description="Model fallback for Kubernetes inference: audited, and rolled back when it creeps.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_validate(subparsers)
    add_backtest(subparsers)
    add_run(subparsers)
    add_report(subparsers)
    add_version(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    status: int = args.func(args)
    return status


# ---- backtest ------------------------------------------------------------------------------------


def add_backtest(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "backtest",
        help="replay a policy over Prometheus history: what would it have done?",
        description=(
            "Read the policy's signals over a time range from Prometheus (the operator's own PromQL, as range "
            "queries) and replay them through the operator's decision engine. Reports fallback activations, "
            "time per tier, transitions, the triggers that fired, the creep budget and the audit timeline. "
            "Times are RFC 3339, Unix seconds, now, or relative to now (-7d, now-1h)."
        ),
    )
    parser.add_argument("-f", "--filename", required=True, metavar="PATH",
                        help="a manifest holding one FallbackPolicy")
    parser.add_argument("--prometheus", metavar="URL", help=PROMETHEUS_HELP)
    since = parser.add_mutually_exclusive_group(required=True)
    since.add_argument("--start", metavar="TIME", help="start of the range")
    since.add_argument("--since", metavar="DURATION", help="range length before --end, e.g. 7d")
    parser.add_argument("--end", default="now", metavar="TIME", help="end of the range (default: now)")
    parser.add_argument("--step", metavar="DURATION",
                        help="time between evaluations (default: the policy's evaluation.interval)")
    parser.add_argument("-n", "--namespace", help="the policy's namespace (default: its metadata, else default)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--plot", metavar="PNG", help="also draw signals, thresholds and active tier to PNG")
    parser.add_argument("--approval-delay", default="0s", metavar="DURATION",
                        help="with evaluation.restoreApproval Manual: how long after a restore falls due a person "
                             "is taken to approve it (default: 0s, at once)")
    parser.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                        help="timeout of each Prometheus request (default: 30)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress display on stderr")
    add_prometheus_credentials(parser, "The same settings as the operator's, for its Prometheus.")
    # Relative times such as `--start -7d` start with "-": let this parser read them as values, the way
    # argparse already reads negative numbers (it has no option that looks like one).
    parser._negative_number_matcher = re.compile(r"^-[0-9]")
    parser.set_defaults(func=backtest)


def backtest(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Print the backtest report; exit 1 when Prometheus fails, 2 for a bad policy or arguments."""
    from understudy.backtest.command import run  # imported here: `validate` needs none of its dependencies

    return run(args, out or sys.stdout, sys.stderr)


# ---- report --------------------------------------------------------------------------------------


def _name_matching(pattern: str, what: str) -> Any:
    """An argparse type that accepts only a Prometheus name, so no flag can change the PromQL around it."""
    def check(text: str) -> str:
        if not re.fullmatch(pattern, text):
            raise argparse.ArgumentTypeError(f"not a Prometheus {what}: {text!r}")
        return text
    return check


def _quantile(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError("quantile must be strictly between 0 and 1")
    return value


def add_report(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "report",
        help="how a FallbackPolicy has fared: activations, time in fallback, latency, quality, creep",
        description=(
            "Read a FallbackPolicy's status from the API server (KUBECONFIG, like kubectl) and its tiers' metrics "
            "from Prometheus, and report over a window: fallback activations, time in fallback, latency gained "
            "while in fallback, mean prediction confidence per tier, creep budget used, the last known good "
            "revision, the last drill, and the fallback share per request segment."
        ),
    )
    parser.add_argument("name", metavar="NAME", help="the FallbackPolicy")
    parser.add_argument("-n", "--namespace", help="its namespace (default: the kubeconfig context's, else default)")
    parser.add_argument("--prometheus", metavar="URL", help=PROMETHEUS_HELP)
    parser.add_argument("--since", default="24h", metavar="DURATION", help="window length, e.g. 7d (default: 24h)")
    parser.add_argument("--end", default="now", metavar="TIME",
                        help="end of the window: RFC 3339, Unix seconds, now, or relative like -1h (default: now)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--segment-label", type=_name_matching(r"[a-zA-Z_][a-zA-Z0-9_]*", "label name"),
                        metavar="LABEL", help="a label of the request metric to break the fallback share down by")
    parser.add_argument("--confidence-metric", default="model_prediction_confidence",
                        type=_name_matching(r"[a-zA-Z_:][a-zA-Z0-9_:]*", "metric name"), metavar="METRIC",
                        help="histogram of prediction confidence, labelled workload and namespace "
                             "(default: model_prediction_confidence)")
    parser.add_argument("--quantile", type=_quantile, default=0.99, help="latency quantile (default: 0.99)")
    parser.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                        help="timeout of each Prometheus request (default: 30)")
    add_prometheus_credentials(parser, "The same settings as the operator's, for its Prometheus.")
    parser._negative_number_matcher = re.compile(r"^-[0-9]")  # `--end -1h`, as in backtest
    parser.set_defaults(func=report)


def report(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Print the report; exit 1 when the policy or Prometheus cannot be read, 2 for bad arguments."""
    from understudy.report.command import run as run_report  # kubernetes is imported only when needed

    return run_report(args, out or sys.stdout, sys.stderr)


# ---- end of report -------------------------------------------------------------------------------


# ---- validate ------------------------------------------------------------------------------------


def add_validate(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check FallbackPolicy manifests offline, with the API server's rules, and show their PromQL",
        description=(
            "Check FallbackPolicy documents against the same rules the CRD enforces, and print the PromQL each "
            "trigger of a valid policy will run (as the operator batches it, for the policy's namespace, custom "
            "queries held to it). Documents of other API groups in the same files are skipped. Exit status 1 "
            "when any policy is invalid."
        ),
    )
    parser.add_argument(
        "-f", "--filename", action="append", required=True, metavar="PATH",
        help="a manifest file (several documents allowed), a directory of them, or - for stdin; repeatable",
    )
    parser.set_defaults(func=validate)


def validate(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Print one OK line per valid policy and every problem of each invalid one."""
    out = out or sys.stdout
    failed = False
    for where, document, problem in _documents(args.filename):
        if problem:
            print(f"{where}: cannot be read: {problem}", file=out)
            failed = True
            continue
        if not isinstance(document, dict):
            print(f"{where}: not a Kubernetes object", file=out)
            failed = True
            continue
        if str(document.get("apiVersion", "")).split("/")[0] != GROUP:
            continue
        name = _display_name(document)
        try:
            policy = FallbackPolicy.model_validate(document)
        except ValidationError as error:
            failed = True
            print(f"{where}: {KIND} {name} is invalid:", file=out)
            for line in describe(error):
                print(f"  {line}", file=out)
        else:
            print(f"{where}: {KIND} {name} OK", file=out)
            for line in _queries(policy, document):
                print(f"  {line}", file=out)
    return 1 if failed else 0


def _queries(policy: FallbackPolicy, document: dict[str, Any]) -> Iterator[str]:
    """What each trigger reads, as the operator plans it: the PromQL and the request count that gates it."""
    from understudy.controller.compile import compile_policy
    from understudy.controller.store import PolicySnapshot
    from understudy.signals.promql import plan_queries, trigger_reads

    namespace = str(policy.metadata.get("namespace") or "default")
    compiled = compile_policy(PolicySnapshot.of(namespace, _display_name(document), "", 0, "", document["spec"], {}))
    reads = trigger_reads(plan_queries([compiled.target]), compiled.target.key)
    kinds = {t.name: t.kind for t in policy.spec.triggers}
    for trigger, tiers in reads.items():
        distinct = {(r.query, r.count_query, r.from_deployment) for r in tiers.values()}
        for tier, read in tiers.items() if len(distinct) > 1 else [("", next(iter(tiers.values())))]:
            on = f" on {tier}" if tier else ""
            if read.from_deployment:
                yield f"{trigger} ({kinds[trigger]}){on}: read from the tier's Deployment, not from Prometheus"
            elif read.query is None:
                yield f"{trigger} ({kinds[trigger]}){on}: not read (refused, reads as missing data)"
            else:
                yield f"{trigger} ({kinds[trigger]}){on}: {read.query}"
                if read.count_query:
                    yield f"  unless fewer than {read.min_requests} requests in the window: {read.count_query}"


def _display_name(document: dict[str, Any]) -> str:
    metadata = document.get("metadata") if isinstance(document.get("metadata"), dict) else {}
    name = str(metadata.get("name", "<unnamed>"))
    return f"{metadata['namespace']}/{name}" if metadata.get("namespace") else name


def _manifest_files(paths: Sequence[str]) -> Iterator[str]:
    """Files in the order given; a directory contributes its manifests, sorted."""
    for path in paths:
        p = Path(path)
        if path != "-" and p.is_dir():
            yield from sorted(str(f) for f in p.iterdir() if f.suffix in MANIFEST_SUFFIXES)
        else:
            yield path


def _documents(paths: Sequence[str]) -> Iterator[tuple[str, object, str]]:
    """(where, document, read problem): `where` is the file, with "#n" when it holds several documents."""
    for path in _manifest_files(paths):
        source = "<stdin>" if path == "-" else path
        try:
            text = sys.stdin.read() if path == "-" else Path(path).read_text()
            documents = [d for d in yaml.safe_load_all(text) if d is not None]
        except (OSError, yaml.YAMLError) as error:
            yield source, None, str(error)
            continue
        for i, document in enumerate(documents, start=1):
            yield (f"{source}#{i}" if len(documents) > 1 else source), document, ""


# ---- version -------------------------------------------------------------------------------------


def add_version(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "version", help="print the operator's version",
        description="Print the version of this `understudy` (the image tag and chart appVersion it ships as).")
    parser.set_defaults(func=print_version)


def print_version(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from understudy.version import PYTHON_VERSION, VERSION

    print(f"understudy {VERSION} (Python {PYTHON_VERSION})", file=out or sys.stdout)
    return 0


# ---- run -----------------------------------------------------------------------------------------


def add_run(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run the operator (in a pod, or against KUBECONFIG)",
        description="Watch FallbackPolicies, read their signals from Prometheus, and route traffic between tiers.",
    )
    parser.add_argument("--prometheus-url", required=True, type=_prometheus_url,
                        help="the Prometheus that holds the signals (no user name or password: see the auth flags)")
    parser.add_argument("--namespace", action="append", default=[], metavar="NS",
                        help="watch this namespace; repeatable; none means every namespace")
    parser.add_argument("--query-timeout", type=_positive, default=2.0, metavar="SECONDS",
                        help="timeout of each PromQL query (default 2)")
    add_prometheus_access(parser)
    parser.add_argument("--metrics-port", type=int, default=8080, help="port of /metrics; 0 turns it off")
    parser.add_argument("--metrics-address", default="0.0.0.0", help="address /metrics listens on")
    parser.add_argument("--liveness-port", type=int, default=0, help="port of /healthz; 0 turns it off")
    parser.add_argument("--liveness-address", default="0.0.0.0", help="address /healthz listens on")
    parser.add_argument("--stall-seconds", type=_positive, default=60.0, metavar="SECONDS",
                        help="/healthz fails once the evaluation loop has not come round for this long (default 60)")
    parser.add_argument("--api-timeout", type=_positive, default=10.0, metavar="SECONDS",
                        help="timeout of every Kubernetes API call the operator makes (default 10)")
    parser.add_argument("--leader-election", action="store_true",
                        help="take a coordination.k8s.io Lease before acting (for more than one replica)")
    parser.add_argument("--lease-name", default="understudy-leader")
    parser.add_argument("--lease-namespace", default="default")
    parser.add_argument("--identity", default=None, help="this replica's name in the Lease (default: host name)")
    parser.add_argument("--confine-custom-promql", action=argparse.BooleanOptionalAction, default=True,
                        help="hold every selector of a custom query to its policy's namespace (default: on; "
                             "turn off only where one team writes every policy)")
    parser.add_argument("--custom-promql-namespace-label", type=_name_matching(r"[a-zA-Z_][a-zA-Z0-9_]*", "label name"),
                        default=None, metavar="LABEL",
                        help="the label that carries a series' namespace, for every policy (default: each "
                             "policy's spec.signals.namespaceLabel)")
    parser.set_defaults(func=run)


def _prometheus_url(text: str) -> str:
    from understudy.signals.endpoints import parse_url

    try:
        parse_url(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not a usable Prometheus URL: {error}") from None
    return text


def _positive(text: str) -> float:
    value = float(text)
    if not 0.0 < value < float("inf"):
        raise argparse.ArgumentTypeError("must be a positive number")
    return value


def _byte_count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _header(text: str) -> tuple[str, str]:
    name, colon, value = text.partition(":")
    if not colon or not name.strip():
        raise argparse.ArgumentTypeError(f"a header is NAME:VALUE, got {text!r}")
    return name.strip(), value.strip()


def add_prometheus_access(parser: argparse.ArgumentParser) -> None:
    """Flags that bound what the operator sends to Prometheus servers and how it proves who it is."""
    group = parser.add_argument_group(
        "Prometheus endpoints and limits", "Who may be asked, and how much an answer may cost.")
    group.add_argument("--policy-prometheus-urls", choices=("deny", "allowlist", "any"), default="deny",
                       help="a policy's own spec.signals.prometheusURL: refused (default), allowed from "
                            "--allowed-prometheus-url, or any URL without credentials, query or fragment")
    group.add_argument("--allowed-prometheus-url", action="append", default=[], metavar="URL",
                       type=_prometheus_url,
                       help="with --policy-prometheus-urls=allowlist: scheme://host[:port][/path-prefix] a policy "
                            "may name (same scheme, host and port; its path or below); repeatable")
    group.add_argument("--policy-query-timeout", type=_positive, default=1.0, metavar="SECONDS",
                       help="time for a whole read of one policy's own Prometheus (default 1)")
    group.add_argument("--max-answer-bytes", type=_byte_count, default=8 << 20, metavar="BYTES",
                       help="largest answer to a batched built-in query (default 8388608)")
    group.add_argument("--max-custom-answer-bytes", type=_byte_count, default=64 << 10, metavar="BYTES",
                       help="largest answer to a custom query (default 65536)")
    add_prometheus_credentials(parser, "Sent to --prometheus-url only, never to a policy's own URL.")


def add_prometheus_credentials(parser: argparse.ArgumentParser, description: str) -> None:
    auth = parser.add_argument_group("Prometheus authentication", description)
    auth.add_argument("--prometheus-bearer-token-file", metavar="PATH", help="a file holding a bearer token")
    auth.add_argument("--prometheus-username", metavar="NAME", help="basic auth user name")
    auth.add_argument("--prometheus-password-file", metavar="PATH", help="a file holding the basic auth password")
    auth.add_argument("--prometheus-ca-file", metavar="PATH", help="CA bundle that signed the server's certificate")
    auth.add_argument("--prometheus-cert-file", metavar="PATH", help="client certificate (PEM)")
    auth.add_argument("--prometheus-key-file", metavar="PATH", help="the client certificate's key (PEM)")
    auth.add_argument("--prometheus-header", action="append", default=[], type=_header, metavar="NAME:VALUE",
                      help="an extra request header, e.g. X-Scope-OrgID:team-a; repeatable")


def prometheus_credentials(args: argparse.Namespace) -> Any:
    """The Credentials the auth flags name, or None; ValueError for settings that contradict each other."""
    from understudy.signals.transport import Credentials

    credentials = Credentials(
        bearer_token_file=args.prometheus_bearer_token_file, username=args.prometheus_username,
        password_file=args.prometheus_password_file, ca_file=args.prometheus_ca_file,
        cert_file=args.prometheus_cert_file, key_file=args.prometheus_key_file,
        headers=tuple(args.prometheus_header))
    return None if credentials == Credentials() else credentials


def prometheus_access(args: argparse.Namespace) -> Any:
    """The reader's PrometheusAccess from the flags; ValueError for settings that contradict each other."""
    from understudy.signals.endpoints import EndpointPolicy
    from understudy.signals.reader import PrometheusAccess

    return PrometheusAccess(
        policy_urls=EndpointPolicy.of(args.policy_prometheus_urls, args.allowed_prometheus_url),
        credentials=prometheus_credentials(args),
        max_answer_bytes=args.max_answer_bytes, max_custom_answer_bytes=args.max_custom_answer_bytes,
        policy_timeout=args.policy_query_timeout)


def run(args: argparse.Namespace) -> int:
    import logging
    import socket

    from understudy.controller.handlers import OperatorConfig
    from understudy.controller.handlers import run as run_operator
    from understudy.signals.confine import Confinement

    try:
        access = prometheus_access(args)
    except ValueError as error:
        print(f"understudy run: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = OperatorConfig(
        prometheus_url=args.prometheus_url,
        query_timeout=args.query_timeout,
        access=access,
        metrics_port=args.metrics_port or None,
        metrics_address=args.metrics_address,
        leader_election=args.leader_election,
        lease_name=args.lease_name,
        lease_namespace=args.lease_namespace,
        identity=args.identity or socket.gethostname(),
        confinement=Confinement(args.confine_custom_promql, args.custom_promql_namespace_label),
        api_timeout=args.api_timeout,
        stall_seconds=args.stall_seconds,
    )
    run_operator(config, args.namespace, liveness_port=args.liveness_port or None,
                 liveness_address=args.liveness_address)
    return 0
