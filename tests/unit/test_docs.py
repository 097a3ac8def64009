"""The docs stay true to the code: the API reference is generated from the current CRD, and every link
between the project's pages lands on a file and heading that exist."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tools import api_reference

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "charts" / "understudy" / "README.md",
         *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """Anchors a Markdown renderer gives the page's headings (code fences skipped)."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    return {re.sub(r"[^a-z0-9 _-]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.+)$", text, re.MULTILINE)}


def test_api_reference_is_generated_from_the_current_crd() -> None:
    expected = api_reference.render(yaml.safe_load(api_reference.CRD.read_text()))
    assert api_reference.PAGE.read_text() == expected, "docs/api-reference.md is stale: run `make docs`"


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    prose = re.sub(r"`[^`\n]*`", "", re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL))
    for target in LINK.findall(prose):
        if re.match(r"[a-z]+:", target):
            continue  # an absolute URL: not ours to check offline
        path, _, fragment = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif fragment and file.suffix == ".md" and fragment not in anchors(file):
            broken.append(f"{target}: no such heading")
    assert broken == []
