"""Guarded Kubernetes API helpers shared by the controller: one place for each conditional write."""
