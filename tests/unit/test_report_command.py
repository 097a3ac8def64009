"""`understudy report`'s exit statuses and partial reports, with the API read replaced by a known object."""
from __future__ import annotations

import io
import json
from typing import Any

import pytest

from e2e.harness.prometheus import free_port
from tests.unit.test_report_assemble import STATUS, T0
from understudy.cli import build_parser
from understudy.report import command

POLICY: dict[str, Any] = {
    "apiVersion": "understudy.dev/v1alpha1", "kind": "FallbackPolicy",
    "metadata": {"name": "recommender", "namespace": "ml", "creationTimestamp": "2026-01-04T00:00:00Z"},
    "spec": {
        "primary": {"deploymentName": "rec-large", "serviceName": "rec-large"},
        "fallbacks": [{"name": "distilled", "deploymentName": "rec-small", "serviceName": "rec-small",
                       "degradation": {"description": "smaller model", "acceptedBy": "ml-product@example.com"}}],
        "routing": {"service": {"name": "recommender"}},
        "triggers": [{"name": "errors", "errorRatio": {"above": "0.05"}}],
        "creep": {"maxFallbackRatio": "0.20"},
    },
    "status": STATUS,
}


def run(monkeypatch: pytest.MonkeyPatch, policy: dict[str, Any], *flags: str) -> tuple[int, str, str]:
    monkeypatch.setattr(command, "read_policy", lambda name, namespace: policy)
    args = build_parser().parse_args(["report", "recommender", "-n", "ml", "--since", "1h",
                                      "--end", str(T0 + 4600), *flags])
    out, err = io.StringIO(), io.StringIO()
    status = command.run(args, out, err, now=T0 + 5000)
    return status, out.getvalue(), err.getvalue()


def test_without_prometheus_the_status_figures_are_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    status, out, err = run(monkeypatch, POLICY, "--json")
    assert status == 0, err
    doc = json.loads(out)
    assert doc["prometheus"] is None
    assert doc["notes"][0].startswith("no Prometheus")
    assert doc["activations"]["count"] == 1
    assert doc["creep"]["budgetUsed"] == pytest.approx(0.05 / 0.20)
    assert doc["latency"]["gainedMs"] is None and doc["tiers"][0]["meanConfidence"] is None


def test_unreachable_prometheus_is_exit_1_with_a_partial_report(monkeypatch: pytest.MonkeyPatch) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    status, out, err = run(monkeypatch, POLICY, "--prometheus", nowhere, "--timeout", "2")
    assert status == 1
    assert "query failed at " + nowhere in err
    assert "note: Prometheus failed, figures that need it are unknown" in out
    assert "1 FallbackActivated (from status.history)" in out


def test_a_spec_the_models_reject_is_exit_2(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = {**POLICY, "spec": {**POLICY["spec"], "triggers": []}}
    status, out, err = run(monkeypatch, broken)
    assert status == 2 and out == ""
    assert "the spec is invalid" in err


def test_a_bad_window_is_exit_2(monkeypatch: pytest.MonkeyPatch) -> None:
    status, _, err = run(monkeypatch, POLICY, "--since", "yesterday")
    assert status == 2 and "not a duration" in err


def test_the_policys_own_prometheus_is_never_asked_unless_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """An admin's report goes to the operator's Prometheus (security review L6), not a URL a tenant wrote."""
    from e2e.harness.hostile_prometheus import HostilePrometheus

    with HostilePrometheus("ok") as tenants, HostilePrometheus("ok") as operators:
        own = {**POLICY, "spec": {**POLICY["spec"], "signals": {"prometheusURL": tenants.url}}}
        monkeypatch.delenv("UNDERSTUDY_PROMETHEUS_URL", raising=False)
        status, out, _ = run(monkeypatch, own, "--json")
        assert status == 0 and json.loads(out)["prometheus"] is None
        monkeypatch.setenv("UNDERSTUDY_PROMETHEUS_URL", operators.url)
        status, out, _ = run(monkeypatch, own, "--json")
        doc = json.loads(out)
        assert doc["prometheus"] == operators.url
        assert any("its own Prometheus" in note for note in doc["notes"])
        assert tenants.connections == 0 and operators.requests


def test_credentials_in_a_url_are_never_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    nowhere = f"http://admin:hunter2@127.0.0.1:{free_port()}"
    status, out, err = run(monkeypatch, POLICY, "--prometheus", nowhere, "--timeout", "2")
    assert status == 1
    assert "hunter2" not in out + err and "admin" not in out + err
    assert f"query failed at http://127.0.0.1:{nowhere.rsplit(':', 1)[1]}" in err


def test_the_operators_credentials_and_no_redirects(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """report authenticates like the operator (token file, extra header) and follows no redirect."""
    from e2e.harness.hostile_prometheus import HostilePrometheus

    token = tmp_path / "token"
    token.write_text("report-token\n")
    with HostilePrometheus("ok") as server:
        status, _, err = run(monkeypatch, POLICY, "--prometheus", server.url, "--json",
                             f"--prometheus-bearer-token-file={token}", "--prometheus-header=X-Scope-OrgID:team-a")
        assert status == 0, err
        assert server.requests and all(r.headers.get("Authorization") == "Bearer report-token"
                                       and r.headers.get("X-Scope-OrgID") == "team-a" for r in server.requests)
        with HostilePrometheus("ok") as elsewhere:
            server.set_mode("redirect", location=elsewhere.url + "/api/v1/query")
            status, _, err = run(monkeypatch, POLICY, "--prometheus", server.url, "--timeout", "2")
            assert status == 1 and elsewhere.connections == 0
