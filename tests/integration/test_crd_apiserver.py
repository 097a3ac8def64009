"""The CRD in a real kube-apiserver: it must accept and reject exactly the corpus documents the pydantic
models accept and reject, with the expected messages, and default them the same way.

Documents are created with a server-side dry run and strict field validation (what `kubectl apply`
does), so the structural schema, defaulting and every CEL rule run for real without storing anything.
"""
from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.corpus import INVALID, VALID, Case, readme_llm_examples
from understudy.api import FallbackPolicy, FallbackPolicyStatus
from understudy.engine.governance_state import (
    Attempt,
    GovernanceState,
    KnownGood,
    Phase,
    PrimaryRevision,
    Rollback,
    ScaledTier,
    Scaling,
    governance_from_status,
    governance_to_status,
)

pytestmark = pytest.mark.cluster

CRD_PATH = Path(__file__).resolve().parents[2] / "crds" / "understudy.dev_fallbackpolicies.yaml"
GROUP, VERSION, PLURAL = "understudy.dev", "v1alpha1", "fallbackpolicies"


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 60.0) -> Any:
    """Poll until probe returns something truthy; fail with the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.25)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}; last value: {last!r}")


@pytest.fixture(scope="module")
def crd(control_plane: Any, kube_api: Any) -> Iterator[dict[str, Any]]:
    """The CRD, created (or replaced, if another test installed it) and Established."""
    ext = client.ApiextensionsV1Api(kube_api)
    doc: dict[str, Any] = yaml.safe_load(CRD_PATH.read_text())
    name = doc["metadata"]["name"]
    try:
        ext.create_custom_resource_definition(doc)
    except ApiException as err:
        if err.status != 409:
            raise
        current = ext.read_custom_resource_definition(name)
        doc["metadata"]["resourceVersion"] = current.metadata.resource_version
        ext.replace_custom_resource_definition(name, doc)

    def conditions() -> dict[str, str]:
        crd = ext.read_custom_resource_definition(name)
        found = {c.type: c.status for c in (crd.status.conditions or [])}
        return found if found.get("Established") == "True" else {}

    found = wait_for("the FallbackPolicy CRD to be Established", conditions)
    assert found.get("NonStructuralSchema") != "True", found
    yield doc


def create(kube_api: Any, namespace: str, document: dict[str, Any], dry_run: bool = True) -> dict[str, Any]:
    body = yaml.safe_load(yaml.safe_dump(document))
    body["metadata"]["namespace"] = namespace
    created: dict[str, Any] = client.CustomObjectsApi(kube_api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, body, field_validation="Strict", **({"dry_run": "All"} if dry_run else {})
    )
    return created


@pytest.mark.parametrize("case", VALID, ids=lambda c: c.id)
def test_valid_policy_is_accepted_and_defaulted_like_the_models(
    crd: dict[str, Any], kube_api: Any, namespace: str, case: Case
) -> None:
    created = create(kube_api, namespace, case.document)
    spec = FallbackPolicy.model_validate(case.document).spec
    assert created["spec"] == spec.model_dump(by_alias=True, exclude_none=True, mode="json")


@pytest.mark.parametrize("preset", sorted(readme_llm_examples()))
def test_the_readmes_llm_examples_are_accepted_as_written(
    crd: dict[str, Any], kube_api: Any, namespace: str, preset: str
) -> None:
    document = readme_llm_examples()[preset]
    created = create(kube_api, namespace, document)
    assert created["spec"]["signals"]["preset"] == preset
    assert created["spec"] == FallbackPolicy.model_validate(document).spec.model_dump(
        by_alias=True, exclude_none=True, mode="json")


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.id)
def test_invalid_policy_is_rejected_with_the_expected_message(
    crd: dict[str, Any], kube_api: Any, namespace: str, case: Case
) -> None:
    with pytest.raises(ApiException) as caught:
        create(kube_api, namespace, case.document)
    assert caught.value.status in (400, 422), caught.value.body
    message = json.loads(caught.value.body)["message"]
    assert case.expect_apiserver in message, f"{case.reason}: {message}"


def test_kubectl_explain_documents_the_triggers(crd: dict[str, Any], control_plane: Any) -> None:
    """The built kubectl, reading the published OpenAPI (it can lag Established by a few seconds)."""

    def explain() -> str:
        done = control_plane.run_kubectl("explain", "fallbackpolicy.spec.triggers", check=False)
        return done.stdout if done.returncode == 0 else ""

    text = wait_for("kubectl explain to know FallbackPolicy", explain)
    assert "The explicit limits" in text
    for field in ("latency", "errorRatio", "readyReplicas", "query", "appliesTo", "name"):
        assert f"\n  {field}\t" in text, f"{field} missing from:\n{text}"
    assert "Breached when the tier's latency quantile" in text
    latency = control_plane.run_kubectl("explain", "fbp.spec.triggers.latency.above").stdout
    assert "a positive duration such as" in latency


def test_status_subresource_and_printer_columns(crd: dict[str, Any], kube_api: Any, namespace: str,
                                                control_plane: Any) -> None:
    """A status written from the pydantic models is accepted and shows up in `kubectl get fbp`."""
    case = next(c for c in VALID if c.path.stem == "recommender-istio-full")
    created = create(kube_api, namespace, case.document, dry_run=False)
    name = created["metadata"]["name"]
    status = FallbackPolicyStatus.model_validate({
        "observedGeneration": created["metadata"]["generation"],
        "activeTier": "distilled",
        "primaryWeight": 10,
        "weights": [{"tier": "primary", "weight": 10}, {"tier": "distilled", "weight": 90},
                    {"tier": "popular-items", "weight": 0}],
        "conditions": [{"type": "Ready", "status": "True", "reason": "Evaluating", "message": "evaluating",
                        "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1}],
        "fallbackRatio": "0.030",
        "lastKnownGoodRevision": "7",
        "history": [{"time": "2026-01-01T00:00:00Z", "fromTier": "primary", "toTier": "distilled",
                     "reason": "TriggerBreached", "trigger": "p99-latency", "observed": "312.5",
                     "threshold": "250", "message": "p99 latency 312.5ms above 250ms twice"}],
        "engine": {"anything": {"the": "engine keeps"}},
    })
    body = {"status": status.model_dump(by_alias=True, exclude_none=True, mode="json")}
    api = client.CustomObjectsApi(kube_api)
    patched = api.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, name, body)
    assert patched["status"] == body["status"]

    table = control_plane.run_kubectl("get", "fbp", name, "-n", namespace, "-o", "wide").stdout
    header, row = table.splitlines()[:2]
    assert header.split() == ["NAME", "ACTIVE", "PRIMARY-WEIGHT", "READY", "MODE", "AGE"]
    assert row.split()[:5] == [name, "distilled", "10", "True", "Enforce"]

    too_long = {"status": {"history": body["status"]["history"] * 21}}
    with pytest.raises(ApiException) as caught:
        api.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, name, too_long)
    assert "must have at most 20 items" in json.loads(caught.value.body)["message"]
    with contextlib.suppress(ApiException):
        api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)


def test_the_governance_status_is_accepted_and_read_back_exactly(crd: dict[str, Any], kube_api: Any,
                                                                 namespace: str) -> None:
    """Every governance field as `governance_to_status` writes it passes the CRD and the models, and reads
    back into the same state; a scaled-tier size beyond the CRD's ceiling is refused (security review M2)."""
    case = next(c for c in VALID if c.path.stem == "recommender-istio-full")
    name = create(kube_api, namespace, {**case.document, "metadata": {"name": "governed"}}, dry_run=False)[
        "metadata"]["name"]
    attempt = Attempt(Phase.RETRYING, 1_767_225_600_000, 3, 2, 1_767_225_660_000, "the API server said 429")
    state = GovernanceState(
        primary_revision=PrimaryRevision("4", 1_767_225_000_000, 1_767_225_100_000),
        known_good=KnownGood("3", 1_767_200_000_000),
        scaled=(ScaledTier("distilled", 2, 8),),
        rollback=Rollback("3", attempt),
        scaling=(Scaling("popular-items", 6, 1, replace(attempt, phase=Phase.PENDING, retry_ms=None)),),
    )
    written = {k: v for k, v in governance_to_status(state).items() if v is not None}
    FallbackPolicyStatus.model_validate(written)
    api = client.CustomObjectsApi(kube_api)
    try:
        patched = api.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, name,
                                                            {"status": written})
        assert governance_from_status(patched["status"], 1_767_300_000.0) == (state, ())
        beyond = {"status": {"scaledTiers": [{"tier": "distilled", "replicas": 5000, "scaledTo": 8}]}}
        with pytest.raises(ApiException) as caught:
            api.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, name, beyond)
        assert "should be less than or equal to 1000" in json.loads(caught.value.body)["message"]
    finally:
        with contextlib.suppress(ApiException):
            api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
