"""The operator's in-memory snapshots: a deletion removes the object, and every change moves the counter
the evaluation loop uses to decide whether to copy the snapshots again."""
from __future__ import annotations

import json

from understudy.controller.store import DeploymentSnapshot, PolicySnapshot, Store


def test_put_and_delete_move_the_change_counter() -> None:
    store = Store()
    snap = PolicySnapshot.of("ml", "rec", "uid-1", 1, "10", {"primary": {"deploymentName": "big"}}, {})
    store.put(store.policies, ("ml", "rec"), snap, deleted=False)
    store.put(store.deployments, ("ml", "big"), DeploymentSnapshot(1, 1, "1"), deleted=False)
    assert store.policies[("ml", "rec")].spec == {"primary": {"deploymentName": "big"}}
    assert store.changes == 2
    store.put(store.policies, ("ml", "rec"), snap, deleted=True)
    assert ("ml", "rec") not in store.policies and store.changes == 3
    store.put(store.policies, ("ml", "gone"), snap, deleted=True)  # an unknown deletion is harmless
    assert store.changes == 4


def test_snapshots_keep_spec_as_json_and_status_packed() -> None:
    status = {"activeTier": "primary", "history": [{"reason": "Activated", "message": "p99 above 200ms"}] * 20}
    snap = PolicySnapshot.of("ml", "rec", "uid-1", 1, "10", {"a": 1}, status)
    assert snap.status == status and snap.status is not snap.status  # a fresh dict per parse
    assert snap.spec == {"a": 1} and " " not in snap.spec_json
    assert len(snap.status_packed) * 5 < len(json.dumps(status))
