"""Guarded writes to Kubernetes objects the operator does not own."""
