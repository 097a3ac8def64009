"""The chart's monitoring objects: every alert links to its runbook, and the ServiceMonitor and PrometheusRule
are accepted by the prometheus-operator's own CRDs (fetched from its Go module by build.sh), server-side,
with strict field validation.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.harness import ControlPlane

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "understudy"
OPERATIONS = ROOT / "docs" / "operations.md"
MONITORING = ("--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.prometheusRule.enabled=true")


def anchor(heading: str) -> str:
    """The anchor a Markdown renderer gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^a-z0-9 _-]", "", heading.strip().lower()).replace(" ", "-")


def render(cp: ControlPlane, namespace: str, *values: str) -> list[dict[str, Any]]:
    done = cp.run_helm("template", "understudy", str(CHART), "--namespace", namespace, *MONITORING, *values)
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def alerts(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    return [r for group in rule["spec"]["groups"] for r in group["rules"] if "alert" in r]


def runbooks() -> dict[str, str]:
    """The `### ` headings of the operations guide's `## Alerts` section, by anchor."""
    section = OPERATIONS.read_text().split("\n## Alerts\n", 1)[1].split("\n## ", 1)[0]
    return {anchor(h): h for h in re.findall(r"^### (.+)$", section, re.MULTILINE)}


def test_every_alert_links_to_its_own_runbook(control_plane: ControlPlane) -> None:
    documented = runbooks()
    rendered = alerts(render(control_plane, "ops"))
    for alert in rendered:
        url = alert["annotations"].get("runbook_url", "")
        base, _, fragment = url.partition("#")
        assert base == "docs/operations.md", f"{alert['alert']}: {url!r}"
        assert documented.get(fragment) == alert["alert"], (
            f"{alert['alert']}: its runbook_url #{fragment} is not a '### {alert['alert']}' heading under "
            "'## Alerts' in docs/operations.md")
    assert sorted(documented.values()) == sorted(a["alert"] for a in rendered), "a runbook for every alert, no more"


def test_runbook_base_url_is_a_value(control_plane: ControlPlane) -> None:
    base = "https://wiki.example/understudy/operations"
    for alert in alerts(render(control_plane, "ops", "--set", f"metrics.prometheusRule.runbookBaseURL={base}")):
        assert alert["annotations"]["runbook_url"] == f"{base}#{anchor(alert['alert'])}"


@pytest.fixture(scope="module")
def prometheus_operator_crds(control_plane: ControlPlane) -> None:
    """ServiceMonitor and PrometheusRule, as the prometheus-operator publishes them, Established."""
    docs = [doc for path in sorted(control_plane.toolchain.prometheus_operator_crds.glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if doc]
    assert sorted(d["metadata"]["name"] for d in docs) == ["prometheusrules.monitoring.coreos.com",
                                                           "servicemonitors.monitoring.coreos.com"]
    existing = control_plane.run_kubectl("get", "crd", "-o", "name").stdout.split()
    control_plane.install_crds([d for d in docs if f"customresourcedefinition.apiextensions.k8s.io/"
                                f"{d['metadata']['name']}" not in existing])


def dry_run(cp: ControlPlane, docs: list[dict[str, Any]]) -> Any:
    return cp.run_kubectl("apply", "--server-side", "--dry-run=server", "--validate=strict", "-f", "-",
                          input=yaml.safe_dump_all(docs), check=False)


@pytest.mark.parametrize("values", [(), ("--set", "metrics.serviceMonitor.labels.release=prometheus",
                                         "--set", "metrics.prometheusRule.alertLabels.team=ml",
                                         "--set", "metrics.prometheusRule.fallbackRatioAbove=0.2",
                                         "--set", "metrics.serviceMonitor.interval=15s")],
                         ids=["defaults", "customised"])
def test_servicemonitor_and_prometheusrule_pass_their_real_schema(
    control_plane: ControlPlane, namespace: str, prometheus_operator_crds: None, values: tuple[str, ...]
) -> None:
    monitoring = [d for d in render(control_plane, namespace, *values)
                  if d["apiVersion"].startswith("monitoring.coreos.com/")]
    assert sorted(d["kind"] for d in monitoring) == ["PrometheusRule", "ServiceMonitor"]
    done = dry_run(control_plane, monitoring)
    assert done.returncode == 0, done.stderr
    assert "(server dry run)" in done.stdout and done.stdout.count("serverside-applied") == 2, done.stdout


def test_the_schema_check_is_real(control_plane: ControlPlane, namespace: str,
                                  prometheus_operator_crds: None) -> None:
    """A field the CRD does not know, or a value it forbids, is refused: the check above can fail."""
    (monitor,) = [d for d in render(control_plane, namespace) if d["kind"] == "ServiceMonitor"]
    monitor["spec"]["endpoints"][0]["honourLabels"] = True
    done = dry_run(control_plane, [monitor])
    assert done.returncode != 0 and "honourLabels" in done.stderr, done.stderr
    (rule,) = [d for d in render(control_plane, namespace) if d["kind"] == "PrometheusRule"]
    rule["spec"]["groups"][0]["rules"][0]["for"] = "half an hour"
    done = dry_run(control_plane, [rule])
    assert done.returncode != 0 and "spec.groups[0].rules[0].for" in done.stderr, done.stderr
