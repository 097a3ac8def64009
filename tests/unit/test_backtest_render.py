"""The backtest report as people and programs read it, and the command's refusals before any query."""
from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import pytest

from understudy.backtest.render import Context, ProgressLine, plot, span, table, to_json, when
from understudy.backtest.replay import Replay, replay, summarise
from understudy.cli import backtest, build_parser
from tests.corpus import VALID
from tests.unit.test_backtest_replay import POLICY, STEP, T0, history
from understudy.engine import CreepAction, RestoreApproval
from understudy.engine.drills import Drill
from understudy.engine.governance import TierCapacity

CONTEXT = Context("ml", "recommender", "http://127.0.0.1:9090", 5, False, ("a caveat",))


@pytest.fixture(scope="module")
def spike() -> Replay:
    return replay(POLICY, history(100, slow=set(range(20, 40))), STEP)


def test_when_and_span() -> None:
    assert when(1_767_571_200) == "2026-01-05T00:00:00Z"
    assert when(1_767_571_200.25) == "2026-01-05T00:00:00.250Z"
    assert [span(s) for s in (0, 5, 0.5, 90, 3600, 93784)] == ["0s", "5s", "0.5s", "1m30s", "1h", "1d2h3m4s"]


def test_table_reports_outcome_tiers_triggers_and_timeline(spike: Replay) -> None:
    text = table(summarise(spike), CONTEXT)
    lines = text.splitlines()
    assert lines[0] == "Backtest of FallbackPolicy ml/recommender"
    assert "  note: a caveat" in lines
    assert "assumed full" in text
    assert "  fallback activations  1 (1 episode(s) off the primary)" in lines
    assert "  transitions (flaps)   4 (FallbackActivated 1, RestoreStep 2, Restored 1)" in lines
    assert any(line.startswith("  creep budget          within budget: budget 0.1 of any 1h window") for line in lines)
    assert "  TIER       ACTIVE  TRAFFIC  SHARE" in lines
    assert "  distilled      3m    2m42s  32.7%" in lines
    assert "  TIER     TRIGGER  TRIPS  BREACHED" in lines
    assert "  primary  p99          1        20" in lines
    timeline = lines[lines.index("Timeline") + 1:]
    assert [line.split()[1] for line in timeline] == [
        "TierTripped", "FallbackActivated", "TierRecovered", "RestoreStep", "RestoreStep", "Restored"]
    # aligned: every message starts in the same column
    assert len({line.index(line.split()[2]) for line in timeline}) == 1


def test_table_of_a_quiet_history_says_so() -> None:
    text = table(summarise(replay(POLICY, history(10), STEP)), CONTEXT)
    assert "Triggers (trips, and evaluations past the threshold)\n  none breached\n" in text
    assert "no decision recorded" in text
    assert "  rollbacks    none\n  freezes      none\n  scale-ups    none\n" in text


def test_table_and_json_report_what_governance_would_have_done() -> None:
    policy = replace(POLICY, creep_window=600.0, creep_action=CreepAction.ROLLBACK_PRIMARY)
    steps = [s._replace(load=40.0, replicas={"primary": (4, 4), "distilled": (2, 2)})
             for s in history(100, slow=set(range(20, 40)))]
    drill = (Drill("distilled", every=200.0, duration=20.0, share=10),)
    summary = summarise(replay(policy, steps, STEP, drill, {"distilled": TierCapacity(5.0, True, 12)}))
    lines = table(summary, CONTEXT).splitlines()
    section = lines[lines.index("Governance (what the policy would have done besides routing; assumptions in "
                                "the notes above)") + 1:][:5]
    assert section == [
        f"  rollbacks    1: to revision 1 at {when(T0 + 34 * STEP)}",
        "  freezes      none",
        f"  scale-ups    1: distilled to 8 replicas at {when(T0 + 21 * STEP)}",
        f"  scale-backs  1: distilled to 2 replicas at {when(T0 + 57 * STEP)}",
        "  drills       2 skipped",  # one during the fallback, one while the creep budget is exceeded
    ]
    report = to_json(summary, CONTEXT)["governance"]
    assert report["rollbacks"] == [{"time": when(T0 + 34 * STEP), "revision": "1"}]
    assert report["scaleUps"] == [{"time": when(T0 + 21 * STEP), "tier": "distilled", "replicas": 8}]
    assert report["drills"] == {"Skipped": 2}


def test_table_and_json_list_the_approvals_a_manual_policy_needed() -> None:
    manual = replace(POLICY, restore_approval=RestoreApproval.MANUAL)
    quiet = table(summarise(replay(manual, history(10), STEP)), CONTEXT)
    assert "  drills       none\n  approvals    none\n" in quiet
    assert "approvals" not in table(summarise(replay(POLICY, history(10), STEP)), CONTEXT)
    summary = summarise(replay(manual, history(100, slow=set(range(20, 40))), STEP, approval_delay=60.0))
    assert (f"  approvals    1: restore to primary held at {when(T0 + 45 * STEP)}, approved at "
            f"{when(T0 + 57 * STEP)}\n") in table(summary, CONTEXT)
    assert to_json(summary, CONTEXT)["governance"]["approvals"] == [
        {"heldAt": when(T0 + 45 * STEP), "tier": "primary", "approvedAt": when(T0 + 57 * STEP)}]


def test_json_is_complete_and_serialisable(spike: Replay) -> None:
    report = json.loads(json.dumps(to_json(summarise(spike), CONTEXT)))
    assert report["policy"] == {"namespace": "ml", "name": "recommender"}
    assert report["readiness"] == "assumed" and report["notes"] == ["a caveat"]
    assert (report["activations"], report["episodes"], report["transitions"]) == (1, 1, 4)
    assert report["triggers"] == [{"tier": "primary", "trigger": "p99", "trips": 1, "breachedEvaluations": 20}]
    assert sum(t["trafficShare"] for t in report["tiers"]) == pytest.approx(1.0)
    assert report["creep"]["exceeded"] is False and report["creep"]["exceededAt"] == []
    tripped = report["timeline"][0]
    assert tripped["reason"] == "TierTripped"
    assert (tripped["tier"], tripped["trigger"], tripped["observed"], tripped["threshold"]) == ("primary", "p99", 400.0, 250.0)
    assert "fromTier" not in tripped  # unset fields are left out, not null
    assert report["timeline"][1]["fromTier"] == "primary" and report["timeline"][1]["toTier"] == "distilled"


def test_plot_writes_a_png(spike: Replay, tmp_path: Path) -> None:
    out = tmp_path / "plot.png"
    plot(spike, CONTEXT, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_progress_line_counts_and_stays_silent_when_off() -> None:
    stream = io.StringIO()
    progress = ProgressLine(4, "backtest", enabled=True, stream=stream)
    progress(1)
    progress(3)
    progress.close()
    assert "4/4" in stream.getvalue()
    quiet = io.StringIO()
    off = ProgressLine(4, "backtest", enabled=False, stream=quiet)
    off(4)
    off.close()
    assert quiet.getvalue() == "" and off.done == 4


def run(tmp_path: Path, manifest: str, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    path = tmp_path / "policy.yaml"
    path.write_text(manifest)
    status = backtest(build_parser().parse_args(["backtest", "-f", str(path), *args]), io.StringIO())
    return status, capsys.readouterr().err


def test_refusals_exit_2_before_any_query(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    valid = VALID[0].path.read_text()
    status, err = run(tmp_path, valid, "--since", "1h", capsys=capsys)
    assert status == 2 and "no Prometheus" in err
    status, err = run(tmp_path, valid, "--prometheus", "http://127.0.0.1:9", "--start", "yesterday", capsys=capsys)
    assert status == 2 and "not a time" in err
    status, err = run(tmp_path, valid, "--prometheus", "http://127.0.0.1:9", "--start", "-1h", "--end", "-2h",
                      capsys=capsys)
    assert status == 2 and "before its start" in err
    status, err = run(tmp_path, valid, "--prometheus", "http://127.0.0.1:9", "--since", "1h", "--approval-delay",
                      "soon", capsys=capsys)
    assert status == 2 and "not a duration: 'soon'" in err
    status, err = run(tmp_path, "apiVersion: v1\nkind: ConfigMap\n", "--since", "1h", capsys=capsys)
    assert status == 2 and "expected exactly one FallbackPolicy" in err
    broken = valid.replace('belowRatio: "0.5"', 'belowRatio: "most"')
    assert broken != valid
    status, err = run(tmp_path, broken, "--since", "1h", "--prometheus", "http://127.0.0.1:9", capsys=capsys)
    assert status == 2 and "is invalid" in err and "spec.triggers[1]" in err


def test_start_and_since_are_exclusive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["backtest", "-f", "p.yaml", "--start", "-1h", "--since", "1h"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["backtest", "-f", "p.yaml"])


def test_the_policys_own_prometheus_is_not_the_default(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A backtest reads the operator's Prometheus (the flag, else $UNDERSTUDY_PROMETHEUS_URL), never a URL the
    policy's author wrote (security review L6)."""
    own = next(c for c in VALID if "prometheusURL: http" in c.path.read_text()).path.read_text()
    monkeypatch.delenv("UNDERSTUDY_PROMETHEUS_URL", raising=False)
    status, err = run(tmp_path, own, "--since", "1h", capsys=capsys)
    assert status == 2 and "no Prometheus" in err and "UNDERSTUDY_PROMETHEUS_URL" in err
    monkeypatch.setenv("UNDERSTUDY_PROMETHEUS_URL", "http://admin:hunter2@127.0.0.1:9")
    status, err = run(tmp_path, own, "--since", "1h", "--timeout", "1", capsys=capsys)
    assert status == 1 and "range query failed at http://127.0.0.1:9" in err and "hunter2" not in err
