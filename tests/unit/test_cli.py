"""`understudy validate`: the model's messages in human words, and an exit status scripts can trust."""
from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.corpus import INVALID, ROOT, VALID
from understudy.cli import build_parser, main, validate


def run_validate(*paths: str) -> tuple[int, str]:
    out = io.StringIO()
    status = validate(build_parser().parse_args(["validate", *(a for p in paths for a in ("-f", p))]), out)
    return status, out.getvalue()


def test_valid_policy_prints_one_ok_line_then_what_each_trigger_reads() -> None:
    status, output = run_validate(str(VALID[0].path))
    assert status == 0
    first, *reads = output.splitlines()
    assert first == f"{VALID[0].path}: FallbackPolicy {VALID[0].document['metadata']['name']} OK"
    assert reads and all(line.startswith("  ") for line in reads)


def test_validate_prints_the_promql_of_each_trigger() -> None:
    status, output = run_validate(str(next(c for c in VALID if c.path.stem == "vllm-llm-triggers").path))
    assert status == 0
    lines = output.splitlines()
    assert ('  ttft (timeToFirstToken): 1000 * histogram_quantile(0.99, sum by (le, namespace, workload) (rate('
            'vllm:time_to_first_token_seconds_bucket{namespace=~"default", workload=~"llm-large|llm-small"}[60s])))'
            ) in lines
    assert ('  queue (queueDepth): avg by (namespace, workload) (vllm:num_requests_waiting{namespace=~"default", '
            'workload=~"llm-large|llm-small"})') in lines
    gate = ('    unless fewer than 3 requests in the window: sum by (namespace, workload) (increase('
            'vllm:request_success_total{namespace=~"default", workload=~"llm-large|llm-small"}[60s]))')
    assert lines[lines.index(next(x for x in lines if x.startswith("  ttft"))) + 1] == gate
    assert lines[lines.index(next(x for x in lines if x.startswith("  queue"))) + 1].startswith("  kv-cache")


def test_invalid_policy_prints_its_problem_and_fails() -> None:
    case = next(c for c in INVALID if c.path.stem == "fallback-named-primary")
    status, output = run_validate(str(case.path))
    assert status == 1
    assert "FallbackPolicy fallback-named-primary is invalid:" in output
    assert '  spec.fallbacks[0].name: the name "primary" is reserved for the primary tier' in output


def test_whole_corpus_directories() -> None:
    status, output = run_validate(str(ROOT / "valid"))
    assert status == 0 and output.count(" OK\n") == len(VALID)
    status, output = run_validate(str(ROOT / "valid"), str(ROOT / "invalid"))
    assert status == 1
    assert output.count(" OK\n") == len(VALID)
    assert output.count(" is invalid:\n") == len(INVALID)
    for case in INVALID:
        assert case.expect in output


def test_several_documents_in_one_file_and_other_kinds_skipped(tmp_path: Path) -> None:
    manifest = tmp_path / "bundle.yaml"
    deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: recommender-large}\n"
    manifest.write_text("---\n".join([VALID[0].path.read_text(), deployment, INVALID[0].path.read_text()]))
    status, output = run_validate(str(manifest))
    assert status == 1
    lines = [line for line in output.splitlines() if not line.startswith("  ")]
    assert lines == [
        f"{manifest}#1: FallbackPolicy {VALID[0].document['metadata']['name']} OK",
        f"{manifest}#3: FallbackPolicy {INVALID[0].document['metadata']['name']} is invalid:",
    ]


def test_unreadable_input_fails(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("spec: [unclosed\n")
    status, output = run_validate(str(tmp_path / "missing.yaml"), str(broken))
    assert status == 1
    assert output.count("cannot be read") == 2


def test_a_command_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([])
    assert exit_.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


@pytest.mark.parametrize(
    "command",
    [[str(Path(sys.executable).with_name("understudy"))], [sys.executable, "-m", "understudy"]],
    ids=["console-script", "python-m"],
)
def test_installed_command_reads_stdin(command: list[str]) -> None:
    case = next(c for c in INVALID if c.path.stem == "recover-before-trip")
    done = subprocess.run(
        [*command, "validate", "-f", "-"],
        input=case.path.read_text(), capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert done.stdout.startswith("<stdin>: FallbackPolicy recover-before-trip is invalid:")
    assert case.expect in done.stdout


def test_promql_that_does_not_parse_is_reported_with_the_parsers_message(tmp_path: Path) -> None:
    """The CRD cannot parse PromQL, so `validate` (and the operator, through the same models) does."""
    case = next(c for c in VALID if c.path.stem == "query-above-cost")
    manifest = tmp_path / "policy.yaml"
    manifest.write_text(case.path.read_text().replace("[5m]))", "[5m])"))
    status, output = run_validate(str(manifest))
    assert status == 1
    assert ("  spec.triggers[0].query.promql: query.promql is not valid PromQL: unclosed left parenthesis"
            in output), output


# ---- run: Prometheus endpoints and credentials ----------------------------------------------------------


def run_args(*flags: str) -> Any:
    return build_parser().parse_args(["run", "--prometheus-url", "http://prometheus:9090", *flags])


def test_policy_urls_are_denied_unless_the_admin_says_otherwise() -> None:
    from understudy.cli import prometheus_access
    from understudy.signals.endpoints import PolicyURLs

    access = prometheus_access(run_args())
    assert access.policy_urls.mode is PolicyURLs.DENY and access.credentials is None
    allow = prometheus_access(run_args("--policy-prometheus-urls=allowlist",
                                       "--allowed-prometheus-url=http://thanos.monitoring.svc:9090/prom",
                                       "--allowed-prometheus-url=https://mimir.example.com"))
    assert [str(u) for u in allow.policy_urls.allowed] == ["http://thanos.monitoring.svc:9090/prom",
                                                           "https://mimir.example.com:443"]
    with pytest.raises(ValueError, match="allowlist"):
        prometheus_access(run_args("--allowed-prometheus-url=http://thanos:9090"))


def test_limits_and_credentials_reach_the_reader(tmp_path: Path) -> None:
    from understudy.cli import prometheus_access

    access = prometheus_access(run_args(
        "--policy-query-timeout=0.5", "--max-answer-bytes=1000", "--max-custom-answer-bytes=100",
        "--prometheus-username=understudy", f"--prometheus-password-file={tmp_path / 'p'}",
        f"--prometheus-ca-file={tmp_path / 'ca'}", "--prometheus-header=X-Scope-OrgID: team-a"))
    assert (access.policy_timeout, access.max_answer_bytes, access.max_custom_answer_bytes) == (0.5, 1000, 100)
    assert access.credentials is not None and access.credentials.username == "understudy"
    assert access.credentials.headers == (("X-Scope-OrgID", "team-a"),)
    with pytest.raises(ValueError, match="password file"):
        prometheus_access(run_args("--prometheus-username=understudy"))


@pytest.mark.parametrize("flags", [
    ("--prometheus-url", "http://user:secret@prometheus:9090"),
    ("--prometheus-url", "http://prometheus:9090/?x="),
    ("--prometheus-url", "http://prometheus:9090", "--allowed-prometheus-url", "http://u:p@thanos:9090"),
    ("--prometheus-url", "http://prometheus:9090", "--max-answer-bytes", "0"),
    ("--prometheus-url", "http://prometheus:9090", "--policy-query-timeout", "-1"),
    ("--prometheus-url", "http://prometheus:9090", "--prometheus-header", "no-colon"),
])
def test_bad_flags_are_refused_without_echoing_secrets(flags: tuple[str, ...],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["run", *flags])
    assert exit_.value.code == 2
    assert "secret" not in capsys.readouterr().err
