"""The FallbackPolicy corpus (see README.md), loaded once for the unit and the API-server tests."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).parent


@dataclass(frozen=True)
class Case:
    path: Path
    document: dict[str, Any]
    valid: bool
    reason: str = ""
    expect: str = ""
    expect_apiserver: str = ""

    @property
    def id(self) -> str:
        return f"{self.path.parent.name}/{self.path.stem}"


def _headers(text: str) -> dict[str, str]:
    """`# key: value` comment lines at the top of a document."""
    headers = {}
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        key, sep, value = line[1:].strip().partition(":")
        if sep:
            headers[key.strip()] = value.strip()
    return headers


def load(kind: str) -> list[Case]:
    """Every case in valid/ or invalid/, sorted by name; invalid ones must carry reason and expect."""
    cases = []
    for path in sorted((ROOT / kind).glob("*.yaml")):
        text = path.read_text()
        headers = _headers(text)
        case = Case(
            path=path,
            document=yaml.safe_load(text),
            valid=kind == "valid",
            reason=headers.get("reason", ""),
            expect=headers.get("expect", ""),
            expect_apiserver=headers.get("expect-apiserver", headers.get("expect", "")),
        )
        if not case.valid and not (text.startswith("# reason: ") and case.expect):
            raise ValueError(f"{path}: an invalid case starts with '# reason:' and has an '# expect:' line")
        cases.append(case)
    return cases


VALID = load("valid")
INVALID = load("invalid")


README = ROOT.parents[1] / "README.md"


def readme_llm_examples() -> dict[str, dict[str, Any]]:
    """The example policies of the README's "LLM platforms" section, by their signals.preset."""
    text = README.read_text()
    section = text[text.index("## LLM platforms"):text.index("\n## ", text.index("## LLM platforms") + 1)]
    documents = [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", section, re.DOTALL)]
    return {d["spec"]["signals"]["preset"]: d for d in documents
            if isinstance(d, dict) and d.get("kind") == "FallbackPolicy"}
