"""The first evaluation waits until the policy watch has delivered every FallbackPolicy that existed at start.

The watch fills the store one object at a time, and at thousands of policies that takes a while. A
policy evaluated before the others are in the store decides on a partial world: a newer policy sharing a
route with an older one that is not listed yet believes it owns the route and writes its own weights over
the older one's fallback, which the older one then repairs back, traffic flipping twice in an incident.
One LIST at start (paged) says which policies to wait for; the gate opens when the store holds all of them, or
after LISTING_GRACE_SECONDS whatever the store holds (a policy deleted in between never arrives).
"""
from __future__ import annotations

import logging
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from kubernetes import client

from understudy.controller.store import GROUP, PLURAL, VERSION

log = logging.getLogger(__name__)

PolicyKey = tuple[str, str]

LISTING_GRACE_SECONDS = 30.0
"""The longest the first evaluation waits for the watch: well beyond the few seconds the watch needs for
thousands of policies, short enough that a policy deleted between the LIST and the watch delays nothing
for long."""


PAGE = 500
"""Policies per LIST page: only their names are kept, and a page of whole objects (status included, several
KB each) is parsed at a time, so thousands of policies never sit in memory at once."""


def listed_policies(api: client.ApiClient, namespaces: Iterable[str], page_size: int = PAGE) -> frozenset[PolicyKey]:
    """(namespace, name) of every FallbackPolicy the operator watches, from one paged LIST per scope."""
    custom = client.CustomObjectsApi(api)
    keys: set[PolicyKey] = set()
    for namespace in list(namespaces) or [None]:
        token = None
        while True:
            paging = {"limit": page_size, **({"_continue": token} if token else {})}
            page = (custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, **paging)
                    if namespace else custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, **paging))
            for item in page.get("items") or ():
                keys.add((item["metadata"]["namespace"], item["metadata"]["name"]))
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                break
    return frozenset(keys)


@dataclass
class StartGate:
    """Closed until the store holds every expected policy or the grace has passed; then open for good."""

    expected: frozenset[PolicyKey]
    started: float
    """When the LIST was made (epoch seconds)."""
    grace: float = LISTING_GRACE_SECONDS
    _open: bool = field(default=False, init=False)

    def open(self, seen: Collection[PolicyKey], now: float) -> bool:
        if self._open:
            return True
        missing = [key for key in self.expected if key not in seen]
        if not missing:
            self._open = True
        elif now - self.started >= self.grace:
            log.warning("%d policies listed at start were not delivered by the watch within %.0f s (deleted "
                        "since?); evaluating without them", len(missing), self.grace)
            self._open = True
        return self._open

    @classmethod
    def opened(cls) -> StartGate:
        """A gate that never holds anything back (the LIST failed: nothing known to wait for)."""
        gate = cls(frozenset(), 0.0)
        gate._open = True
        return gate
