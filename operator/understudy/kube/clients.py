"""An API client whose every request ends: a timeout by default on every call.

The generated client waits forever unless a call passes `_request_timeout`, so an API server (or a proxy
in front of it) that accepts a connection and never answers would hang the evaluation cycle, a write
worker or the leader elector for good. `TimeoutApiClient` gives every call that passes none the operator's
`--api-timeout`; a call that passes its own keeps it. `api_client` also turns off urllib3's silent
re-sending of a request whose answer timed out, so a silent server costs one timeout, not four.
"""
from __future__ import annotations

from typing import Any

import urllib3
from kubernetes import client, config

DEFAULT_API_TIMEOUT = 10.0
"""Seconds: connecting and reading one answer together (urllib3's total timeout)."""


class TimeoutApiClient(client.ApiClient):
    """`ApiClient` with a default `_request_timeout` on every call."""

    def __init__(self, configuration: client.Configuration | None = None, timeout: float = DEFAULT_API_TIMEOUT,
                 **kwargs: Any) -> None:
        if timeout <= 0:
            raise ValueError("the API timeout must be positive")
        super().__init__(configuration, **kwargs)
        self.timeout = timeout

    def call_api(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("_request_timeout") is None:
            kwargs["_request_timeout"] = self.timeout
        return super().call_api(*args, **kwargs)


def api_client(timeout: float = DEFAULT_API_TIMEOUT, kubeconfig: str | None = None) -> TimeoutApiClient:
    """In a pod, the ServiceAccount; elsewhere `kubeconfig`, by default KUBECONFIG (what kopf logs in with)."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    if configuration.retries is None:
        configuration.retries = urllib3.Retry(total=3, read=0, status=0, redirect=0)
    return TimeoutApiClient(configuration, timeout=timeout)
