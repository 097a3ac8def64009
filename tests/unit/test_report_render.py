"""The report's table and JSON for the known answer of test_report_assemble, and the command's arguments."""
from __future__ import annotations

import json

import pytest

from tests.unit.test_report_assemble import ANSWERS, STATUS, inputs
from understudy.cli import build_parser
from understudy.report.assemble import assemble
from understudy.report.render import table, to_json

URL = "http://127.0.0.1:9090"


def test_table_states_each_criterion() -> None:
    text = table(assemble(inputs(), ANSWERS), URL)
    lines = {line.split("  ")[1].strip(): line for line in text.splitlines() if line.startswith("  ") and "  " in line[2:]}
    assert "1 FallbackActivated (from status.history)" in lines["fallback activations"]
    assert "13m20s (22.2% of 1h" in lines["time in fallback"]
    assert "0.050 over the creep window 1d" in lines["fallback ratio"]
    assert "50% (fallbackRatio / maxFallbackRatio 0.1)" in lines["creep budget used"]
    assert "+897.5 ms (p99 primary 995.0 ms during fallback vs fallback 97.5 ms" in lines["latency gained"]
    assert lines["last known good rev"].endswith(" 3")
    assert lines["last drill"].endswith("no drill on record")
    rows = [line.split() for line in text.splitlines()]
    assert ["primary", "rec-large", "46m40s", "77.8%", "995.0", "ms", "10", "0.930", "100"] in rows
    assert ["distilled", "rec-small", "13m20s", "22.2%", "97.5", "ms", "100", "0.880", "50"] in rows
    assert ["a", "300", "30", "10.0%", "-5.0", "pt"] in rows
    assert ["b", "100", "30", "30.0%", "+15.0", "pt"] in rows


def test_table_says_when_the_segment_label_is_absent() -> None:
    text = table(assemble(inputs(), {**ANSWERS, "segment_present": []}), URL)
    assert "Fallback share per segment: label 'request_segment' not found on istio_requests_total" in text


def test_json_round_trips_with_the_figures() -> None:
    doc = json.loads(json.dumps(to_json(assemble(inputs(), ANSWERS), URL)))
    assert doc["activations"] == {"count": 1, "source": "status.history", "lowerBound": False,
                                  "fromHistory": 1, "fromPrometheus": None}
    assert doc["timeInFallback"] == {"seconds": 800, "coveredSeconds": 3600, "source": "status.history"}
    assert doc["latency"]["gainedMs"] == pytest.approx(897.5)
    assert [t["meanConfidence"] for t in doc["tiers"]] == [pytest.approx(0.93), pytest.approx(0.88)]
    assert doc["creep"]["budgetUsed"] == pytest.approx(0.5) and doc["fallbackRatio"] == pytest.approx(0.05)
    assert doc["lastKnownGoodRevision"] == STATUS["lastKnownGoodRevision"]
    assert doc["lastDrill"] is None and doc["lastDrillNote"] == "no drill on record"
    assert doc["segments"]["found"] and doc["segments"]["overallShare"] == pytest.approx(0.15)
    assert doc["window"] == {"start": "2026-01-05T00:16:40Z", "end": "2026-01-05T01:16:40Z", "seconds": 3600}


def test_arguments() -> None:
    args = build_parser().parse_args(["report", "recommender", "-n", "ml", "--since", "7d", "--json",
                                      "--segment-label", "request_segment", "--end", "-1h"])
    assert (args.name, args.namespace, args.since, args.json, args.segment_label, args.end) == (
        "recommender", "ml", "7d", True, "request_segment", "-1h")
    assert args.confidence_metric == "model_prediction_confidence" and args.quantile == 0.99
    defaults = build_parser().parse_args(["report", "recommender"])
    assert (defaults.since, defaults.namespace, defaults.prometheus, defaults.segment_label) == (
        "24h", None, None, None)


@pytest.mark.parametrize("flags", [
    ["--segment-label", 'seg"}) or vector(1'],
    ["--confidence-metric", "model confidence"],
    ["--quantile", "1"],
])
def test_arguments_that_would_change_the_promql_are_refused(flags: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["report", "recommender", *flags])
    assert exit_.value.code == 2
