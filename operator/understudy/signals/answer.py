"""What a Prometheus answer to an instant query must look like before anything reads it.

A policy's own Prometheus may be any server, so its answer is checked as a whole: a JSON object with
`status: success` and `data.resultType` `vector` (a list of `{"metric": {label: text}, "value": [time,
sample]}`) or `scalar` (`[time, sample]`). Anything else fails the query, which reads MISSING for the
policies that asked it and no one else. Pure: no I/O.
"""
from __future__ import annotations

import json
from typing import Any, Mapping, Sequence


class AnswerError(ValueError):
    """The answer is not a valid instant-query result; the message names the problem, never the content."""


def _is_time(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_sample(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 2 and _is_time(value[0]) \
        and isinstance(value[1], (str, int, float)) and not isinstance(value[1], bool)


def _is_series(item: Any) -> bool:
    if not isinstance(item, Mapping) or not _is_sample(item.get("value")):
        return False
    metric = item.get("metric", {})
    return isinstance(metric, Mapping) and all(isinstance(k, str) and isinstance(v, str) for k, v in metric.items())


def instant_result(body: bytes) -> Sequence[Any]:
    """The `data.result` of an instant query's answer (a vector, or a scalar's `[time, "value"]`)."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser's stack
        raise AnswerError("the answer is not JSON") from None
    if not isinstance(payload, Mapping):
        raise AnswerError("the answer is not a JSON object")
    if payload.get("status") != "success":
        raise AnswerError("the answer's status is not success")
    data = payload.get("data")
    if not isinstance(data, Mapping):
        raise AnswerError("the answer has no data object")
    kind, result = data.get("resultType"), data.get("result")
    if kind == "vector" and isinstance(result, list):
        if all(_is_series(item) for item in result):
            return result
        raise AnswerError("a series of the vector is malformed")
    if kind == "scalar" and _is_sample(result):
        return list(result)
    raise AnswerError("the result is neither a vector nor a scalar")
