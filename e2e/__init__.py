"""End-to-end tooling: the loopback control plane, demo and benchmarks."""
