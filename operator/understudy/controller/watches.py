"""kopf watches of the routing objects policies manage: Istio VirtualServices, Gateway API HTTPRoutes
and core Services.

Each event keeps a compact snapshot (`drift.snapshot_of`: the resourceVersion and the managed fields
only) in `memo.store.routing`, a `RoutingStore`. The watch is the only read: the evaluation loop compares these
snapshots with what it last wrote (`drift.drift`) and makes no request at all while they agree. A kind
whose CRD is not installed is simply not watched until it is (kopf follows CRDs as they appear).
"""
from __future__ import annotations

from typing import Any, Mapping

import kopf

from understudy.controller.drift import HTTP_ROUTE, SERVICE, VIRTUAL_SERVICE, RoutingStore


def _put(kind: str, event: Mapping[str, Any], namespace: str, name: str, meta: Any, spec: Any,
         memo: kopf.Memo) -> None:
    routing: RoutingStore = memo.store.routing  # made at startup, before kopf starts watching
    routing.put(kind, namespace, name, str(meta.get("resourceVersion") or ""), spec or {},
                event.get("type") == "DELETED")


@kopf.on.event("networking.istio.io", "v1", "virtualservices")
async def virtual_service_event(event: Mapping[str, Any], namespace: str, name: str, meta: Any, spec: Any,
                                memo: kopf.Memo, **_: Any) -> None:
    _put(VIRTUAL_SERVICE, event, namespace, name, meta, spec, memo)


@kopf.on.event("gateway.networking.k8s.io", "v1", "httproutes")
async def http_route_event(event: Mapping[str, Any], namespace: str, name: str, meta: Any, spec: Any,
                           memo: kopf.Memo, **_: Any) -> None:
    _put(HTTP_ROUTE, event, namespace, name, meta, spec, memo)


@kopf.on.event("v1", "services")
async def service_event(event: Mapping[str, Any], namespace: str, name: str, meta: Any, spec: Any,
                        memo: kopf.Memo, **_: Any) -> None:
    _put(SERVICE, event, namespace, name, meta, spec, memo)
