"""The release's small tools: the chart's release values, the image build's answer without an engine, and
the tutorial's example policy."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from tools.package_chart import CHART, release_values
from understudy.cli import main as understudy

ROOT = Path(__file__).resolve().parents[2]


def test_release_values_name_the_published_image_and_runbooks_and_keep_the_comments() -> None:
    source = (CHART / "values.yaml").read_text()
    released = release_values(source, "registry.example/ml/understudy", "https://docs.example/v1/operations.md")
    values = yaml.safe_load(released)
    assert values["image"]["repository"] == "registry.example/ml/understudy"
    assert values["metrics"]["prometheusRule"]["runbookBaseURL"] == "https://docs.example/v1/operations.md"
    assert values | {"image": None, "metrics": None} == yaml.safe_load(source) | {"image": None, "metrics": None}
    assert [line for line in released.splitlines() if line.lstrip().startswith("#")] == [
        line for line in source.splitlines() if line.lstrip().startswith("#")]


def test_release_values_refuse_a_values_file_they_do_not_recognise() -> None:
    with pytest.raises(ValueError, match="runbookBaseURL"):
        release_values("image:\n  repository: understudy\n", "x/understudy", "https://docs.example")


def test_image_build_says_so_when_there_is_no_container_engine(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"  # bash and the basics, but neither docker nor podman
    bin_dir.mkdir()
    for tool in ("bash", "dirname"):
        (bin_dir / tool).symlink_to(subprocess.run(["which", tool], capture_output=True, text=True).stdout.strip())
    done = subprocess.run(["bash", str(ROOT / "tools" / "image.sh"), "understudy:test"], capture_output=True,
                          text=True, env={**os.environ, "PATH": str(bin_dir)}, timeout=30)
    assert done.returncode == 3
    assert "no container engine found" in done.stderr and "nothing was built" in done.stderr


def test_the_tutorials_policy_is_valid() -> None:
    assert understudy(["validate", "-f", str(ROOT / "docs" / "examples")]) == 0
