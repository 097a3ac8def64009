"""The policy's audit trail from its two sources: status.history (durable, the last 20 transitions) and its
Events (every record, until the API server expires them), merged into one ordered list.

A transition is in both: the operator writes the history entry and posts the Event for the same record, at
the same moment. Entries of the same reason within `SAME_MOMENT` seconds are taken as one, so the merged
list shows each decision once and says where it was found.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Iterable, Mapping, Sequence

from understudy.audit.reasons import event_kind

SAME_MOMENT = 2.0
"""Seconds between an Event's time and its history entry's (which is whole seconds) that still make one."""
FACT_KEYS = ("trigger", "tier", "observed", "threshold", "from", "to")
"""The `key=value` facts the operator appends to an Event's note after " | " (audit.events.note_for)."""


@dataclass(frozen=True)
class Entry:
    time: float
    """Epoch seconds."""
    reason: str
    type: str
    """Normal or Warning."""
    message: str
    tier: str | None = None
    trigger: str | None = None
    observed: str | None = None
    threshold: str | None = None
    from_tier: str | None = None
    to_tier: str | None = None
    source: str = "event"
    """Where it was found: "event", "history", or "both"."""


def note_facts(note: str) -> tuple[str, dict[str, str]]:
    """An Event note split into its sentence and its facts; a note without facts is all sentence."""
    message, sep, tail = note.rpartition(" | ")
    if not sep:
        return note, {}
    facts = {}
    for token in tail.split():
        key, eq, value = token.partition("=")
        if not eq or key not in FACT_KEYS:
            return note, {}
        facts[key] = value
    return message, facts


def event_time(event: Mapping[str, Any]) -> float | None:
    """eventTime, else the older Event fields, in epoch seconds (to the microsecond where given)."""
    for text in (event.get("eventTime"), event.get("deprecatedLastTimestamp"),
                 (event.get("metadata") or {}).get("creationTimestamp")):
        at = seconds(text)
        if at is not None:
            return at
    return None


def seconds(text: object) -> float | None:
    """An RFC 3339 time with its offset, in epoch seconds; None for anything else."""
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment.timestamp() if moment.tzinfo is not None else None


def from_event(event: Mapping[str, Any]) -> Entry | None:
    at = event_time(event)
    if at is None:
        return None
    message, facts = note_facts(str(event.get("note") or ""))
    return Entry(at, str(event.get("reason") or ""), str(event.get("type") or ""), message,
                 tier=facts.get("tier"), trigger=facts.get("trigger"), observed=facts.get("observed"),
                 threshold=facts.get("threshold"), from_tier=facts.get("from"), to_tier=facts.get("to"))


def from_history(item: Mapping[str, Any]) -> Entry | None:
    at = seconds(item.get("time"))
    if at is None:
        return None
    reason = str(item.get("reason") or "")
    return Entry(at, reason, event_kind(reason).type if reason else "", str(item.get("message") or ""),
                 trigger=item.get("trigger"), observed=item.get("observed"), threshold=item.get("threshold"),
                 from_tier=item.get("fromTier"), to_tier=item.get("toTier"), source="history")


def policy_events(events: Iterable[Mapping[str, Any]], uid: str | None) -> list[Mapping[str, Any]]:
    """The Events of this policy object: an earlier policy of the same name (another uid) is not this one."""
    return [e for e in events if not uid or (e.get("regarding") or {}).get("uid") in (None, "", uid)]


def merged(history: Sequence[Mapping[str, Any]], events: Iterable[Mapping[str, Any]]) -> list[Entry]:
    """History entries and Event entries in time order, each decision once (see SAME_MOMENT)."""
    from_events = sorted((e for e in map(from_event, events) if e is not None), key=lambda e: e.time)
    result = list(from_events)
    for entry in (h for h in map(from_history, history) if h is not None):
        twin = next((k for k, e in enumerate(result) if e.source == "event" and e.reason == entry.reason
                     and abs(e.time - entry.time) <= SAME_MOMENT and _same_move(e, entry)), None)
        if twin is None:
            result.append(entry)
        else:
            result[twin] = replace(result[twin], source="both")
    return sorted(result, key=lambda e: e.time)


def _same_move(event: Entry, entry: Entry) -> bool:
    """An Event names its tiers only when the record did; the history entry always does."""
    return all(a is None or a == b for a, b in ((event.from_tier, entry.from_tier), (event.to_tier, entry.to_tier)))
