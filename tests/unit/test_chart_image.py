"""The Dockerfile builds what the chart runs: same entrypoint, non-root numeric user, same version."""
from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "understudy"
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def final_stage() -> list[tuple[str, str]]:
    steps = instructions(DOCKERFILE)
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def test_final_stage_runs_as_the_charts_non_root_uid() -> None:
    users = [args for word, args in final_stage() if word == "USER"]
    assert users, "the final stage must set USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, "a numeric non-root UID lets the kubelet enforce runAsNonRoot"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert int(uid) == values["runAsUser"]
    assert not gid or int(gid) == values["runAsUser"]


def test_slim_python_base_matching_the_package() -> None:
    bases = [args.split()[0] for word, args in instructions(DOCKERFILE) if word == "FROM"]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["requires-python"].removeprefix(">=")
    for base in bases:
        assert re.fullmatch(r"python:(\d+\.\d+)-slim(-\w+)?", base), base
        assert tuple(map(int, base.split(":")[1].split("-")[0].split("."))) >= tuple(map(int, wanted.split(".")))


def test_entrypoint_is_the_command_the_chart_runs() -> None:
    entrypoints = [json.loads(args) for word, args in final_stage() if word == "ENTRYPOINT"]
    assert entrypoints == [["understudy"]]
    deployment = (CHART / "templates" / "deployment.yaml").read_text()
    assert 'command: ["understudy", "run"]' in deployment
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["understudy"] == "understudy.cli:main"


def test_image_version_label_and_chart_defaults_agree() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    labels = dict(re.findall(r'org\.opencontainers\.image\.(\w+)="([^"]*)"', DOCKERFILE))
    assert labels["version"] == chart["appVersion"]
    assert labels["title"] == values["image"]["repository"]
    assert values["image"]["tag"] == "", "an empty tag means appVersion, so the two cannot drift"


def test_the_build_context_holds_only_what_the_image_needs() -> None:
    ignore = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*", "allow-list: start by excluding everything"
    copied = {args.split()[0] for word, args in instructions(DOCKERFILE) if word == "COPY" and "--from" not in args}
    for path in copied:
        assert f"!{path.rstrip('/')}" in {entry.rstrip("/") for entry in ignore}, f"{path} is excluded from the context"
