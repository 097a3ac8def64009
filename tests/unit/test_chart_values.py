"""The chart's values.yaml, values.schema.json and README.md describe the same values, the same way.

A value is a leaf of values.yaml, where a mapping counts as a leaf when the schema leaves its keys open
(labels, annotations, resources...). Every leaf must be typed in the schema, documented in the README's
table with its default, and carry a `# --` comment in values.yaml; nothing may be documented or typed
that values.yaml does not have.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

CHART = Path(__file__).resolve().parents[2] / "charts" / "understudy"
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
SCHEMA = json.loads((CHART / "values.schema.json").read_text())
README = (CHART / "README.md").read_text()
ROW = re.compile(r"^\| `(?P<key>[A-Za-z0-9_.]+)` \| (?P<type>[a-z/]+) \| `(?P<default>.*)` \| (?P<doc>.+) \|$")
JSON_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "integer": int, "number": (int, float)}


def closed(schema: dict[str, Any]) -> bool:
    """A mapping whose keys the schema lists one by one (as opposed to free-form labels)."""
    return schema.get("type") == "object" and schema.get("additionalProperties") is False and "properties" in schema


def leaves(values: dict[str, Any], schema: dict[str, Any],
           prefix: str = "") -> Iterator[tuple[str, Any, dict[str, Any]]]:
    for key, value in values.items():
        sub = schema.get("properties", {}).get(key)
        path = prefix + key
        if sub is None:
            yield path, value, {}
        elif isinstance(value, dict) and closed(sub) and key != "resources":
            yield from leaves(value, sub, path + ".")
        else:
            yield path, value, sub


def schema_leaves(schema: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, sub in schema.get("properties", {}).items():
        if prefix == "" and key == "global":
            continue  # Helm's own key, never in values.yaml
        if closed(sub) and key != "resources":
            yield from schema_leaves(sub, prefix + key + ".")
        else:
            yield prefix + key


LEAVES = list(leaves(VALUES, SCHEMA))
DOCUMENTED = {m["key"]: m for m in (ROW.match(line) for line in README.splitlines()) if m}


def test_every_value_is_typed_by_the_schema() -> None:
    untyped = [path for path, _, sub in LEAVES if not sub]
    assert untyped == []
    assert sorted(schema_leaves(SCHEMA)) == sorted(path for path, _, _ in LEAVES)


@pytest.mark.parametrize(("path", "value", "sub"), LEAVES, ids=[p for p, _, _ in LEAVES])
def test_default_matches_its_schema_type(path: str, value: Any, sub: dict[str, Any]) -> None:
    types = sub["type"] if isinstance(sub["type"], list) else [sub["type"]]
    assert any(isinstance(value, JSON_TYPES[t]) and not (t in ("integer", "number") and isinstance(value, bool))
               for t in types), f"{path}: {value!r} is not {types}"
    assert sub.get("description"), f"{path} has no description in the schema"


def test_schema_is_closed_everywhere() -> None:
    """A typo in a value name (replicaCont) must be an error, not silently ignored."""
    def walk(schema: dict[str, Any], where: str) -> Iterator[str]:
        if (schema.get("type") == "object" and "properties" in schema
                and schema.get("additionalProperties") is not False):
            yield where
        for key, sub in schema.get("properties", {}).items():
            if key != "global":
                yield from walk(sub, f"{where}.{key}")
    assert list(walk(SCHEMA, "$")) == []


def test_readme_documents_every_value_with_its_default() -> None:
    assert sorted(DOCUMENTED) == sorted(path for path, _, _ in LEAVES)
    for path, value, sub in LEAVES:
        row = DOCUMENTED[path]
        assert json.loads(row["default"]) == value, f"README default of {path} is stale"
        types = sub["type"] if isinstance(sub["type"], list) else [sub["type"]]
        assert row["type"] == "/".join(types), path
        assert len(row["doc"].strip()) > 10, f"{path} is not explained"


def test_values_yaml_comments_every_value() -> None:
    """helm-docs style `# --` comments precede every leaf, so values.yaml reads on its own too."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[str] = []
    commented: set[str] = set()
    pending = False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("# --"):
            pending = True
            continue
        match = re.match(r"^(\s*)([A-Za-z_]\w*):", line)
        if match:
            stack = stack[: len(match.group(1)) // 2] + [match.group(2)]
            if pending:
                commented.add(".".join(stack))
            pending = False
        elif not stripped.startswith("#"):
            pending = False
    missing = [path for path, _, _ in LEAVES if path not in commented]
    assert missing == []
