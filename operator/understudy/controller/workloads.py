"""The writer's side of governance: carrying out the engine's intents, and reading the routing object.

Called by the writer only after the status write that records the decision has succeeded (status is the
fence: a stale leader's intents never run). Each intent yields one outcome, which the next `govern` call
receives: the engine, not this module, owns retries, back-off and the audit records.
"""
from __future__ import annotations

import logging
from typing import Callable, Sequence

from kubernetes.client import ApiClient, AppsV1Api
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from understudy.controller.compile import Compiled
from understudy.engine.intents import Intent, IntentOutcome, RollbackIntent, ScaleIntent
from understudy.kube.scale import set_replicas
from understudy.rollback.deployment import rollback_to_revision
from understudy.routing import RoutingTargetError, backend_for

log = logging.getLogger(__name__)

PERMANENT_STATUSES = frozenset({400, 401, 403, 404, 405, 415})
"""API answers that retrying the same write will not change (forbidden, not found, malformed)."""
PERMANENT_ROLLBACK_REASONS = frozenset({"DeploymentNotFound", "RevisionNotFound", "AlreadyCurrent"})
"""rollback_to_revision refusals that stay true; Paused (a person may resume) and Conflict may pass."""


def carry_out(apps: AppsV1Api, namespace: str, intents: Sequence[Intent], now: Callable[[], float],
              on_write: Callable[[], None] = lambda: None) -> list[IntentOutcome]:
    """Carry out `intents` in order; one outcome each, never an exception for a refused write."""
    outcomes = []
    for intent in intents:
        if isinstance(intent, ScaleIntent):
            done, permanent, message = _scale(apps, namespace, intent)
        else:
            done, permanent, message = _rollback(apps, namespace, intent)
        if done:
            on_write()
        outcomes.append(IntentOutcome(intent, done, permanent, message, now()))
    return outcomes


def _scale(apps: AppsV1Api, namespace: str, intent: ScaleIntent) -> tuple[bool, bool, str]:
    try:
        set_replicas(apps, namespace, intent.deployment, intent.replicas, intent.expected)
    except ApiException as err:
        if err.status == 422:  # the test op failed: the next evaluation decides again on fresh replicas
            return False, False, (f"{intent.deployment} no longer has {intent.expected} replicas "
                                  "(someone else changed them)")
        return False, err.status in PERMANENT_STATUSES, f"the API server refused: {err.status} {err.reason}"
    except (OSError, HTTPError) as err:
        return False, False, f"the API server did not answer: {err}"
    return True, False, f"scaled to {intent.replicas} replicas"


def _rollback(apps: AppsV1Api, namespace: str, intent: RollbackIntent) -> tuple[bool, bool, str]:
    try:
        result = rollback_to_revision(apps, namespace, intent.deployment, intent.revision)
    except ApiException as err:
        permanent = err.status in PERMANENT_STATUSES or err.status == 422
        return False, permanent, f"the API server refused: {err.status} {err.reason}"
    except (OSError, HTTPError) as err:
        return False, False, f"the API server did not answer: {err}"
    if result.rolled_back:
        return True, False, result.message
    return False, result.reason in PERMANENT_ROLLBACK_REASONS, f"{result.reason}: {result.message}"


def observed_weights(api: ApiClient, compiled: Compiled, namespace: str) -> dict[str, int] | None:
    """The weights the policy's routing object carries now, by tier name; None when it cannot be read.

    Used only when status holds no weights that can be trusted, so that a damaged status never sends
    traffic back to the primary by default.
    """
    try:
        return dict(backend_for(api, compiled.routing, compiled.policy.tiers).read(namespace))
    except (RoutingTargetError, ApiException, OSError, HTTPError) as err:
        log.warning("could not read the routing weights in %s: %s", namespace, err)
        return None
