"""pytest fixtures for a real Prometheus on loopback.

``prometheus`` is shared by the whole session (starting one costs ~0.3 s, but new scrape targets
take up to ~5 s to be picked up: Prometheus batches service-discovery updates). Tests that stop
Prometheus to simulate an outage should use ``private_prometheus`` so they don't disturb others.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from e2e.harness.prometheus import PrometheusServer


@pytest.fixture(scope="session")
def prometheus() -> Iterator[PrometheusServer]:
    """A Prometheus shared by the session; remove the targets you add (see ``target()``)."""
    with PrometheusServer() as server:
        yield server


@pytest.fixture
def private_prometheus() -> Iterator[PrometheusServer]:
    """A Prometheus for one test only, free to be stopped and started again."""
    with PrometheusServer() as server:
        yield server
