"""The chart ships the repository's CRD byte for byte, and the chart's metadata matches the package."""
from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "understudy"


def test_chart_crds_are_byte_identical_to_the_repository_crds() -> None:
    source = sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    shipped = sorted(p.name for p in (CHART / "crds").iterdir())
    assert shipped == source
    for name in source:
        assert (CHART / "crds" / name).read_bytes() == (ROOT / "crds" / name).read_bytes(), (
            f"charts/understudy/crds/{name} differs from crds/{name}: copy it again")


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "understudy"
    assert chart["type"] == "application"
    assert chart["appVersion"] == project["version"], "appVersion is the operator version the image is tagged with"
