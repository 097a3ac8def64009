"""Validation errors in human words, with the API server's field-path spelling (spec.triggers[0].name)."""
from __future__ import annotations

from pydantic import ValidationError


def field_path(loc: tuple[int | str, ...]) -> str:
    """("spec", "triggers", 0, "name") -> "spec.triggers[0].name"."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path


def describe(error: ValidationError) -> list[str]:
    """One line per problem: "<field path>: <message>" (the path is omitted for document-level problems)."""
    lines = []
    for item in error.errors(include_url=False):
        path = field_path(tuple(item["loc"]))
        lines.append(f"{path}: {item['msg']}" if path else item["msg"])
    return lines
