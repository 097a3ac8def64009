"""Custom PromQL held to its policy's namespace, the way prom-label-proxy holds a tenant's queries.

Pure: no I/O. A tenant writes the whole of a `query.promql` trigger, and the operator's Prometheus answers
it with every series it holds; the value comes back to the tenant in Events and status. In the default,
multi-tenant mode every vector selector of a custom query therefore gets the matcher
`<namespace label>="<policy namespace>"` (the label is `spec.signals.namespaceLabel` unless the operator
fixes one for every policy). A selector that names another namespace keeps its own matcher beside the
injected one, so it selects nothing: the query still runs, and reads MISSING.

The matcher is written into the tenant's own text rather than into a re-serialised syntax tree
(promql-parser's printer neither escapes label values nor round-trips `or` matchers). The result is then
parsed again and accepted only when (a) every selector, in every `or` branch, carries the injected
matcher and (b) apart from it, the tree is the tree of the original query. So the text sent is confined
by construction of that check, whatever the tokenizer below got wrong; anything that fails it is refused.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from string import Template
from typing import Any

import promql_parser

PLACEHOLDERS = ("deployment", "namespace", "service")
"""The `$words` a custom query may use; each becomes a DNS name of the policy before parsing."""

QUERY_REFUSED = "CustomQueryRefused"
"""The Ready=False reason of a policy with a custom query that cannot be held to its namespace (not sent)."""

IMPLICIT_SELECTION = frozenset({"info"})
"""Functions that read series no selector of the query names (info() joins target_info): refused when
confined, because no matcher can be injected into what the query does not write."""

_KEYWORDS = frozenset({
    "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right",
    "atan2", "inf", "nan", "sum", "avg", "count", "min", "max", "group", "stddev", "stdvar", "topk", "bottomk",
    "count_values", "quantile", "limitk", "limit_ratio",
})
_LABEL_LISTS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_TOKEN = re.compile(
    r"""(?P<space>\s+)
      |(?P<comment>\#[^\n]*)
      |(?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|`[^`]*`)
      |(?P<number>(?:0[xX][0-9a-fA-F]+|[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)[a-zA-Z0-9_]*)
      |(?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
      |(?P<op>=~|!~|!=|==|>=|<=|.)""",
    re.VERBOSE | re.DOTALL,
)


class PromQLError(ValueError):
    """A custom query that does not parse, or cannot be held to its namespace."""


@dataclass(frozen=True)
class Confinement:
    """The operator's rule for custom queries (operator flags; see docs/security.md)."""

    enabled: bool = True
    label: str | None = None
    """The label that carries a series' namespace; None means each policy's `spec.signals.namespaceLabel`."""


def with_placeholders_filled(promql: str) -> str:
    """The query as it would run for some tier: every placeholder replaced by a valid name."""
    return Template(promql).safe_substitute({name: "placeholder" for name in PLACEHOLDERS})


def check_syntax(promql: str) -> None:
    """Raise PromQLError with the parser's message when the query (placeholders filled) does not parse."""
    try:
        promql_parser.parse(with_placeholders_filled(promql))
    except ValueError as error:
        raise PromQLError(f"query.promql is not valid PromQL: {error}") from None


@lru_cache(maxsize=16384)
def confine(promql: str, label: str, namespace: str) -> str:
    """`promql` (placeholders already filled) with `label="namespace"` in every vector selector.

    Raises PromQLError when the query does not parse or cannot be confined with certainty.
    """
    original = _parse(promql)
    if _calls(original) & IMPLICIT_SELECTION:
        raise PromQLError(f"{', '.join(sorted(_calls(original) & IMPLICIT_SELECTION))}() reads series no selector "
                          "names, so it cannot be held to the policy's namespace")
    matcher = f'{label}="{_escape(namespace)}"'
    confined = _inject(promql, matcher)
    result = _parse(confined)
    wanted = (label, namespace)
    if _shape(result, wanted) != _shape(original, wanted) or not _all_confined(result, wanted):
        raise PromQLError("query.promql could not be held to the policy's namespace; write every selector as "
                          'metric{...} with plain label matchers')
    return confined


def _parse(promql: str) -> Any:
    try:
        return promql_parser.parse(promql)
    except ValueError as error:
        raise PromQLError(f"query.promql is not valid PromQL: {error}") from None


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _inject(promql: str, matcher: str) -> str:
    """Insert `matcher` into every selector of the text: after each `{` (and each `or` inside braces), and
    as `{matcher}` after each bare metric name. A heuristic; `confine` verifies what it produced."""
    tokens = [(m.lastgroup, m.group()) for m in _TOKEN.finditer(promql)]
    significant = [i for i, (kind, _) in enumerate(tokens) if kind not in ("space", "comment")]
    following = {a: tokens[b][1] for a, b in zip(significant, significant[1:])}
    out: list[str] = []
    parens: list[bool] = []  # True: a label list such as by (...)
    braces = brackets = 0
    label_list_next = False
    for i, (kind, text) in enumerate(tokens):
        out.append(text)
        if kind in ("space", "comment"):
            continue
        nxt = following.get(i, "")
        opens_labels, label_list_next = label_list_next, False
        if kind == "op":
            if text == "{":
                braces += 1
                out.append(f"{matcher},")
            elif text == "}":
                braces = max(0, braces - 1)
            elif text == "[":
                brackets += 1
            elif text == "]":
                brackets = max(0, brackets - 1)
            elif text == "(":
                parens.append(opens_labels)
            elif text == ")" and parens:
                parens.pop()
        elif kind == "ident":
            lowered = text.lower()
            if braces:
                if lowered == "or" and nxt not in ("=", "!=", "=~", "!~"):
                    out.append(f" {matcher},")
            elif brackets or (parens and parens[-1]):
                continue
            elif lowered in _KEYWORDS:
                label_list_next = lowered in _LABEL_LISTS
            elif nxt not in ("(", "{"):
                out.append(f"{{{matcher}}}")
    return "".join(out)


def _branches(selector: Any) -> list[frozenset[tuple[str, str, str]]]:
    matchers = selector.matchers
    groups = matchers.or_matchers or [matchers.matchers]
    return [frozenset((str(m.op), m.name, m.value) for m in group) for group in groups]


def _all_confined(expr: Any, wanted: tuple[str, str]) -> bool:
    required = (str(promql_parser.MatchOp.Equal), *wanted)
    return all(required in branch for node in _nodes(expr) if isinstance(node, promql_parser.VectorSelector)
               for branch in _branches(node))


def _nodes(expr: Any) -> list[Any]:
    found: list[Any] = []
    promql_parser.walk(expr, pre_visit=found.append)
    return found


def _calls(expr: Any) -> set[str]:
    return {node.func.name for node in _nodes(expr) if isinstance(node, promql_parser.Call)}


def _shape(expr: Any, injected: tuple[str, str]) -> list[tuple[Any, ...]]:
    """Every node in walk order with what makes it what it is, less the injected matcher (which the
    tenant may have written too)."""
    removed = (str(promql_parser.MatchOp.Equal), *injected)
    shape: list[tuple[Any, ...]] = []
    for node in _nodes(expr):
        kind = type(node).__name__
        if isinstance(node, promql_parser.VectorSelector):
            branches = sorted(sorted(branch - {removed}) for branch in _branches(node))
            shape.append((kind, node.name, branches, node.offset, str(node.at)))
        elif isinstance(node, promql_parser.MatrixSelector):
            shape.append((kind, node.range))
        elif isinstance(node, promql_parser.SubqueryExpr):
            shape.append((kind, node.range, node.step, node.offset, str(node.at)))
        elif isinstance(node, promql_parser.Call):
            shape.append((kind, node.func.name))
        elif isinstance(node, (promql_parser.BinaryExpr, promql_parser.AggregateExpr)):
            shape.append((kind, str(node.op), str(node.modifier)))
        elif isinstance(node, (promql_parser.NumberLiteral, promql_parser.StringLiteral)):
            shape.append((kind, str(node)))
        else:
            shape.append((kind,))
    return shape
