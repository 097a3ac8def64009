"""Audit Events, posted as events.k8s.io/v1 by the operator itself.

kopf posts core/v1 Events and creates a new object per call; we want the newer API's structured fields
(`regarding`, `action`, `reportingController`, `eventTime`) so that `kubectl events --for
fallbackpolicy/NAME` reads as the policy's audit trail. The engine already emits one record per episode,
so the recorder posts every record it is given (no deduplication, no series) within a budget per policy:
a token bucket (`EventBudget`) bounds what one flapping or hostile policy can write to etcd and to the
operator's share of API Priority and Fairness. Records beyond the budget are counted, not posted, and the
next Event the budget allows is preceded by one `EventsSuppressed` Warning that says how many of which
reasons were dropped (status.history keeps the transitions either way). `flush` posts such summaries for
policies that have gone quiet.

Posting is best-effort: an Event that cannot be written is logged and counted, never raised, because a
lost audit line must not stop the operator from moving traffic.
"""
from __future__ import annotations

import logging
import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Final

from kubernetes.client import EventsV1Api, EventsV1Event, V1ObjectMeta, V1ObjectReference
from kubernetes.client.exceptions import ApiException

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
SUPPRESSED: Final = "EventsSuppressed"
PRUNE_EVERY: Final = 1024
"""Records between sweeps of idle buckets, so memory follows the policies that post, not all that ever did."""


@dataclass(frozen=True)
class EventBudget:
    """How many Events one policy may post: `burst` at once, refilled evenly over `refill_seconds`."""

    burst: int = 30
    refill_seconds: float = 600.0

    def __post_init__(self) -> None:
        if self.burst < 2 or self.refill_seconds <= 0:
            raise ValueError("an Event budget needs a burst of at least 2 (one Event and its summary) and a "
                             "positive refill time")

    @property
    def per_second(self) -> float:
        return self.burst / self.refill_seconds


@dataclass
class _Bucket:
    tokens: float
    updated: float
    suppressed: Counter[str] = field(default_factory=Counter)
    since: datetime | None = None


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
        budget: EventBudget = EventBudget(),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not instance:
            raise ValueError("reportingInstance must not be empty: use the pod name or the lease holder id")
        self._api = events_api
        self._controller = controller
        self._instance = instance[:128]
        self._metrics = metrics
        self._timeout = request_timeout
        self._budget = budget
        self._clock = clock
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._refs: dict[tuple[str, str], ObjectRef] = {}
        self._lock = threading.Lock()
        self._records = 0

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
        """Post `record` as an Event if the policy's budget allows; failures are logged and counted, never
        raised. A summary of what the budget dropped goes first."""
        key = (policy_ref.namespace, policy_ref.name)
        with self._lock:
            self._records += 1
            if self._records % PRUNE_EVERY == 0:
                self._prune()
            bucket = self._refill(key)
            summary = self._take_summary(key, bucket, policy_ref, now)
            allowed = bucket.tokens >= 1
            if allowed:
                bucket.tokens -= 1
            else:
                if not bucket.suppressed:
                    bucket.since = now
                    log.warning("%s/%s posted %d Events within %gs; further Events are counted, not posted",
                                key[0], key[1], self._budget.burst, self._budget.refill_seconds)
                bucket.suppressed[record.reason] += 1
                self._refs[key] = policy_ref
        if summary is not None:
            self._post(policy_ref, summary, now)
        if allowed:
            self._post(policy_ref, record, now)
        elif self._metrics is not None:
            self._metrics.event_suppressed(record.reason)

    def flush(self, now: datetime) -> None:
        """Post the summary of every policy whose budget has refilled since it was last suppressed, and
        forget the buckets that are full again (a full bucket is a fresh one)."""
        due: list[tuple[ObjectRef, AuditRecord]] = []
        with self._lock:
            for key in list(self._buckets):
                bucket = self._refill(key)
                ref = self._refs.get(key)
                summary = self._take_summary(key, bucket, ref, now) if ref is not None else None
                if summary is not None and ref is not None:
                    due.append((ref, summary))
            self._prune()
        for ref, summary in due:
            self._post(ref, summary, now)

    def _prune(self) -> None:
        """Forget buckets that are full and owe no summary: they behave as fresh ones (and deleted
        policies leave nothing behind)."""
        now = self._clock()
        for key, bucket in list(self._buckets.items()):
            full = bucket.tokens + (now - bucket.updated) * self._budget.per_second >= self._budget.burst
            if full and not bucket.suppressed:
                del self._buckets[key]

    def _refill(self, key: tuple[str, str]) -> _Bucket:
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(tokens=float(self._budget.burst), updated=now)
        bucket.tokens = min(float(self._budget.burst),
                            bucket.tokens + (now - bucket.updated) * self._budget.per_second)
        bucket.updated = now
        return bucket

    def _take_summary(self, key: tuple[str, str], bucket: _Bucket, ref: ObjectRef | None,
                      now: datetime) -> AuditRecord | None:
        """The EventsSuppressed record, paid for from the bucket, once it has a token to spare."""
        if not bucket.suppressed or bucket.tokens < 1:
            return None
        bucket.tokens -= 1
        counts = ", ".join(f"{reason} {n}" for reason, n in sorted(bucket.suppressed.items()))
        total = sum(bucket.suppressed.values())
        since = f" since {bucket.since:%Y-%m-%dT%H:%M:%SZ}" if bucket.since else ""
        summary = AuditRecord(
            SUPPRESSED,
            f"{total} Events of this policy were not posted{since}: more than {self._budget.burst} within "
            f"{self._budget.refill_seconds:g}s ({counts}); status.history keeps its transitions",
        )
        bucket.suppressed.clear()
        bucket.since = None
        self._refs.pop(key, None)
        return summary

    def _post(self, policy_ref: ObjectRef, record: AuditRecord, now: datetime) -> None:
        try:
            event = self.event_for(policy_ref, record, now)
            self._api.create_namespaced_event(policy_ref.namespace, event, _request_timeout=self._timeout)
        except Exception as err:  # noqa: BLE001 - best-effort by design: auditing must never block routing
            if _namespace_terminating(err):
                log.info("%s Event for %s/%s not posted: the namespace is being deleted", record.reason,
                         policy_ref.namespace, policy_ref.name)
            else:
                log.exception("could not post %s Event for %s/%s", record.reason, policy_ref.namespace,
                              policy_ref.name)
            if self._metrics is not None:
                self._metrics.event_failed(record.reason)
            return
        if self._metrics is not None:
            self._metrics.event_posted(event.type or "", record.reason)


def _namespace_terminating(err: Exception) -> bool:
    """The API server refuses new objects in a namespace being deleted (403, cause NamespaceTerminating)."""
    return isinstance(err, ApiException) and err.status == 403 and "NamespaceTerminating" in str(err.body or "")
