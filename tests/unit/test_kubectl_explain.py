"""`kubectl understudy explain`: the last decision in sentences, from fixed API objects."""
from __future__ import annotations

from tests.unit.kubectl_cases import MS, NOW, policy, tier
from tests.unit.test_kubectl_render import build
from understudy.kubectl.explain import explain

RECOVERED = [tier("primary", 0, 3), tier("distilled"), tier("popular-items")]


def test_a_fallback_names_the_trigger_the_value_and_what_must_happen_for_traffic_to_return() -> None:
    assert explain(build(), NOW) == """\
distilled has served 100% of the traffic since 2026-12-01T10:02:03Z (2m10s ago). primary tripped on
p99-latency: it read 2412ms, above 1s (TierTripped at 2026-12-01T10:02:02.500Z). The last move away:
FallbackActivated at 2026-12-01T10:02:03.100Z: primary unfit (p99-latency 2412.5 above 1000); all
traffic falls back to distilled.

For traffic to return to primary, primary must read clear for 3 evaluations in a row (recoverAfter 3
x interval 1s = 3s); it has 0 so far. The restore starts no sooner than minDwell (3s) after the last
move, which has passed. Then traffic returns in 2 step(s) (50% -> 100%), each after primary reads
clear at its share and at least minDwell apart. At the earliest, if primary reads clear from now on:
in about 6s (2026-12-01T10:04:19Z).

Time off the primary: 0.083 of the time observed within the 10m creep window; the budget of 0.5 of
the window is not exceeded (creep.action Alert).
"""


def test_minutes_after_a_move_the_estimate_waits_for_min_dwell_too() -> None:
    obj = policy(tiers=[tier("primary", 0, 1, True, "p99-latency"), tier("distilled"), tier("popular-items")],
                 spec={"evaluation": {"minDwell": "5m", "restoreStallAfter": "10m"}})
    said = " ".join(explain(build(obj), NOW).split())
    assert "it has 1 so far. The restore starts no sooner than minDwell (5m) after the last move, 2m50s from now." \
        in said
    assert "in about 7m50s (2026-12-01T10:12:03Z)" in said  # 2m50s, then one more step 5m later


def test_a_restore_under_way() -> None:
    text = explain(build(policy(shares=(50, 50, 0), tiers=RECOVERED, restore={"tier": "primary", "step": 0},
                                lastTransitionMs=MS + 100_000)), NOW)
    assert text.split("\n\n")[:2] == [
        "Traffic is returning to primary: restore step 1 of 2 has sent it 50% since 2026-12-01T10:03:43Z (30s\n"
        "ago), and 50% stays on distilled. The last move away: FallbackActivated at 2026-12-01T10:02:03.100Z:\n"
        "primary unfit (p99-latency 2412.5 above 1000); all traffic falls back to distilled.",
        "Each further step (1 to go) needs primary to read clear at its share, at least minDwell (3s) after\n"
        "the previous one; a breach sends its share back at once (RestoreAborted). At the earliest, the\n"
        "restore completes in about 3s."]


def test_a_restore_held_for_approval_says_how_to_release_it() -> None:
    obj = policy(tiers=RECOVERED, spec={"evaluation": {"restoreApproval": "Manual"}},
                 restoreHeld={"tier": "primary", "sinceMs": MS + 10_000})
    said = " ".join(explain(build(obj), NOW).split())
    assert ("For traffic to return to primary, the restore starts no sooner than minDwell (3s) after the last move, "
            "which has passed. It fell due at 2026-12-01T10:02:13Z and waits for an approval "
            "(evaluation.restoreApproval Manual): `kubectl understudy approve recommender -n ml` releases it.") in said
    assert said.endswith("(2026-12-01T10:04:16Z) plus the time until it is approved. Time off the primary: 0.083 of "
                         "the time observed within the 10m creep window; the budget of 0.5 of the window is not "
                         "exceeded (creep.action Alert).")


def test_overrides_and_observe_mode_are_named_with_the_way_out() -> None:
    obj = policy(active="popular-items", shares=(0, 0, 100), pinnedTier="popular-items", paused=True,
                 spec={"mode": "Observe", "override": {"pinTier": "popular-items", "paused": True, "by": "alice"}})
    said = " ".join(explain(build(obj), NOW).split())
    assert said.startswith("Mode Observe: this is what the policy would do; the routing object is left as it is. "
                           "popular-items has served 100% of the traffic")
    assert ("Routing is paused by spec.override.paused (override by alice): the weights stay as they are and no "
            "Deployment is changed, while the triggers are still evaluated; `kubectl understudy resume recommender "
            "-n ml` ends it. All traffic is pinned to popular-items by spec.override.pinTier (override by alice): the "
            "triggers do not move it; `kubectl understudy unpin recommender -n ml` hands routing back to them.") in said
    assert "None of this happens while the policy is paused and pinned." in said


def test_a_healthy_primary_and_a_policy_not_evaluated_yet() -> None:
    healthy = policy(active="primary", shares=(100, 0, 0), tiers=RECOVERED, history=[])
    assert explain(build(healthy, []), NOW) == (
        "The primary has served all traffic since 2026-12-01T10:02:03Z (2m10s ago). None of its triggers is\n"
        "breaching.\n\n"
        "Time off the primary: 0.083 of the time observed within the 10m creep window; the budget of 0.5 of\n"
        "the window is not exceeded (creep.action Alert).\n")
    unseen = policy()
    del unseen["status"]
    assert explain(build(unseen, []), NOW) == (
        "The operator has not evaluated ml/recommender yet: its status holds no decision. Is the operator\n"
        "running, and does it watch namespace ml?\n")


def test_a_value_the_audit_trail_no_longer_holds_is_not_invented() -> None:
    said = " ".join(explain(build(policy(history=[]), []), NOW).split())
    assert "primary tripped on p99-latency (above 1s); the value is no longer in the audit trail." in said


def test_a_tier_that_failed_probes_must_read_clear_for_longer() -> None:
    # Two failed probes in a row: recoverAfter 3 doubled twice, 12 clear evaluations (12s at 1s).
    obj = policy(tiers=[tier("primary", 0, 5, True, "p99-latency", failedProbes=2), tier("distilled"),
                        tier("popular-items")])
    said = " ".join(explain(build(obj), NOW).split())
    assert ("primary must read clear for 12 evaluations in a row (recoverAfter 3 doubled for each of 2 failed "
            "probes in a row: 12 x interval 1s = 12s); it has 5 so far.") in said
    assert "in about 10s" in said  # 7 more clear evaluations, then one more step 3s later
