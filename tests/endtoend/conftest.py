"""Fixtures for the operator's end-to-end tests: the CRD installed once, and a wired scenario per test."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from e2e.harness.cluster import ControlPlane
from e2e.harness.prometheus import PrometheusServer
from e2e.llm_scenario import LLMScenario
from e2e.scenario import Scenario

CRD = Path(__file__).resolve().parents[2] / "crds" / "understudy.dev_fallbackpolicies.yaml"


@pytest.fixture(scope="session")
def fallbackpolicy_crd(control_plane: ControlPlane) -> None:
    """The FallbackPolicy CRD from crds/, applied server-side and Established."""
    control_plane.run_kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    control_plane.run_kubectl("wait", "--for=condition=Established", "--timeout=60s",
                              "crd/fallbackpolicies.understudy.dev")


@pytest.fixture
def make_scenario(control_plane: ControlPlane, kube_api: Any, namespace: str, fallbackpolicy_crd: None,
                  tmp_path: Path) -> Iterator[Callable[..., Scenario]]:
    """Build the three-tier recommender in the test's namespace; everything it starts is stopped after."""
    made: list[Scenario] = []

    def build(prometheus: PrometheusServer, backend: str = "istio") -> Scenario:
        sc = Scenario(control_plane, prometheus, namespace, kube_api, backend, tmp_path)
        sc.__enter__()
        made.append(sc)
        return sc

    try:
        yield build
    finally:
        for sc in reversed(made):
            sc.close()


@pytest.fixture
def make_llm_scenario(control_plane: ControlPlane, kube_api: Any, namespace: str, fallbackpolicy_crd: None,
                      tmp_path: Path) -> Iterator[Callable[[PrometheusServer], LLMScenario]]:
    """Build the two-model chat assistant behind InferencePools; everything it starts is stopped after."""
    made: list[LLMScenario] = []

    def build(prometheus: PrometheusServer) -> LLMScenario:
        sc = LLMScenario(control_plane, prometheus, namespace, kube_api, workdir=tmp_path)
        sc.__enter__()
        made.append(sc)
        return sc

    try:
        yield build
    finally:
        for sc in reversed(made):
            sc.close()
