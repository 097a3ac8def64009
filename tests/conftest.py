"""Test-suite wide pytest plugins (fixtures for the real processes the tests run)."""

pytest_plugins = [
    "e2e.harness.pytest_plugin",
    "e2e.harness.prometheus_plugin",
]
