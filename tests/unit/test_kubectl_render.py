"""`kubectl understudy get` and `history` as text and JSON: fixed API objects in, exact text out."""
from __future__ import annotations

import json

from tests.unit.kubectl_cases import (
    EVENTS,
    MS,
    NOW,
    T0,
    deployments,
    event,
    policy,
    tier,
)
from understudy.kubectl import render, view
from understudy.kubectl.view import PolicyView

FALLBACK = """\
FallbackPolicy ml/recommender  mode Enforce
  Serving     distilled 100% since 2026-12-01T10:02:03Z (2m10s ago)
  Cause       primary tripped on p99-latency (2412ms, above 1s)
  Creep       fallback ratio 0.083 (window 10m), budget 0.5 of the window, Alert
  Conditions  Ready=True  FallbackActive=True  MetricsAvailable=True  CreepBudgetExceeded=False

recommender
+- primary           0%  2/2 ready  tripped  breach 2/2  clear 0/3
|  +- p99-latency  above 1s   breached  2412ms  TierTripped 2m10s ago
|  `- errors       above 0.1  -
+- distilled       100%  2/2 ready  healthy  breach 0/2  clear 3/3  active
|  +- p99-latency  above 1s   ok
|  `- errors       above 0.1  ok
`- popular-items     0%  2/2 ready  healthy  breach 0/2  clear 3/3
   +- p99-latency  above 1s   ok
   `- errors       above 0.1  ok

Recent transitions
     2m10s ago  FallbackActivated  primary -> distilled  p99-latency 2412ms (above 1s)
"""


def build(obj: dict | None = None, events: list | None = None, ready: int = 2,
          **missing: tuple[str, ...]) -> PolicyView:
    return view.build(obj or policy(), deployments(ready, missing.get("missing", ())),
                      EVENTS if events is None else events, NOW)


def test_a_fallback_as_plain_text() -> None:
    assert render.get(build(), NOW) == FALLBACK


def test_on_a_terminal_the_same_words_with_colour_and_symbols() -> None:
    text = render.get(build(), NOW, render.TERMINAL)
    lines = text.splitlines()
    assert lines[2] == "  Cause       \x1b[31mprimary tripped on p99-latency (2412ms, above 1s)\x1b[0m"
    assert lines[4] == ("  Conditions  \x1b[32mReady=True\x1b[0m  \x1b[33mFallbackActive=True\x1b[0m"
                        "  \x1b[32mMetricsAvailable=True\x1b[0m  \x1b[32mCreepBudgetExceeded=False\x1b[0m")
    assert lines[7] == ("├─ primary           \x1b[2m0%\x1b[0m  2/2 ready  \x1b[31m✖ tripped\x1b[0m  breach 2/2  "
                        "clear 0/3")
    assert lines[8] == ("│  ├─ p99-latency  above 1s   \x1b[31m✖ breached\x1b[0m  \x1b[31m2412ms\x1b[0m  "
                        "\x1b[2mTierTripped 2m10s ago\x1b[0m")
    assert lines[10] == ("├─ distilled       \x1b[1;36m100%\x1b[0m  2/2 ready  \x1b[32m✔ healthy\x1b[0m  breach 0/2  "
                         "clear 3/3  \x1b[1;36m● active\x1b[0m")
    assert lines[13] == ("└─ popular-items     \x1b[2m0%\x1b[0m  2/2 ready  \x1b[32m✔ healthy\x1b[0m  breach 0/2  "
                         "clear 3/3")


def test_a_restore_under_way_and_a_restore_held_for_approval() -> None:
    recovered = [tier("primary", 0, 3), tier("distilled"), tier("popular-items")]
    restoring = render.get(build(policy(shares=(50, 50, 0), tiers=recovered, restore={"tier": "primary", "step": 0},
                                        lastTransitionMs=MS + 100_000)), NOW).splitlines()
    assert restoring[1:3] == ["  Serving     primary 50%, distilled 50% since 2026-12-01T10:03:43Z (30s ago)",
                              "  Restore     to primary: step 1 of 2 (50% on primary)"]
    assert restoring[7] == "+- primary         50%  2/2 ready  healthy  breach 0/2  clear 3/3  restoring"
    held = render.get(build(policy(tiers=recovered, spec={"evaluation": {"restoreApproval": "Manual"}},
                                   restoreHeld={"tier": "primary", "sinceMs": MS + 10_000})), NOW).splitlines()
    assert held[2:4] == [
        "  Restore     to primary held for approval since 2026-12-01T10:02:13Z (2m ago): "
        "kubectl understudy approve recommender -n ml",
        "  Approval    Manual: a restore waits for kubectl understudy approve"]
    assert held[8] == "+- primary           0%  2/2 ready  healthy  breach 0/2  clear 3/3  held for approval"


def test_overrides_say_who_wrote_them() -> None:
    pinned = policy(active="popular-items", shares=(0, 0, 100), pinnedTier="popular-items", paused=True,
                    spec={"override": {"pinTier": "popular-items", "paused": True, "by": "alice"}})
    assert "  Override    pinned to popular-items, paused (override by alice)\n" in render.get(build(pinned), NOW)
    frozen = policy(frozen=True, creepExceeded=True)
    text = render.get(build(frozen), NOW)
    assert "  Override    frozen by creep.action Freeze\n" in text
    assert "  Creep       fallback ratio 0.083 (window 10m), budget 0.5 of the window, Alert EXCEEDED\n" in text


def test_missing_data_a_missing_deployment_and_a_spec_the_operator_has_not_seen() -> None:
    silent = event("MetricsMissing", "Warning", "2026-12-01T10:03:00Z",
                   "no data for distilled/errors (onMissingData=Hold) | trigger=errors tier=distilled")
    obj = policy(metricsMissing=True)
    obj["metadata"]["generation"] = 2
    text = render.get(build(obj, EVENTS + [silent], missing=("primary",)), NOW)
    assert "+- primary           0%  no Deployment  tripped  breach 2/2  clear 0/3\n" in text
    assert "|  +- p99-latency  above 1s   ok\n|  `- errors       above 0.1  no data           MetricsMissing\n" in text
    assert ("  Note        the operator has not evaluated generation 2 yet (the status is of generation 1)\n"
            in text)


def test_a_policy_the_operator_has_not_evaluated() -> None:
    obj = policy()
    del obj["status"]
    assert render.get(build(obj, []), NOW).splitlines()[1] == (
        "  Serving     not evaluated yet: the operator has written no status")


def test_json_carries_the_same_facts() -> None:
    doc = json.loads(json.dumps(render.to_json(build())))
    assert (doc["activeTier"], doc["causes"], doc["lastMove"]) == (
        "distilled", ["primary tripped on p99-latency (2412ms, above 1s)"], "2026-12-01T10:02:03Z")
    assert doc["tiers"][0]["triggers"][0] == {
        "name": "p99-latency", "limit": "above 1s", "unit": "ms", "state": "breached", "observed": "2412.5",
        "observedAt": "2026-12-01T10:02:02.500Z", "source": "TierTripped"}
    assert doc["tiers"][1]["readyReplicas"] == 2 and doc["tiers"][1]["weight"] == 100
    assert doc["recent"] == [{"time": "2026-12-01T10:02:03.100Z", "reason": "FallbackActivated", "type": "Warning",
                              "message": "primary unfit (p99-latency 2412.5 above 1000); all traffic falls back to "
                                         "distilled", "tier": "primary", "trigger": "p99-latency",
                              "observed": "2412.5", "threshold": "1000", "fromTier": "primary",
                              "toTier": "distilled", "source": "both"}]
    assert doc["held"] is None and doc["restoreApproval"] == "Automatic"


def test_history_merges_the_events_and_status_history_and_says_which_events_expired() -> None:
    restored = {"time": "2026-12-01T10:05:00Z", "fromTier": "distilled", "toTier": "primary", "reason": "Restored",
                "message": "all traffic back on primary from distilled"}
    obj = policy(history=[{**e, "time": t} for e, t in ((restored, "2026-12-01T09:00:00Z"),)]
                 + policy()["status"]["history"] + [restored])
    assert render.history(build(obj)) == (
        "TIME                      TYPE     REASON             TIERS                 OBSERVED                       "
        "MESSAGE\n"
        "2026-12-01T09:00:00Z      Normal   Restored           distilled -> primary                                 "
        "all traffic back on primary from distilled (status.history only: its Event has expired)\n"
        "2026-12-01T10:02:02.500Z  Warning  TierTripped        primary               p99-latency 2412ms (above 1s)  "
        "primary: p99-latency 2412.5 above 1000 for 2 evaluations\n"
        "2026-12-01T10:02:03.100Z  Warning  FallbackActivated  primary -> distilled  p99-latency 2412ms (above 1s)  "
        "primary unfit (p99-latency 2412.5 above 1000); all traffic falls back to distilled\n"
        "2026-12-01T10:05:00Z      Normal   Restored           distilled -> primary                                 "
        "all traffic back on primary from distilled (status.history only: its Event has expired)\n")
    assert render.history(build(policy(history=[]), [])) == "no transitions recorded yet\n"


def test_ages_and_readings() -> None:
    assert render.ago(T0, T0 + 3725) == "1h2m5s ago" and render.ago(None, T0) == "-"
    latency = build().tiers[0].triggers[0]
    assert [render.reading(latency, v) for v in ("2412.5", "12", "123456.7", None, "NaN!")] == [
        "2412ms", "12ms", "123457ms", "-", "NaN!"]


def test_a_tier_backed_off_after_failed_probes_shows_what_it_needs() -> None:
    obj = policy(tiers=[tier("primary", 0, 5, True, "p99-latency", failedProbes=2), tier("distilled"),
                        tier("popular-items")])
    view = build(obj)
    assert "+- primary           0%  2/2 ready  tripped  breach 0/2  clear 5/12" in render.get(view, NOW)
    doc = render.to_json(view)
    assert (doc["tiers"][0]["failedProbes"], doc["tiers"][0]["clearNeeded"]) == (2, 12)
    assert (doc["tiers"][1]["failedProbes"], doc["tiers"][1]["clearNeeded"]) == (0, 3)
