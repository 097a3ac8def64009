"""Custom PromQL held to its policy's namespace (signals/confine.py): what is injected, what is refused, and
a property that whatever comes out selects only series of the namespace."""
from __future__ import annotations

import promql_parser
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from understudy.signals.confine import Confinement, PromQLError, check_syntax, confine
from understudy.engine.model import Comparison, Policy, SignalKind, Tier, Trigger
from understudy.signals.promql import MetricNames, Target, plan_queries

LABEL, NS = "destination_workload_namespace", "tenant-a"
M = f'{LABEL}="{NS}"'


def selectors(promql: str) -> list[list[set[tuple[str, str, str]]]]:
    """Every vector selector of a query as its `or` branches of (op, label, value)."""
    found: list[list[set[tuple[str, str, str]]]] = []

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            groups = node.matchers.or_matchers or [node.matchers.matchers]
            found.append([{(str(m.op), m.name, m.value) for m in g} for g in groups])

    promql_parser.walk(promql_parser.parse(promql), pre_visit=visit)
    return found


def confined(promql: str) -> bool:
    wanted = (str(promql_parser.MatchOp.Equal), LABEL, NS)
    return all(wanted in branch for selector in selectors(promql) for branch in selector)


@pytest.mark.parametrize(("query", "expected"), [
    ('avg(model_confidence{workload="rec"})', f'avg(model_confidence{{{M},workload="rec"}})'),
    ("rate(foo[5m])", f"rate(foo{{{M}}}[5m])"),
    ("sum by (job) (rate(foo[5m])) / on(job) group_left(x) bar",
     f"sum by (job) (rate(foo{{{M}}}[5m])) / on(job) group_left(x) bar{{{M}}}"),
    ('{__name__=~".+"}', f'{{{M},__name__=~".+"}}'),
    ("foo{}", f"foo{{{M},}}"),
    ("topk(5, foo) > bool 1", f"topk(5, foo{{{M}}}) > bool 1"),
    ("vector(1)", "vector(1)"),
    ("sum without (or) (foo)", f"sum without (or) (foo{{{M}}})"),
    ("foo # a comment naming bar\n + baz", f"foo{{{M}}} # a comment naming bar\n + baz{{{M}}}"),
], ids=["matchers", "bare-in-range", "label-lists", "any-metric", "empty-braces", "bool", "no-selector",
        "label-named-or", "comment"])
def test_the_namespace_matcher_goes_into_every_selector(query: str, expected: str) -> None:
    assert confine(query, LABEL, NS) == expected


def test_a_selector_for_another_namespace_keeps_both_matchers_and_selects_nothing() -> None:
    """The review's T7: the tenant's own matcher stays, ANDed with the injected one."""
    query = 'sum(rate(istio_requests_total{destination_workload_namespace="tenant-b"}[1m]))'
    (selector,) = selectors(confine(query, LABEL, NS))
    assert selector == [{("MatchOp.Equal", LABEL, "tenant-b"), ("MatchOp.Equal", LABEL, NS)}]


def test_or_matchers_are_confined_in_every_branch() -> None:
    out = confine('foo{a="1" or b="2"}', LABEL, NS)
    assert confined(out)
    assert selectors(out) == [[{("MatchOp.Equal", LABEL, NS), ("MatchOp.Equal", "a", "1")},
                               {("MatchOp.Equal", LABEL, NS), ("MatchOp.Equal", "b", "2")}]]


def test_a_quote_inside_a_label_value_cannot_break_out_of_the_selector() -> None:
    """An escaped quote and braces inside a string are part of the value, not new selectors."""
    query = r'foo{a="\"} or vector(1) or bar{b=\""}'
    out = confine(query, LABEL, NS)
    assert confined(out) and len(selectors(out)) == 1


@pytest.mark.parametrize(("query", "message"), [
    ("sum(rate(foo[5m])", "not valid PromQL: unclosed left parenthesis"),
    ("rate(foo)", "not valid PromQL: expected type matrix"),
    ("info(foo)", "info() reads series no selector names"),
])
def test_what_cannot_be_confined_is_refused(query: str, message: str) -> None:
    with pytest.raises(PromQLError, match=message.replace("(", r"\(").replace(")", r"\)")):
        confine(query, LABEL, NS)


def test_syntax_is_checked_with_placeholders_filled() -> None:
    check_syntax('avg(model_confidence{workload="$deployment", namespace="${namespace}"})')
    with pytest.raises(PromQLError, match="not valid PromQL"):
        check_syntax("avg(model_confidence{workload=$deployment})")


NAMES = st.sampled_from(["foo", "bar_total", "a:b", "up", "x"])
VALUES = st.text(alphabet=st.sampled_from('ab"\\{}#` ,=or\n'), max_size=8)


def _value(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


@st.composite
def selector(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from(["", *["foo", "bar_total", "a:b"]]))
    matchers = draw(st.lists(st.tuples(st.sampled_from(["a", "b", LABEL, "or"]), st.sampled_from(["=", "!=", "=~"]),
                                       VALUES), max_size=3))
    if not name and not any(op == "=" and v for _, op, v in matchers):
        matchers.append(("a", "=", "x"))
    body = ", ".join(f"{k}{op}{_value(v)}" for k, op, v in matchers)
    return f"{name}{{{body}}}" if body or not name else draw(st.sampled_from([name, f"{name}{{}}"]))


@st.composite
def expression(draw: st.DrawFn, depth: int = 0) -> str:
    if depth >= 3:
        return draw(selector())
    kind = draw(st.sampled_from(["selector", "rate", "sum", "binary", "paren", "number"]))
    if kind == "selector":
        return draw(selector())
    if kind == "rate":
        return f"rate({draw(selector())}[5m])"
    if kind == "sum":
        return f"sum by (a, or) ({draw(expression(depth + 1))})"
    if kind == "binary":
        op = draw(st.sampled_from([" + ", " / on(a) group_left(b) ", " and ", " > bool "]))
        return f"{draw(expression(depth + 1))}{op}{draw(expression(depth + 1))}"
    if kind == "paren":
        return f"({draw(expression(depth + 1))}) # {draw(VALUES).replace(chr(10), ' ')}\n"
    return "vector(1)"


@settings(max_examples=300, deadline=None)
@given(expression())
def test_every_query_that_parses_comes_out_confined_or_is_refused(query: str) -> None:
    try:
        promql_parser.parse(query)
    except ValueError:
        return
    try:
        out = confine(query, LABEL, NS)
    except PromQLError:
        pytest.fail(f"a plain query was refused: {query!r}")
    assert confined(out), (query, out)
    assert len(selectors(out)) == len(selectors(query))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from('foba_{}()[]"\\=~!#` ,\n5m+ory'), max_size=40))
def test_any_text_is_confined_or_refused(text: str) -> None:
    try:
        out = confine(text, LABEL, NS)
    except PromQLError:
        return
    assert confined(out), (text, out)


POLICY = Policy(
    tiers=(Tier("primary", "rec-large", "rec-large"), Tier("small", "rec-small", "rec-small")),
    triggers=(Trigger("confidence", SignalKind.QUERY, Comparison.BELOW, 0.6,
                      promql='avg(model_confidence{workload="$deployment"})'),
              Trigger("inventory", SignalKind.QUERY, Comparison.ABOVE, 0.0, promql="info(up)")),
)


def test_plans_confine_by_default_with_the_policys_label_or_the_operators() -> None:
    target = Target(("ml", "rec"), "ml", POLICY, metrics=MetricNames(namespace_label="namespace"))
    plan = plan_queries([target])
    assert 'avg(model_confidence{namespace="ml",workload="rec-large"})' in plan.queries
    assert "inventory" in plan.refused[("ml", "rec")]
    assert plan.bindings[("ml", "rec")]["primary"]["inventory"] is None  # never sent: reads MISSING

    fixed = plan_queries([target], confinement=Confinement(label="k8s_namespace"))
    assert 'avg(model_confidence{k8s_namespace="ml",workload="rec-large"})' in fixed.queries

    off = plan_queries([target], confinement=Confinement(enabled=False))
    assert set(off.queries) == {'avg(model_confidence{workload="rec-large"})',
                                'avg(model_confidence{workload="rec-small"})', "info(up)"}
    assert off.refused == {}
