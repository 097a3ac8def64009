"""Package the Helm chart as a release: `helm package` of a copy whose values.yaml names the published image
and the published operations guide (the runbooks every alert links to).

The release workflow runs it before `helm push`; the release check (tests/release) packages the versions it
installs and upgrades with it, so what is published is what was tested.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "understudy"
# The lines of values.yaml a release rewrites, each found exactly once (indentation included).
IMAGE_REPOSITORY = re.compile(r"^(  repository: ).*$", re.MULTILINE)
RUNBOOK_BASE_URL = re.compile(r"^(    runbookBaseURL: ).*$", re.MULTILINE)


def release_values(values: str, image_repository: str, runbook_base_url: str) -> str:
    """values.yaml with the published image repository and runbook address; comments kept."""
    for pattern, value in ((IMAGE_REPOSITORY, image_repository), (RUNBOOK_BASE_URL, runbook_base_url)):
        values, found = pattern.subn(lambda m, v=value: m.group(1) + v, values)
        if found != 1:
            raise ValueError(f"values.yaml: expected one line matching {pattern.pattern!r}, found {found}")
    return values


def package(helm: str | Path, version: str, image_repository: str, runbook_base_url: str, destination: Path,
            chart: Path = CHART) -> Path:
    """Write <destination>/understudy-<version>.tgz (chart version and appVersion = version); return its path."""
    with tempfile.TemporaryDirectory(prefix="understudy-chart-") as scratch:
        copy = Path(scratch) / chart.name
        shutil.copytree(chart, copy)
        values = copy / "values.yaml"
        values.write_text(release_values(values.read_text(), image_repository, runbook_base_url))
        destination.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([str(helm), "package", str(copy), "--version", version, "--app-version", version,
                               "--destination", str(destination)], capture_output=True, text=True, check=True)
    return Path(done.stdout.strip().rsplit(": ", 1)[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--version", required=True, help="chart version and appVersion (the image tag)")
    parser.add_argument("--image-repository", required=True, help="where the release's image is pushed")
    parser.add_argument("--runbook-base-url", required=True, help="the release's docs/operations.md, as a URL")
    parser.add_argument("--destination", type=Path, default=Path("dist"))
    parser.add_argument("--chart", type=Path, default=CHART)
    parser.add_argument("--helm", default="helm")
    args = parser.parse_args(argv)
    print(package(args.helm, args.version, args.image_repository, args.runbook_base_url, args.destination,
                  args.chart))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
