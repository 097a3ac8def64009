"""Roll a Deployment back to one of its revisions, the way `kubectl rollout undo --to-revision=N` does.

The revision's pod template lives in the ReplicaSet the Deployment controls whose
`deployment.kubernetes.io/revision` annotation is N. Like kubectl, the rollback copies that template
(without the controller's `pod-template-hash` label) into the Deployment, takes the ReplicaSet's
annotations except the bookkeeping ones the Deployment keeps for itself, refuses a paused Deployment,
and skips a revision whose template is already current. Unlike kubectl's unconditional patch, the write
carries the resourceVersion read, so two leaders (or a person's concurrent rollout) cannot interleave.
The controller then records the restored template as a new revision; revision N is renumbered away.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from kubernetes.client import AppsV1Api
from kubernetes.client.exceptions import ApiException

REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
HASH_LABEL = "pod-template-hash"
KEPT_ANNOTATIONS = frozenset({
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION_ANNOTATION,
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
})
"""Annotations the Deployment keeps and the ReplicaSet's copy never overwrites (kubectl's annotationsToSkip)."""

MAX_ATTEMPTS = 5
BACKOFF = 0.05
"""Seconds before the first re-read after a 409, doubled each time. The guard also trips on the
controller's own status writes (they move the resourceVersion too), which come in bursts."""


@dataclass(frozen=True)
class RollbackResult:
    """What a rollback did; `reason` is stable CamelCase.

    RolledBack (the only one that wrote), RevisionNotFound, AlreadyCurrent, Paused, DeploymentNotFound,
    Conflict (the Deployment kept changing under us).
    """

    rolled_back: bool
    reason: str
    message: str
    revision: str
    previous_revision: str | None = None
    """The revision that was current when the rollback was decided."""


def current_revision(apps: AppsV1Api, namespace: str, deployment: str) -> str | None:
    """The Deployment's current revision, or None before the controller has numbered it."""
    annotations = apps.read_namespaced_deployment(deployment, namespace).metadata.annotations or {}
    return annotations.get(REVISION_ANNOTATION)


def rollback_to_revision(apps: AppsV1Api, namespace: str, deployment: str, revision: str) -> RollbackResult:
    """Restore revision `revision`'s pod template into the Deployment, or say why not (without writing)."""
    where = f"Deployment {namespace}/{deployment}"
    for attempt in range(MAX_ATTEMPTS):
        if attempt:
            time.sleep(BACKOFF * 2 ** (attempt - 1))
        try:
            current = _load(apps.read_namespaced_deployment(deployment, namespace, _preload_content=False))
        except ApiException as e:
            if e.status == 404:
                return RollbackResult(False, "DeploymentNotFound", f"{where} does not exist", revision)
            raise
        annotations = current["metadata"].get("annotations") or {}
        previous = annotations.get(REVISION_ANNOTATION)

        def refuse(reason: str, message: str) -> RollbackResult:
            return RollbackResult(False, reason, message, revision, previous)

        source = _replica_set_of(apps, namespace, current, revision)
        if source is None:
            return refuse("RevisionNotFound", f"{where} has no ReplicaSet of revision {revision!r}")
        if current["spec"].get("paused"):
            return refuse("Paused", f"{where} is paused: resume it before rolling back")
        template = _without_hash(source["spec"]["template"])
        if template == _without_hash(current["spec"]["template"]):
            return refuse("AlreadyCurrent", f"{where} already runs the template of revision {revision}")

        restored = {k: v for k, v in annotations.items() if k in KEPT_ANNOTATIONS}
        restored.update(
            (k, v) for k, v in (source["metadata"].get("annotations") or {}).items() if k not in KEPT_ANNOTATIONS
        )
        patch = [
            {"op": "replace", "path": "/spec/template", "value": template},
            {"op": "add", "path": "/metadata/annotations", "value": restored},
            {"op": "replace", "path": "/metadata/resourceVersion", "value": current["metadata"]["resourceVersion"]},
        ]
        try:
            apps.patch_namespaced_deployment(deployment, namespace, patch, _preload_content=False)
        except ApiException as e:
            if e.status == 409:
                continue
            raise
        return RollbackResult(
            True, "RolledBack", f"{where} rolled back from revision {previous} to the template of revision {revision}",
            revision, previous,
        )
    return RollbackResult(
        False, "Conflict", f"{where} kept changing: gave up after {MAX_ATTEMPTS} conditional writes", revision
    )


def _load(response: Any) -> dict[str, Any]:
    """Raw JSON of a `_preload_content=False` response, so no field is lost in a typed-model round trip."""
    return json.loads(response.data)


def _replica_set_of(
    apps: AppsV1Api, namespace: str, deployment: dict[str, Any], revision: str
) -> dict[str, Any] | None:
    """The ReplicaSet controlled by `deployment` whose revision annotation is `revision`, if any."""
    match_labels = deployment["spec"].get("selector", {}).get("matchLabels") or {}
    selector = ",".join(f"{k}={v}" for k, v in sorted(match_labels.items()))
    listing = _load(apps.list_namespaced_replica_set(namespace, label_selector=selector, _preload_content=False))
    uid = deployment["metadata"]["uid"]
    for rs in listing.get("items", []):
        refs = rs["metadata"].get("ownerReferences", [])
        owned = any(ref.get("controller") and ref.get("uid") == uid for ref in refs)
        if owned and (rs["metadata"].get("annotations") or {}).get(REVISION_ANNOTATION) == revision:
            return rs
    return None


def _without_hash(template: dict[str, Any]) -> dict[str, Any]:
    """A copy of a pod template without the controller's hash label, as kubectl compares and restores it."""
    metadata = dict(template.get("metadata") or {})
    if "labels" in metadata:
        metadata["labels"] = {k: v for k, v in metadata["labels"].items() if k != HASH_LABEL}
    return {**template, "metadata": metadata}
