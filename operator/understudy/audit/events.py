"""Audit Events, posted as events.k8s.io/v1 by the operator itself.

kopf posts core/v1 Events and creates a new object per call; we want the newer API's structured fields
(`regarding`, `action`, `reportingController`, `eventTime`) so that `kubectl events --for
fallbackpolicy/NAME` reads as the policy's audit trail. The engine already emits one record per episode,
so the recorder posts every record it is given: no deduplication, no series.

Posting is best-effort: an Event that cannot be written is logged and counted, never raised, because a
lost audit line must not stop the operator from moving traffic.
"""
from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Final

from kubernetes.client import EventsV1Api, EventsV1Event, V1ObjectMeta, V1ObjectReference

from understudy.audit.metrics import OperatorMetrics
from understudy.audit.reasons import event_kind, format_value
from understudy.engine.model import AuditRecord

log = logging.getLogger(__name__)

API_VERSION: Final = "understudy.dev/v1alpha1"
KIND: Final = "FallbackPolicy"
NOTE_LIMIT: Final = 1024
"""The API server rejects a note longer than 1024 bytes."""
_NAME_BASE: Final = 230
"""Room left for the policy's name in an Event name (at most 253) after `.<microseconds>.<random>`."""
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]+")


@dataclass(frozen=True)
class ObjectRef:
    """The FallbackPolicy an Event is about. The uid ties the Event to this incarnation of the name."""

    name: str
    namespace: str
    uid: str | None = None
    api_version: str = API_VERSION
    kind: str = KIND


class MicroTime(datetime):
    """A datetime that always serialises with microseconds.

    The client sends datetimes with isoformat(), which drops the fraction when it is zero; the API
    server parses eventTime with a fixed six-digit fraction and would reject such a value.
    """

    def isoformat(self, sep: str = "T", timespec: str = "microseconds") -> str:
        return super().isoformat(sep, "microseconds")

    @classmethod
    def of(cls, moment: datetime) -> MicroTime:
        """`moment` in UTC (naive datetimes are taken as UTC, the operator's only clock)."""
        utc = moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)
        return cls(utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second, utc.microsecond,
                   tzinfo=timezone.utc)


def note_for(record: AuditRecord) -> str:
    """One line for the MESSAGE column: the engine's sentence, then the facts behind it as key=value.

    kubectl cuts a message at its first line break, so control characters become spaces; the API server
    limits the note to 1024 bytes, so it is cut on a UTF-8 boundary with an ellipsis.
    """
    facts = [
        f"{key}={value}"
        for key, value in (
            ("trigger", record.trigger),
            ("tier", record.tier),
            ("observed", format_value(record.observed)),
            ("threshold", format_value(record.threshold)),
            ("from", record.from_tier),
            ("to", record.to_tier),
        )
        if value is not None
    ]
    message = " ".join(_CONTROL.sub(" ", record.message).split())
    note = " | ".join(part for part in (message, " ".join(facts)) if part)
    return _truncate_utf8(note, NOTE_LIMIT)


def event_name(policy_name: str, now: datetime) -> str:
    """`<policy>.<microseconds, hex>.<random>`: sorts by time like client-go's names, unique per record.

    Not generateName: events.k8s.io/v1 validates the prefix itself as a DNS subdomain, which a prefix
    ending in "." or "-" is not. The random part keeps records of one instant (and two briefly
    overlapping leaders) from colliding.
    """
    base = policy_name[:_NAME_BASE].rstrip(".-")
    micros = int(MicroTime.of(now).timestamp() * 1_000_000)
    return f"{base}.{micros:x}.{secrets.token_hex(3)}"


def _truncate_utf8(text: str, limit: int) -> str:
    encoded = text.encode()
    if len(encoded) <= limit:
        return text
    ellipsis = "…"
    room = limit - len(ellipsis.encode())
    return encoded[:room].decode(errors="ignore") + ellipsis


class EventRecorder:
    """Posts one events.k8s.io/v1 Event per AuditRecord, regarding the FallbackPolicy.

    Synchronous, like the client it wraps: call it from a worker thread, not the event loop.
    """

    def __init__(
        self,
        events_api: EventsV1Api,
        *,
        instance: str,
        controller: str = "understudy.dev/operator",
        metrics: OperatorMetrics | None = None,
        request_timeout: float = 5.0,
    ) -> None:
        if not instance:
            raise ValueError("reportingInstance must not be empty: use the pod name or the lease holder id")
        self._api = events_api
        self._controller = controller
        self._instance = instance[:128]
        self._metrics = metrics
        self._timeout = request_timeout

    def event_for(self, policy_ref: ObjectRef, record: AuditRecord, now: datetime) -> EventsV1Event:
        """The Event that `record` is published as (separate from posting so it can be inspected)."""
        kind = event_kind(record.reason)
        return EventsV1Event(
            metadata=V1ObjectMeta(name=event_name(policy_ref.name, now), namespace=policy_ref.namespace),
            regarding=V1ObjectReference(
                api_version=policy_ref.api_version,
                kind=policy_ref.kind,
                name=policy_ref.name,
                namespace=policy_ref.namespace,
                uid=policy_ref.uid,
            ),
            reason=record.reason[:128],
            note=note_for(record),
            type=kind.type,
            action=kind.action,
            reporting_controller=self._controller,
            reporting_instance=self._instance,
            event_time=MicroTime.of(now),
        )

    def record(self, policy_ref: ObjectRef, record: AuditRecord, now: datetime) -> None:
        """Post `record` as an Event; failures are logged and counted, never raised."""
        try:
            event = self.event_for(policy_ref, record, now)
            self._api.create_namespaced_event(policy_ref.namespace, event, _request_timeout=self._timeout)
        except Exception:  # noqa: BLE001 - best-effort by design: auditing must never block routing
            log.exception("could not post %s Event for %s/%s", record.reason, policy_ref.namespace,
                          policy_ref.name)
            if self._metrics is not None:
                self._metrics.event_failed(record.reason)
            return
        if self._metrics is not None:
            self._metrics.event_posted(event.type or "", record.reason)
