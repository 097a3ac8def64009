"""Fixtures of the release check: a real OCI registry on loopback, stopped when the test ends."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from e2e.harness.registry import OciRegistry


@pytest.fixture
def oci_registry() -> Iterator[OciRegistry]:
    """A Distribution registry of the test's own; stopped and its storage removed afterwards."""
    with OciRegistry() as registry:
        yield registry
