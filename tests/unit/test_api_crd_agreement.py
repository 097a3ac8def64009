"""The CRD and the pydantic models describe the same API.

Walks the CRD's openAPIV3Schema and the models' JSON schema side by side and compares, at every level of
spec and status: field names, required-ness, types, enums, defaults and the simple constraints (pattern,
lengths, bounds, item counts). It also checks that every field is documented for `kubectl explain`, that
defaulting an object yields the same result on both sides, and that every CEL rule's message is
exercised by an invalid corpus document.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.corpus import INVALID, VALID
from understudy.api import FallbackPolicy

CRD_PATH = Path(__file__).resolve().parents[2] / "crds" / "understudy.dev_fallbackpolicies.yaml"
CONSTRAINTS = ("pattern", "minLength", "maxLength", "minimum", "maximum", "minItems", "maxItems")

Node = dict[str, Any]


def crd() -> Node:
    doc: Node = yaml.safe_load(CRD_PATH.read_text())
    return doc


def crd_schema() -> Node:
    schema: Node = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def model_schema() -> Node:
    schema: Node = FallbackPolicy.model_json_schema(by_alias=True, mode="validation")
    return schema


def resolve(node: Node, defs: Node) -> Node:
    """Follow $ref and drop the `| None` branch of optional fields, keeping the field's own keys."""
    node = dict(node)
    if "anyOf" in node:
        branches = [b for b in node.pop("anyOf") if b.get("type") != "null"]
        assert len(branches) == 1, f"unexpected union: {branches}"
        node = {**branches[0], **node}
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        node = {**resolve(target, defs), **node}
    return node


def int_or_string(crd_node: Node, model_node: Node, path: str) -> list[str]:
    """An x-kubernetes-int-or-string field: the models take an integer, or a string with the CRD's constraints
    (which, like OpenAPI's pattern and maxLength, only apply to strings)."""
    branches = {b.get("type"): b for b in model_node.get("anyOf", [])}
    if set(branches) != {"integer", "string"}:
        return [f"{path}: int-or-string in the CRD, {sorted(map(str, branches))} in the models"]
    return [f"{path}: {key} {crd_node.get(key)!r} in the CRD, {branches['string'].get(key)!r} in the models"
            for key in CONSTRAINTS if crd_node.get(key) != branches["string"].get(key)]


def walk(crd_node: Node, model_node: Node, defs: Node, path: str) -> list[str]:
    """Every disagreement between the two schemas below `path`, as readable lines."""
    if crd_node.get("x-kubernetes-int-or-string"):
        return int_or_string(crd_node, model_node, path)
    model_node = resolve(model_node, defs)
    problems = []
    crd_type = crd_node.get("type")
    model_type = model_node.get("type", "string" if "enum" in model_node else None)
    if crd_type != model_type:
        problems.append(f"{path}: type {crd_type} in the CRD, {model_type} in the models")
    if sorted(crd_node.get("enum", [])) != sorted(model_node.get("enum", [])):
        problems.append(f"{path}: enum {crd_node.get('enum')} in the CRD, {model_node.get('enum')} in the models")
    if "default" in crd_node and crd_node["default"] != {} or model_node.get("default") is not None:
        if crd_node.get("default") != model_node.get("default"):
            problems.append(
                f"{path}: default {crd_node.get('default')!r} in the CRD, {model_node.get('default')!r} in the models"
            )
    for key in CONSTRAINTS:
        if crd_node.get(key) != model_node.get(key):
            problems.append(f"{path}: {key} {crd_node.get(key)!r} in the CRD, {model_node.get(key)!r} in the models")
    if crd_node.get("x-kubernetes-preserve-unknown-fields"):
        return problems
    crd_props, model_props = crd_node.get("properties", {}), model_node.get("properties", {})
    if set(crd_props) != set(model_props):
        problems.append(f"{path}: fields {sorted(crd_props)} in the CRD, {sorted(model_props)} in the models")
    if sorted(crd_node.get("required", [])) != sorted(model_node.get("required", [])):
        problems.append(
            f"{path}: required {crd_node.get('required')} in the CRD, {model_node.get('required')} in the models"
        )
    for name in sorted(set(crd_props) & set(model_props)):
        problems += walk(crd_props[name], model_props[name], defs, f"{path}.{name}")
    if "items" in crd_node:
        problems += walk(crd_node["items"], model_node.get("items", {}), defs, f"{path}[]")
    return problems


@pytest.mark.parametrize("part", ["spec", "status"])
def test_crd_and_models_agree(part: str) -> None:
    models = model_schema()
    problems = walk(crd_schema()["properties"][part], models["properties"][part], models["$defs"], part)
    assert not problems, "\n".join(problems)


def test_top_level_fields_agree() -> None:
    assert set(crd_schema()["properties"]) == set(model_schema()["properties"])


def undocumented(node: Node, path: str) -> list[str]:
    missing = []
    for name, child in node.get("properties", {}).items():
        if not child.get("description"):
            missing.append(f"{path}.{name}")
        missing += undocumented(child, f"{path}.{name}")
    if "items" in node:
        missing += undocumented(node["items"], f"{path}[]")
    return missing


def test_every_field_is_documented() -> None:
    schema = crd_schema()
    assert not undocumented({"properties": {k: schema["properties"][k] for k in ("spec", "status")}}, "")


def apply_defaults(schema: Node, value: Any) -> Any:
    """The API server's structural defaulting: fill absent fields that have a default, recursively."""
    if isinstance(value, dict):
        filled = dict(value)
        for name, child in schema.get("properties", {}).items():
            if name not in filled and "default" in child:
                filled[name] = child["default"]
            if name in filled:
                filled[name] = apply_defaults(child, filled[name])
        return filled
    if isinstance(value, list) and "items" in schema:
        return [apply_defaults(schema["items"], item) for item in value]
    return value


@pytest.mark.parametrize("case", VALID, ids=lambda c: c.id)
def test_defaulting_agrees(case: Any) -> None:
    """The models fill in exactly what the API server would, on every valid corpus document."""
    spec_schema = crd_schema()["properties"]["spec"]
    expected = apply_defaults(spec_schema, case.document["spec"])
    spec = FallbackPolicy.model_validate(case.document).spec
    assert spec.model_dump(by_alias=True, exclude_none=True, mode="json") == expected


def cel_messages(node: Node) -> list[str]:
    found = [rule["message"] for rule in node.get("x-kubernetes-validations", [])]
    for child in node.get("properties", {}).values():
        found += cel_messages(child)
    if "items" in node:
        found += cel_messages(node["items"])
    return found


def test_every_cel_rule_has_an_invalid_corpus_case() -> None:
    messages = set(cel_messages(crd_schema()))
    assert len(messages) >= 20
    untested = [m for m in messages if not any(case.expect in m for case in INVALID)]
    assert not untested, f"CEL rules without an invalid corpus case: {untested}"


def test_crd_names_and_printer_columns() -> None:
    spec = crd()["spec"]
    assert spec["group"] == "understudy.dev" and spec["scope"] == "Namespaced"
    assert spec["names"]["shortNames"] == ["fbp"] and spec["names"]["categories"] == ["understudy"]
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Active"] == ".status.activeTier"
    assert columns["Primary-Weight"] == ".status.primaryWeight"
    assert columns["Ready"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["Age"] == ".metadata.creationTimestamp"
