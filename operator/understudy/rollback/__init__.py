"""Rollback of a primary Deployment to the last revision that was healthy (fallback-rate creep)."""
from understudy.rollback.deployment import RollbackResult, current_revision, rollback_to_revision

__all__ = ["RollbackResult", "current_revision", "rollback_to_revision"]
