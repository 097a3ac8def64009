"""The chart's liveness probe is the evaluation loop's stall bound, and the API timeout reaches the operator."""
from __future__ import annotations

import re
from pathlib import Path

import yaml

CHART = Path(__file__).resolve().parents[2] / "charts" / "understudy"
TEMPLATE = (CHART / "templates" / "deployment.yaml").read_text()
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())


def test_the_operator_gets_the_stall_bound_and_the_api_timeout_from_values() -> None:
    assert "- --stall-seconds={{ .Values.liveness.stallSeconds }}" in TEMPLATE
    assert "- --api-timeout={{ .Values.apiTimeoutSeconds }}" in TEMPLATE
    assert VALUES["liveness"]["stallSeconds"] == 60 and VALUES["apiTimeoutSeconds"] == 10


def test_the_liveness_probe_asks_healthz_on_the_liveness_port() -> None:
    probe = re.search(r"livenessProbe:\n(?P<body>(?: {12}.*\n)+)", TEMPLATE)
    assert probe is not None
    body = yaml.safe_load(probe["body"].replace(" " * 12, "", 1).replace("\n" + " " * 12, "\n"))
    assert body["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert "containerPort: {{ .Values.liveness.port }}" in TEMPLATE
    # The kubelet restarts a wedged operator within a few probe periods of the bound.
    assert body["periodSeconds"] * body["failureThreshold"] <= VALUES["liveness"]["stallSeconds"]
