"""Understudy: model fallback for Kubernetes inference, audited and rolled back when it creeps."""
