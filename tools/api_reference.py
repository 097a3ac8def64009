"""Write docs/api-reference.md from the FallbackPolicy CRD: every field, its type, default, limits and the
CEL rules that check it, in the words of the CRD's own descriptions.

`make docs` runs it; tests/unit/test_docs.py fails when the page is older than the CRD.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
CRD = ROOT / "crds" / "understudy.dev_fallbackpolicies.yaml"
PAGE = ROOT / "docs" / "api-reference.md"

LIMITS = (("minimum", "at least {}"), ("maximum", "at most {}"), ("minLength", "at least {} characters"),
          ("maxLength", "at most {} characters"), ("minItems", "at least {} items"),
          ("maxItems", "at most {} items"))


def cell(text: str) -> str:
    """Markdown table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def type_of(schema: Mapping[str, Any]) -> str:
    if schema.get("x-kubernetes-preserve-unknown-fields") and "properties" not in schema:
        return "object (free-form)"
    kind = str(schema.get("type", "any"))
    if kind == "array":
        return f"[]{type_of(schema.get('items', {}))}"
    if schema.get("format"):
        return f"{kind} ({schema['format']})"
    return kind


def constraints(schema: Mapping[str, Any]) -> list[str]:
    """What the API server checks about the value itself, in words."""
    found = []
    if "default" in schema:
        found.append(f"default `{json.dumps(schema['default'])}`")
    if "enum" in schema:
        found.append("one of " + ", ".join(f"`{v}`" for v in schema["enum"]))
    found += [words.format(schema[key]) for key, words in LIMITS if key in schema]
    if "pattern" in schema:
        found.append(f"matches `{schema['pattern']}`")
    found += [rule["message"] for rule in schema.get("x-kubernetes-validations", [])]
    return found


def fields(schema: Mapping[str, Any], path: str) -> Iterator[tuple[str, Mapping[str, Any], bool]]:
    """(path, schema, required) of every field below schema, depth first, in the CRD's order."""
    required = set(schema.get("required", []))
    for name, sub in (schema.get("properties") or {}).items():
        here = f"{path}.{name}"
        yield here, sub, name in required
        if sub.get("type") == "array":
            sub = sub.get("items", {})
            here += "[]"
        yield from fields(sub, here)


def section(title: str, schema: Mapping[str, Any], root: str) -> list[str]:
    lines = [f"## {title}", "", cell(schema.get("description", "")), ""]
    rules = schema.get("x-kubernetes-validations", [])
    if rules:
        lines += ["Rules across fields (CEL, checked by the API server on every write):", ""]
        lines += [f"- {cell(rule['message'])}" for rule in rules]
        lines.append("")
    lines += ["| Field | Type | Required | Description | Checked |", "|---|---|---|---|---|"]
    for path, sub, required in fields(schema, root):
        lines.append(f"| `{path}` | {cell(type_of(sub))} | {'yes' if required else ''} | "
                     f"{cell(sub.get('description', ''))} | {cell('; '.join(constraints(sub)))} |")
    return lines + [""]


def render(crd: Mapping[str, Any]) -> str:
    names = crd["spec"]["names"]
    out = [f"# API reference: {names['kind']}", "",
           "Generated from `crds/understudy.dev_fallbackpolicies.yaml` by `tools/api_reference.py` (`make docs`);",
           "do not edit by hand. `kubectl explain fallbackpolicy.spec` shows the same descriptions.", ""]
    for version in crd["spec"]["versions"]:
        schema = version["schema"]["openAPIV3Schema"]
        out += [f"`apiVersion: {crd['spec']['group']}/{version['name']}`, `kind: {names['kind']}`, "
                f"{crd['spec']['scope'].lower()}; short name {', '.join(f'`{n}`' for n in names.get('shortNames', []))}. "
                f"{cell(schema.get('description', ''))}", ""]
        columns = version.get("additionalPrinterColumns", [])
        if columns:
            out += ["`kubectl get fallbackpolicies` shows:", "", "| Column | Value | Meaning |", "|---|---|---|"]
            out += [f"| {c['name'].upper()} | `{cell(c['jsonPath'])}` | {cell(c.get('description', ''))} |"
                    for c in columns]
            out.append("")
        out += section("spec", schema["properties"]["spec"], "spec")
        out += section("status", schema["properties"]["status"], "status")
    return "\n".join(out).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if the page differs from what the CRD gives")
    args = parser.parse_args(argv)
    page = render(yaml.safe_load(CRD.read_text()))
    if args.check:
        if PAGE.read_text() != page:
            print(f"{PAGE.relative_to(ROOT)} is stale: run `make docs`", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(page)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
