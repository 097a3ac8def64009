"""Loopback Kubernetes control plane shared by pytest fixtures, the demo and the benchmarks."""

from e2e.harness.cluster import (
    ControlPlane,
    ControlPlaneError,
    Toolchain,
    down,
    load_versions,
    read_state,
    up,
    update_env_file,
)

__all__ = [
    "ControlPlane",
    "ControlPlaneError",
    "Toolchain",
    "down",
    "load_versions",
    "read_state",
    "up",
    "update_env_file",
]
