"""The CI workflows a public forge runs: checked by actionlint (pinned, built from its Go module, with
shellcheck on their scripts), and held to what the README and the release process promise."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from e2e.harness import Toolchain, load_versions

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"


def actionlint(*files: Path) -> subprocess.CompletedProcess[str]:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is installed by `make system-deps`"
    return subprocess.run([str(Toolchain.from_cache().actionlint), "-no-color", "-oneline",
                           f"-shellcheck={shellcheck}", "-pyflakes=", *map(str, files)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def workflow(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    return loaded


def steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return list(job["steps"])


def test_actionlint_passes() -> None:
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert [f.name for f in files] == ["release.yml", "test.yml"]
    done = actionlint(*files)
    assert done.returncode == 0, done.stdout + done.stderr


def test_actionlint_would_catch_a_mistake(tmp_path: Path) -> None:
    broken = tmp_path / ".github" / "workflows" / "broken.yml"
    broken.parent.mkdir(parents=True)
    text = (WORKFLOWS / "test.yml").read_text().replace("runs-on:", "runs_on:")
    broken.write_text(text.replace("run: make test", 'run: echo $UNQUOTED; [ $x == 1 ]'))
    done = actionlint(broken)
    assert done.returncode == 1
    assert "runs_on" in done.stdout and "shellcheck" in done.stdout, done.stdout


def test_the_test_job_runs_the_readmes_command() -> None:
    (job,) = workflow("test.yml")["jobs"].values()
    assert [s["run"] for s in steps(job) if "run" in s] == ["make test"]
    assert "make test" in (ROOT / "README.md").read_text()
    assert (ROOT / ".ci" / "run").read_text().rstrip().endswith("make test")


def test_the_release_builds_a_multi_arch_image_with_provenance_and_sbom_then_pushes_the_chart() -> None:
    release = workflow("release.yml")
    assert release[True] == {"push": {"tags": ["v*"]}}  # YAML 1.1 reads the key `on` as true
    jobs = release["jobs"]
    (build,) = [s for s in steps(jobs["image"]) if str(s.get("uses", "")).startswith("docker/build-push-action")]
    assert set(build["with"]["platforms"].split(",")) == {"linux/amd64", "linux/arm64"}
    assert build["with"]["push"] is True and build["with"]["sbom"] is True
    assert build["with"]["provenance"].startswith("mode=")
    assert build["with"]["tags"].endswith(":${{ needs.version.outputs.version }}")
    assert jobs["chart"]["needs"] == ["version", "image"], "the chart names an image that exists"
    script = "\n".join(s.get("run", "") for s in steps(jobs["chart"]))
    assert "tools/package_chart.py" in script and 'helm push "dist/understudy-${VERSION}.tgz" "${CHARTS}"' in script
    assert release["env"]["CHARTS"].startswith("oci://")
    assert release["env"]["HELM_VERSION"] == load_versions()["HELM_VERSION"], "the helm the release check used"
    version_check = "\n".join(s.get("run", "") for s in steps(jobs["version"]))
    assert '"v${version}"' in version_check and "pyproject.toml" in version_check
