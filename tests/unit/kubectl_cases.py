"""FallbackPolicy objects, Deployments and Events as the API server returns them, for the plugin's unit tests:
the recommender of e2e/scenario.py at moments of a failover."""
from __future__ import annotations

import copy
from typing import Any

T0 = 1_796_119_323.0
"""2026-12-01T10:02:03Z: the fallback."""
NOW = T0 + 130
MS = int(T0 * 1000)
TIERS = ("primary", "distilled", "popular-items")
DEPLOYMENTS = {"primary": "recommender-large", "distilled": "recommender-small", "popular-items": "popularity-baseline"}

SPEC: dict[str, Any] = {
    "primary": {"deploymentName": "recommender-large", "serviceName": "recommender-large"},
    "fallbacks": [{"name": n, "deploymentName": DEPLOYMENTS[n], "serviceName": DEPLOYMENTS[n],
                   "degradation": {"description": "a smaller model", "acceptedBy": "ml-product@example.com"}}
                  for n in TIERS[1:]],
    "routing": {"istio": {"virtualServiceName": "recommender", "routeName": "default"}},
    "triggers": [{"name": "p99-latency", "latency": {"quantile": "0.99", "above": "1s"}},
                 {"name": "errors", "errorRatio": {"above": "0.1"}}],
    "evaluation": {"interval": "1s", "window": "5s", "tripAfter": 2, "recoverAfter": 3, "minDwell": "3s",
                   "restoreSteps": [50, 100]},
    "creep": {"maxFallbackRatio": "0.5", "window": "10m", "action": "Alert"},
}


def condition(kind: str, status: str, reason: str, since: str = "2026-12-01T10:00:00Z") -> dict[str, Any]:
    return {"type": kind, "status": status, "reason": reason, "message": "", "lastTransitionTime": since,
            "observedGeneration": 1}


def tier(name: str, breach: int = 0, clear: int = 3, tripped: bool = False, trigger: str | None = None,
         **extra: Any) -> dict[str, Any]:
    d = {"name": name, "breachStreak": breach, "clearStreak": clear, "tripped": tripped, "capacityShort": False,
         **extra}
    return d | ({"tripTrigger": trigger} if trigger else {})


def weights(*shares: int) -> list[dict[str, Any]]:
    return [{"tier": n, "weight": w} for n, w in zip(TIERS, shares)]


FALLBACK_ENTRY = {
    "time": "2026-12-01T10:02:03Z", "fromTier": "primary", "toTier": "distilled", "reason": "FallbackActivated",
    "trigger": "p99-latency", "observed": "2412.5", "threshold": "1000",
    "message": "primary unfit (p99-latency 2412.5 above 1000); all traffic falls back to distilled"}


def policy(active: str = "distilled", shares: tuple[int, int, int] = (0, 100, 0),
           tiers: list[dict[str, Any]] | None = None, history: list[dict[str, Any]] | None = None,
           spec: dict[str, Any] | None = None, **engine: Any) -> dict[str, Any]:
    """The policy after the fallback at T0, unless told otherwise; `engine` adds status.engine fields."""
    body = copy.deepcopy(SPEC)
    for key, value in (spec or {}).items():
        body[key] = {**body.get(key, {}), **value} if isinstance(value, dict) else value
    state = {
        "activeTier": active, "weights": weights(*shares),
        "tiers": tiers if tiers is not None else [tier("primary", 2, 0, True, "p99-latency"), tier("distilled"),
                                                  tier("popular-items")],
        "paused": False, "allTiersBreached": False, "metricsMissing": False, "creepExceeded": False,
        "creepBuckets": [], "lastTransitionMs": MS, "lastEvaluationMs": MS + 120_000, **engine,
    }
    fallback = active != "primary" or shares[0] < 100
    return {
        "apiVersion": "understudy.dev/v1alpha1", "kind": "FallbackPolicy",
        "metadata": {"name": "recommender", "namespace": "ml", "uid": "uid-1", "generation": 1},
        "spec": body,
        "status": {
            "observedGeneration": 1, "activeTier": active, "primaryWeight": shares[0], "weights": weights(*shares),
            "conditions": [condition("Ready", "True", "Evaluated"),
                           condition("FallbackActive", "True" if fallback else "False",
                                     "FallbackServing" if fallback else "PrimaryServing", "2026-12-01T10:02:03Z"),
                           condition("MetricsAvailable", "True", "MetricsAvailable"),
                           condition("CreepBudgetExceeded", "False", "WithinBudget")],
            "fallbackRatio": "0.083",
            "history": history if history is not None else [FALLBACK_ENTRY],
            "engine": state,
        },
    }


def deployments(ready: int = 2, missing: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    return {d: {"metadata": {"name": d}, "spec": {"replicas": 2}, "status": {"readyReplicas": ready}}
            for n, d in DEPLOYMENTS.items() if n not in missing}


def event(reason: str, kind: str, at: str, note: str, uid: str = "uid-1") -> dict[str, Any]:
    return {"metadata": {"name": f"recommender.{reason}"}, "reason": reason, "type": kind, "eventTime": at,
            "regarding": {"kind": "FallbackPolicy", "name": "recommender", "uid": uid}, "note": note}


TRIPPED = event("TierTripped", "Warning", "2026-12-01T10:02:02.500000Z",
                "primary: p99-latency 2412.5 above 1000 for 2 evaluations | trigger=p99-latency tier=primary "
                "observed=2412.5 threshold=1000")
FELL_BACK = event("FallbackActivated", "Warning", "2026-12-01T10:02:03.100000Z",
                  "primary unfit (p99-latency 2412.5 above 1000); all traffic falls back to distilled | "
                  "trigger=p99-latency tier=primary observed=2412.5 threshold=1000 from=primary to=distilled")
EVENTS = [TRIPPED, FELL_BACK]
