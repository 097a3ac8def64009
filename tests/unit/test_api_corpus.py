"""Every corpus document through the pydantic models: valid ones accepted, invalid ones rejected with the
message the corpus expects (the same message the CRD's CEL rule gives; see test_crd_apiserver.py)."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from tests.corpus import INVALID, VALID, Case
from understudy.api import FallbackPolicy, to_engine_policy
from understudy.api.errors import describe


def test_corpus_is_big_enough() -> None:
    assert len(VALID) + len(INVALID) >= 40
    assert len(VALID) >= 10 and len(INVALID) >= 30


@pytest.mark.parametrize("case", VALID, ids=lambda c: c.id)
def test_valid_policy_is_accepted_and_converts(case: Case) -> None:
    policy = FallbackPolicy.model_validate(case.document)
    engine_policy = to_engine_policy(policy.spec)
    assert engine_policy.tier_names == policy.spec.tier_names


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.id)
def test_invalid_policy_is_rejected_with_the_expected_message(case: Case) -> None:
    with pytest.raises(ValidationError) as caught:
        FallbackPolicy.model_validate(case.document)
    messages = "\n".join(describe(caught.value))
    assert case.expect in messages, f"{case.reason}: expected {case.expect!r} in:\n{messages}"
