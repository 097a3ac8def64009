"""The audit trail: events.k8s.io/v1 Events, FallbackPolicy status, and the operator's own metrics."""
