"""What the plugin reads out of the API objects: the merged trail, recorded values, and its command line."""
from __future__ import annotations

import io
import json

import pytest

from tests.unit.kubectl_cases import (
    EVENTS,
    FALLBACK_ENTRY,
    FELL_BACK,
    MS,
    NOW,
    TRIPPED,
    deployments,
    event,
    policy,
    tier,
)
from tests.unit.test_kubectl_render import build
from understudy.kubectl import render, timeline, view
from understudy.kubectl.client import Cluster, Refused, Source
from understudy.kubectl.command import (
    build_parser,
    held_restore,
    json_frame,
    override_warnings,
    style_for,
    text_frame,
)


def test_an_event_note_splits_into_its_sentence_and_its_facts() -> None:
    assert timeline.note_facts("pin on x lifted by alice") == ("pin on x lifted by alice", {})
    assert timeline.note_facts("a | b") == ("a | b", {})  # "b" is no fact: the whole note is the sentence
    assert timeline.note_facts("moved | trigger=p99 from=a to=b") == ("moved", {"trigger": "p99", "from": "a",
                                                                               "to": "b"})


def test_event_times_fall_back_to_the_older_fields() -> None:
    assert timeline.event_time({"eventTime": "2026-12-01T10:02:03.250000Z"}) == 1_796_119_323.25
    assert timeline.event_time({"eventTime": None, "deprecatedLastTimestamp": "2026-12-01T10:02:03Z"}) == 1_796_119_323
    assert timeline.event_time({"metadata": {"creationTimestamp": "2026-12-01T10:02:03+00:00"}}) == 1_796_119_323
    assert timeline.event_time({"eventTime": "yesterday"}) is None
    assert timeline.seconds("2026-12-01T10:02:03") is None  # no offset: not a time anyone can place


def test_the_trail_merges_each_decision_once_and_keeps_only_this_policys_events() -> None:
    other = {**TRIPPED, "regarding": {"uid": "an-earlier-policy-of-the-same-name"}}
    trail = timeline.merged([FALLBACK_ENTRY], timeline.policy_events([other, *EVENTS], "uid-1"))
    assert [(e.reason, e.source) for e in trail] == [("TierTripped", "event"), ("FallbackActivated", "both")]
    far = {**FELL_BACK, "eventTime": "2026-12-01T10:02:06.000000Z"}  # 3 s off: another decision
    assert [e.source for e in timeline.merged([FALLBACK_ENTRY], [far])] == ["history", "event"]


def test_a_recovery_forgets_the_value_that_tripped_the_tier() -> None:
    recovered = event("TierRecovered", "Normal", "2026-12-01T10:03:00Z", "primary: clear for 3 evaluations | "
                      "tier=primary")
    again = policy(history=[])
    shown = build(again, [TRIPPED, recovered])
    latency = shown.tiers[0].triggers[0]
    assert (latency.state, latency.observed) == ("breached", None)
    assert render.get(shown, NOW).splitlines()[8] == "|  +- p99-latency  above 1s   breached  value not recorded"


def test_a_tier_with_a_breach_streak_has_no_trigger_marked_ok() -> None:
    breaching = policy(active="primary", shares=(100, 0, 0), history=[],
                       tiers=[tier("primary", 1, 0), tier("distilled"), tier("popular-items")])
    shown = build(breaching, [])
    assert [t.state for t in shown.tiers[0].triggers] == ["", ""]
    assert render.get(shown, NOW).splitlines()[6] == (
        "+- primary         100%  2/2 ready  breaching  breach 1/2  clear 0/3  active")


def test_status_engine_that_would_be_repaired_is_said() -> None:
    damaged = policy(lastTransitionMs=MS + 3_600_000)
    assert render.get(build(damaged), NOW).splitlines()[5] == (
        "  Note        status.engine: lastTransitionMs was 3470s in the future: set to now")


def test_a_spec_the_models_reject_is_unreadable() -> None:
    broken = policy()
    broken["spec"]["triggers"] = []
    with pytest.raises(view.PolicyUnreadable, match="spec.triggers|triggers"):
        build(broken)


def test_approve_writes_the_held_moment_and_refuses_when_nothing_is_held() -> None:
    manual = {"evaluation": {"restoreApproval": "Manual"}}
    held = policy(spec=manual, restoreHeld={"tier": "primary", "sinceMs": MS + 10_999})
    assert held_restore(held) == ("primary", "2026-12-01T10:02:13Z")
    with pytest.raises(Refused, match="no restore of fallbackpolicy ml/recommender is waiting for approval"):
        held_restore(policy(spec=manual))
    with pytest.raises(Refused, match="restores on its own"):
        held_restore(policy(restoreHeld={"tier": "primary", "sinceMs": MS}))


def test_the_command_line() -> None:
    parser = build_parser()
    args = parser.parse_args(["pin", "recommender", "distilled", "-n", "ml", "--context", "prod"])
    assert (args.name, args.tier, args.namespace, args.context, args.change(args)) == (
        "recommender", "distilled", "ml", "prod", {"pinTier": "distilled"})
    assert parser.parse_args(["unpin", "r"]).change(None) == {"pinTier": None}
    assert parser.parse_args(["resume", "r"]).change(None) == {"paused": None}
    assert parser.parse_args(["get"]).name is None and parser.parse_args(["get", "r", "-w"]).watch
    with pytest.raises(SystemExit):
        parser.parse_args(["pin", "recommender"])


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_on_a_terminal_only_and_never_with_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert style_for("auto", Terminal()) is render.TERMINAL and style_for("auto", io.StringIO()) is render.PLAIN
    assert style_for("always", io.StringIO()) is render.TERMINAL and style_for("never", Terminal()) is render.PLAIN
    monkeypatch.setenv("NO_COLOR", "1")
    assert style_for("auto", Terminal()) is render.PLAIN


def test_an_override_that_cannot_act_yet_says_so() -> None:
    assert override_warnings({"spec": {"mode": "Observe", "override": {"pinTier": "a", "paused": True}}}) == [
        "mode is Observe: the operator decides and audits but changes no routing",
        "the policy is paused: the pin or approval takes effect once it is resumed"]
    assert override_warnings({"spec": {"override": {"pinTier": "a"}}}) == []
    assert override_warnings({"spec": {"override": {"restoreApprovedAt": "2026-12-01T10:02:13Z"}},
                              "status": {"engine": {"frozen": True}}}) == [
        "creep.action Freeze holds routing: the restore starts once the freeze ends"]


def sources(*policies: dict, events: list | None = None) -> dict[str, Source]:
    """The three lists as a watch keeps them (filled here instead of by the API server)."""
    def held(items: list[dict]) -> Source:
        source = Source(call=list, args=(), selectors={})
        source.items = {str(i): item for i, item in enumerate(items)}
        source.listed = True
        return source
    return {"policies": held(list(policies)), "deployments": held(list(deployments().values())),
            "events": held(EVENTS if events is None else events)}


def test_get_without_a_name_draws_a_tree_per_policy_and_says_which_cannot_be_read() -> None:
    other = policy(active="primary", shares=(100, 0, 0), history=[])
    other["metadata"] = {**other["metadata"], "name": "ranker", "uid": "uid-2"}
    broken = policy()
    broken["metadata"] = {**broken["metadata"], "name": "broken", "uid": "uid-3"}
    broken["spec"]["triggers"] = []
    cluster = Cluster(api=None, namespace="ml")
    text = text_frame(cluster, None, render.PLAIN)(sources(policy(), other, broken), NOW)
    assert [line for line in text.splitlines() if line.startswith(("FallbackPolicy", "  Serving"))] == [
        "FallbackPolicy ml/broken: its spec is not valid: spec.triggers: List should have at least 1 item after "
        "validation, not 0",
        "FallbackPolicy ml/ranker  mode Enforce",
        "  Serving     primary 100% since 2026-12-01T10:02:03Z (2m10s ago)",
        "FallbackPolicy ml/recommender  mode Enforce",
        "  Serving     distilled 100% since 2026-12-01T10:02:03Z (2m10s ago)"]
    assert "  TierTripped" not in text.split("FallbackPolicy ml/ranker")[1].split("FallbackPolicy")[0]
    assert text_frame(cluster, "gone", render.PLAIN)(sources(), NOW) == "fallbackpolicy ml/gone not found\n"
    assert text_frame(cluster, None, render.PLAIN)(sources(), NOW) == "no FallbackPolicy in namespace ml\n"
    assert json.loads(json_frame("recommender")(sources(policy()), NOW))["activeTier"] == "distilled"
    listed = json.loads(json_frame(None)(sources(policy(), broken), NOW))
    assert listed[0] == {"error": "FallbackPolicy ml/broken: its spec is not valid: spec.triggers: List should have "
                                  "at least 1 item after validation, not 0"}
    assert listed[1]["name"] == "recommender"


def test_a_source_that_cannot_be_read_is_named_on_screen() -> None:
    held = sources(policy())
    held["events"].error = "the API server refused (403 Forbidden): events is forbidden"
    assert text_frame(Cluster(None, "ml"), "recommender", render.PLAIN)(held, NOW).endswith(
        "(events: the API server refused (403 Forbidden): events is forbidden; retrying)\n")
