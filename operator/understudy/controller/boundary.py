"""The error boundary around one policy: whatever goes wrong while reading, deciding or writing for one
policy is that policy's trouble, never its neighbours'.

An exception inside the boundary is logged (its traceback once per episode), and the policy is reported
`Ready=False`, reason `EvaluationFailed`, with the stage and the exception's class in the message (never
its text, which may carry what a hostile server sent). The Warning Event goes out once per episode: an
episode starts with the first failure and ends with the next evaluation of that policy that succeeds.
Every other policy of the cycle is read, decided and written as if nothing happened; the failed one is
evaluated again at its next interval.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from typing import Any, Callable, Hashable, Mapping, NamedTuple, Sequence, TypeVar

from understudy.audit.status import format_time
from understudy.controller.store import PolicySnapshot
from understudy.engine.model import AuditRecord
from understudy.signals.reader import Readout

log = logging.getLogger(__name__)

EVALUATION_FAILED = "EvaluationFailed"
T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


class Stage(str, Enum):
    """Where in the cycle a policy's evaluation failed."""

    READ = "reading its signals"
    DECIDE = "deciding"
    WRITE = "writing its decision"


@dataclass(frozen=True)
class Failure:
    """One failed evaluation of one policy; `first` when it starts an episode (and so gets an Event)."""

    key: Hashable
    stage: Stage
    error: str
    """The exception's class name."""
    first: bool

    @property
    def message(self) -> str:
        return (f"{self.stage.value} failed with {self.error}; the next evaluation retries and other policies "
                "are not affected (the operator's log has the traceback)")

    @property
    def record(self) -> AuditRecord:
        return AuditRecord(reason=EVALUATION_FAILED, message=self.message)


class Failed(NamedTuple):
    """A failure the cycle caught (reading or deciding), for the writer to report."""

    failure: Failure
    snap: PolicySnapshot
    now: float


class Boundary:
    """Runs one policy's step at a time, turning its exceptions into `Failure`s; tracks the episodes."""

    def __init__(self) -> None:
        self._failing: dict[Hashable, str] = {}
        """Policy key -> the stage and error of its open episode."""

    def call(self, key: Hashable, stage: Stage, step: Callable[[], T], name: str = "") -> T | Failure:
        """`step()`, or the Failure it raised (logged with the traceback once per episode)."""
        try:
            return step()
        except Exception as err:  # the boundary: one policy's failure of any kind stays its own
            failure = self.failed(key, stage, err)
            log.log(logging.ERROR if failure.first else logging.DEBUG, "%s for policy %s failed; its neighbours "
                    "carry on", stage.value.capitalize(), name or key, exc_info=True)
            return failure

    def failed(self, key: Hashable, stage: Stage, err: BaseException) -> Failure:
        """Note a failure caught elsewhere; a new stage or error starts a new episode."""
        error = type(err).__name__
        episode = f"{stage.name}:{error}"
        first = self._failing.get(key) != episode
        self._failing[key] = episode
        return Failure(key, stage, error, first)

    def succeeded(self, key: Hashable) -> bool:
        """End the policy's episode, if any; returns whether one was open."""
        return self._failing.pop(key, None) is not None

    def failing(self, key: Hashable) -> bool:
        return key in self._failing

    def forget(self, key: Hashable) -> None:
        """A deleted policy's episode ends with it."""
        self._failing.pop(key, None)

    def read_isolated(self, read: Callable[[Sequence[K]], T], merge: Callable[[list[T]], T],
                      targets: Sequence[K], key: Callable[[K], Hashable]) -> tuple[T, list[Failure]]:
        """One batched read for all targets; if it raises, halves of the batch, down to the one target
        whose answer spoils it (that target fails, every other is read)."""
        try:
            return read(targets), []
        except Exception as err:
            if len(targets) == 1:
                failure = self.failed(key(targets[0]), Stage.READ, err)
                log.log(logging.ERROR if failure.first else logging.DEBUG, "Reading the signals of policy %s "
                        "failed; its neighbours carry on", key(targets[0]), exc_info=True)
                return read([]), [failure]
        half = len(targets) // 2
        left, left_failures = self.read_isolated(read, merge, targets[:half], key)
        right, right_failures = self.read_isolated(read, merge, targets[half:], key)
        return merge([left, right]), left_failures + right_failures


def merge_readouts(parts: list[Readout]) -> Readout:
    """The readouts of the halves of a split batch, as one (see `Boundary.read_isolated`)."""
    return Readout(samples={k: v for p in parts for k, v in p.samples.items()},
                   loads={k: v for p in parts for k, v in p.loads.items()},
                   errors={k: v for p in parts for k, v in p.errors.items()},
                   deferred=frozenset(k for p in parts for k in p.deferred))


def failed_status(status: Mapping[str, Any], failure: Failure, generation: int, now: float) -> dict[str, Any] | None:
    """The policy's status with Ready=False, reason EvaluationFailed; None when it already says so."""
    conditions = [c for c in status.get("conditions") or [] if isinstance(c, Mapping)]
    previous = next((c for c in conditions if c.get("type") == "Ready"), None)
    ready = {"type": "Ready", "status": "False", "reason": EVALUATION_FAILED, "message": failure.message,
             "observedGeneration": generation}
    if previous is not None and all(previous.get(k) == v for k, v in ready.items()):
        return None
    since = (previous.get("lastTransitionTime") if previous is not None and previous.get("status") == "False"
             else None) or format_time(datetime.fromtimestamp(now, timezone.utc))
    others = [c for c in conditions if c.get("type") != "Ready"]
    return {**status, "conditions": [*others, {**ready, "lastTransitionTime": since}]}


def report_failure(failure: Failure, status: Mapping[str, Any], generation: int, now: float,
                   write_status: Callable[[dict[str, Any]], bool], post: Callable[[AuditRecord], None]) -> None:
    """Write Ready=False (unless status says so already), then post the Event if the episode is new.

    The report may fail for the very reason the policy did (the API server refuses it): that is logged,
    never raised, so it cannot cost the next policy its writes.
    """
    try:
        failed = failed_status(status, failure, generation, now)
        if failed is not None:
            write_status(failed)
        if failure.first:
            post(failure.record)
    except Exception:  # the boundary again: the report of one policy's failure stays its own
        log.exception("reporting the failed evaluation of policy %s failed too", failure.key)
