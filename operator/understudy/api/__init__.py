"""The FallbackPolicy API: pydantic models mirroring the CRD, and their conversion for the engine."""
from understudy.api.convert import to_engine_policy
from understudy.api.models import (
    API_VERSION,
    KIND,
    FallbackPolicy,
    FallbackPolicySpec,
    FallbackPolicyStatus,
)

__all__ = [
    "API_VERSION",
    "KIND",
    "FallbackPolicy",
    "FallbackPolicySpec",
    "FallbackPolicyStatus",
    "to_engine_policy",
]
