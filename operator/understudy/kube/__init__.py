"""Guarded Kubernetes API helpers, each in one place."""
