"""The Grafana dashboard only queries series the operator exports, in PromQL that Prometheus parses."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from understudy.audit.metrics import OperatorMetrics

CHART = Path(__file__).resolve().parents[2] / "charts" / "understudy"
DASHBOARD = json.loads((CHART / "dashboards" / "understudy.json").read_text())
METRIC = re.compile(r"\b(understudy_[a-z_]+)\b")


def exported_series() -> set[str]:
    """Names as Prometheus sees them: counters get _total, histograms _bucket/_count/_sum."""
    names = set()
    for family in OperatorMetrics().registry.collect():
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_count", "_sum"))
        else:
            names.add(family.name)
    return names


def expressions() -> list[str]:
    return [t["expr"] for panel in DASHBOARD["panels"] for t in panel["targets"]]


def concrete(expr: str) -> str:
    """Grafana's variables replaced by what they expand to, so promtool can parse the query."""
    return expr.replace("$__rate_interval", "5m").replace("${datasource}", "x").replace("$namespace", ".*") \
        .replace("$policy", ".*").replace("$job", ".*")


def test_dashboard_structure() -> None:
    assert DASHBOARD["uid"] and DASHBOARD["title"] == "Understudy"
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in DASHBOARD["templating"]["list"]}
    assert {"datasource", "namespace", "policy", "job"} <= variables
    for panel in DASHBOARD["panels"]:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"
        for key in ("x", "y", "w", "h"):
            assert isinstance(panel["gridPos"][key], int)
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24


def test_dashboard_queries_only_exported_series() -> None:
    exported = exported_series()
    used = {name for expr in expressions() for name in METRIC.findall(expr)}
    queried_in_variables = {name for v in DASHBOARD["templating"]["list"]
                            for name in METRIC.findall(json.dumps(v.get("query", "")))}
    assert used | queried_in_variables <= exported, sorted((used | queried_in_variables) - exported)
    # The headline series of the product are all on the dashboard.
    assert {"understudy_active_tier", "understudy_fallback_ratio", "understudy_transitions_total",
            "understudy_prometheus_query_errors_total"} <= used


def test_dashboard_promql_parses(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is installed by `make system-deps`"
    rules: dict[str, Any] = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:panel_{i}", "expr": concrete(expr)} for i, expr in enumerate(expressions())]}]}
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
