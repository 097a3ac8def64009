"""One version everywhere: pyproject.toml is the source; the chart, the image label, the CHANGELOG, the
`understudy version` command and the `understudy_build_info` metric all say the same."""
from __future__ import annotations

import io
import platform
import re
import tomllib
from pathlib import Path

import yaml

from understudy.audit.metrics import OperatorMetrics
from understudy.cli import build_parser
from understudy.version import VERSION

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def test_the_installed_package_is_the_source_trees_version() -> None:
    assert VERSION == PACKAGE_VERSION, "reinstall the package (make venv) after changing pyproject.toml"


def test_chart_version_and_app_version_are_the_package_version() -> None:
    chart = yaml.safe_load((ROOT / "charts" / "understudy" / "Chart.yaml").read_text())
    assert (chart["version"], chart["appVersion"]) == (PACKAGE_VERSION, PACKAGE_VERSION), (
        "charts/understudy/Chart.yaml: set version and appVersion to pyproject.toml's version")


def test_image_label_is_the_package_version() -> None:
    labels = dict(re.findall(r'org\.opencontainers\.image\.(\w+)="([^"]*)"', (ROOT / "Dockerfile").read_text()))
    assert labels["version"] == PACKAGE_VERSION


def test_changelog_describes_this_version_first() -> None:
    headings = re.findall(r"^## \[?(\d+\.\d+\.\d+[^\]\s]*)\]?", (ROOT / "CHANGELOG.md").read_text(), re.MULTILINE)
    assert headings and headings[0] == PACKAGE_VERSION, f"CHANGELOG.md's newest entry is {headings[:1]}"


def test_version_command_prints_it() -> None:
    out = io.StringIO()
    args = build_parser().parse_args(["version"])
    assert args.func(args, out) == 0
    assert out.getvalue().startswith(f"understudy {PACKAGE_VERSION} (Python ")


def test_build_info_metric_carries_it() -> None:
    labels = {"version": PACKAGE_VERSION, "python_version": platform.python_version()}
    assert OperatorMetrics().registry.get_sample_value("understudy_build_info", labels) == 1
