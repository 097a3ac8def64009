"""The one small interface every routing backend implements, and what the backends share.

Backends are synchronous on purpose: the operator calls them from a worker thread, and the tests call
them directly against a real API server. Every write is a JSON patch that carries the resourceVersion
the backend read, so the API server turns a concurrent change (a person's edit, a second leader) into a
409 instead of a lost update; the backend then re-reads and re-plans, a bounded number of times.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from understudy.engine.model import Tier
from understudy.routing.targets import (  # re-exported: the backends and their callers name them here
    GatewayAPITarget,
    IstioTarget,
    RoutingBackend,
    RoutingTarget,
    RoutingTargetError,
    ServiceTarget,
    Weights,
)

JsonPatch = list[dict[str, Any]]

MAX_ATTEMPTS = 5
"""Read-modify-write attempts before giving up with reason Conflict."""
BACKOFF = 0.05
"""Seconds before the first re-read after a 409, doubled each time: lets a burst of writes settle."""


def check_weights(weights: Weights, tiers: Sequence[Tier]) -> dict[str, int]:
    """Refuse weights that do not name every tier exactly once or do not sum to 100: a caller's bug."""
    names = [name for name, _ in weights]
    expected = [t.name for t in tiers]
    if sorted(names) != sorted(expected):
        raise ValueError(f"weights name tiers {names}, the policy has {expected}")
    if any(not isinstance(w, int) or w < 0 or w > 100 for _, w in weights):
        raise ValueError(f"weights must be integers in 0..100: {weights}")
    if sum(w for _, w in weights) != 100:
        raise ValueError(f"weights must sum to 100: {weights}")
    return dict(weights)


def percentages(tiers: Sequence[Tier], raw: dict[str, int]) -> Weights:
    """Relative weights as percents summing to 100 (largest remainder), in tier order.

    Istio and Gateway API weights are relative, so a person's 1/1 reads as 50/50. All zero (no traffic
    is routed at all) reads as all zero: that is the truth, not a rounding problem.
    """
    total = sum(raw.get(t.name, 0) for t in tiers)
    if total == 0:
        return tuple((t.name, 0) for t in tiers)
    exact = [(t.name, raw.get(t.name, 0) * 100 / total) for t in tiers]
    floors = {name: int(value) for name, value in exact}
    short = 100 - sum(floors.values())
    by_remainder = sorted(exact, key=lambda nv: nv[1] - int(nv[1]), reverse=True)
    for name, _ in by_remainder[:short]:
        floors[name] += 1
    return tuple((t.name, floors[t.name]) for t in tiers)


def load(response: Any) -> dict[str, Any]:
    """The raw JSON of a `_preload_content=False` response: no typed-model round trip loses fields."""
    return json.loads(response.data)


def translate(error: ApiException, kind: str, name: str, namespace: str) -> Exception:
    """The API error a person can act on, as a RoutingTargetError; anything else unchanged."""
    where = f"{kind} {namespace}/{name}"
    if error.status == 404:
        # a missing object comes with a Status; a missing API (CRD not installed) with a bare 404 page
        if _server_message(error) is None:
            return RoutingTargetError(
                "TargetNotFound", f"the API server does not serve the {kind} API at all (is its CRD installed?)"
            )
        return RoutingTargetError("TargetNotFound", f"{where} does not exist")
    said = _server_message(error) or error.reason
    if error.status == 403:
        return RoutingTargetError("Forbidden", f"the operator may not access {where}: {said}")
    if error.status == 422:
        return RoutingTargetError("Invalid", f"the API server rejected the change to {where}: {said}")
    return error


UNAVAILABLE = "RoutingUnavailable"
WRITE_ERRORS = (RoutingTargetError, ApiException, HTTPError)
"""What a routing write may raise for a reason outside the operator (anything else is a bug)."""


def write_failure(err: Exception) -> tuple[str, str]:
    """(reason, message) of a failed routing write, for Ready=False and the RoutingFailed Event: the routing
    error's own, or RoutingUnavailable when the API server answered 429/5xx or not at all."""
    if isinstance(err, RoutingTargetError):
        return err.reason, err.message
    if isinstance(err, ApiException):
        return UNAVAILABLE, f"the API server answered {err.status} {err.reason} to the routing write"
    return UNAVAILABLE, f"the routing write got no answer from the API server: {err}"


def _server_message(error: ApiException) -> str | None:
    """The `message` of the API server's Status body; None when the body is no Status."""
    try:
        return str(json.loads(error.body)["message"])
    except (TypeError, ValueError, KeyError):
        return None


def read_modify_write(
    kind: str,
    name: str,
    namespace: str,
    fetch: Callable[[], dict[str, Any]],
    plan: Callable[[dict[str, Any]], JsonPatch],
    patch: Callable[[JsonPatch], object],
) -> bool:
    """Fetch, plan a JSON patch, and write it conditionally on the fetched resourceVersion.

    An empty plan means the object is already right: nothing is written. A 409 means someone changed
    the object in between: fetch and plan again after a short backoff, at most MAX_ATTEMPTS times.
    """
    for attempt in range(MAX_ATTEMPTS):
        try:
            obj = fetch()
        except ApiException as e:
            raise translate(e, kind, name, namespace) from e
        ops = plan(obj)
        if not ops:
            return False
        guard = {"op": "replace", "path": "/metadata/resourceVersion", "value": obj["metadata"]["resourceVersion"]}
        try:
            patch([*ops, guard])
            return True
        except ApiException as e:
            if e.status != 409:
                raise translate(e, kind, name, namespace) from e
        if attempt + 1 < MAX_ATTEMPTS:
            time.sleep(BACKOFF * 2**attempt)
    raise RoutingTargetError(
        "Conflict", f"{kind} {namespace}/{name} kept changing: gave up after {MAX_ATTEMPTS} conditional writes"
    )


def pointer(*parts: str | int) -> str:
    """A JSON pointer (RFC 6901) from path segments."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


@dataclass(frozen=True)
class CustomObject:
    """One namespaced custom object a backend rewrites (a VirtualService, an HTTPRoute): read it, and
    JSON-patch it through `read_modify_write`, so every custom-object backend shares one guarded write."""

    api: Any
    """A kubernetes.client.CustomObjectsApi."""
    group: str
    version: str
    plural: str
    kind: str
    name: str

    def fetch(self, namespace: str) -> dict[str, Any]:
        try:
            obj: dict[str, Any] = self.api.get_namespaced_custom_object(
                self.group, self.version, namespace, self.plural, self.name)
            return obj
        except ApiException as e:
            raise translate(e, self.kind, self.name, namespace) from e

    def rewrite(self, namespace: str, plan: Callable[[dict[str, Any]], JsonPatch]) -> bool:
        return read_modify_write(
            self.kind, self.name, namespace,
            fetch=lambda: self.fetch(namespace),
            plan=plan,
            patch=lambda ops: self.api.patch_namespaced_custom_object(
                self.group, self.version, namespace, self.plural, self.name, ops,
                _content_type="application/json-patch+json"),
        )
