"""The README's "LLM platforms" section keeps its promises: one valid example per preset, a table of the
metric names each preset reads that matches the presets the operator uses, and a relabelling rule that
turns a pod's ReplicaSet into its Deployment."""
from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
import yaml

from tests.corpus import README, readme_llm_examples
from understudy.api import FallbackPolicy
from understudy.cli import build_parser, validate
from understudy.signals.presets import KIND_FIELDS, PRESETS, Preset


def test_one_valid_example_per_preset() -> None:
    examples = readme_llm_examples()
    assert sorted(examples) == sorted(p.value for p in Preset)
    for document in examples.values():
        FallbackPolicy.model_validate(document)


def test_validate_prints_the_promql_of_every_example(tmp_path: Path) -> None:
    path = tmp_path / "examples.yaml"
    path.write_text(yaml.safe_dump_all(list(readme_llm_examples().values())))
    out = io.StringIO()
    assert validate(build_parser().parse_args(["validate", "-f", str(path)]), out) == 0
    assert "vllm:time_to_first_token_seconds_bucket" in out.getvalue()
    assert "nv_inference_first_response_histogram_ms_bucket" in out.getvalue()


def _table() -> dict[str, dict[str, str]]:
    text = README.read_text()
    section = text[text.index("## LLM platforms"):]
    header, *rows = [line for line in section.splitlines() if line.startswith("| ")][:9]
    presets = [cell.strip() for cell in header.strip("|").split("|")][1:]
    table: dict[str, dict[str, str]] = {}
    for row in rows:
        kind, *cells = [cell.strip() for cell in row.strip("|").split("|")]
        table[kind.split()[0].strip("`")] = dict(zip(presets, cells))
    return table


def test_the_table_names_what_each_preset_reads() -> None:
    table = _table()
    for preset, server in PRESETS.items():
        row = table["requests"][preset.value]
        assert all(name in server.requests for name in re.findall(r"`([^`]+)`", row)), (preset, row)
        for kind, field in KIND_FIELDS.items():
            cell = table[kind][preset.value]
            source = getattr(server, field)
            if source is None:
                assert cell == "—", (preset, kind, cell)
                continue
            names = [source.metric] if hasattr(source, "metric") else \
                [n for n in (source.response_code_label, source.failures, source.successes) if n] \
                if kind == "errorRatio" else [source]
            assert any(f"`{name}`" in cell for name in names), (preset, kind, cell)


@pytest.mark.parametrize(("pod_controller", "deployment"), [
    ("ReplicaSet;llm-large-7d9f8c6b5", "llm-large"),
    ("ReplicaSet;tgi-8b-5c9d7b8f49", "tgi-8b"),
])
def test_the_relabelling_rule_derives_the_deployment(pod_controller: str, deployment: str) -> None:
    rule = re.search(r"regex: (\S+)", README.read_text()[README.read_text().index("## LLM platforms"):])
    assert rule is not None
    match = re.fullmatch(rule.group(1), pod_controller)  # Prometheus anchors relabel regexes
    assert match is not None and match.group(1) == deployment
