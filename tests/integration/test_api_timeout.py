"""Nothing hangs on the API server: every call of the operator's client ends within its timeout.

A loopback socket that accepts connections and never answers stands in for a wedged API server (or a proxy
in front of one); the operator's client gives up on it within `--api-timeout`. The same client against the
real API server works as usual.
"""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from e2e.harness.cluster import ControlPlane
from understudy.kube.clients import TimeoutApiClient, api_client

TIMEOUT = 0.5
GIVE_UP = 15.0
"""Seconds the test waits for the call before it calls it hung (the client should end it in TIMEOUT; the
bounds below are generous for a loaded machine, and still far below a hang)."""


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A loopback socket that accepts every connection and never sends a byte; closed after the test."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.1)
    accepted: list[socket.socket] = []
    stopping = threading.Event()

    def accept() -> None:
        while not stopping.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted.append(conn)

    thread = threading.Thread(target=accept, name="silent-api-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stopping.set()
        listener.close()
        for conn in accepted:
            conn.close()
        thread.join(timeout=5)


def kubeconfig_for(path: Path, server: str) -> Path:
    path.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: silent, cluster: {{server: "{server}"}}}}]
users: [{{name: nobody, user: {{token: none}}}}]
contexts: [{{name: silent, context: {{cluster: silent, user: nobody}}}}]
current-context: silent
""")
    return path


def ends(call: Any) -> tuple[bool, float, BaseException | None]:
    """Run `call` in a thread: (whether it ended within GIVE_UP, seconds taken, what it raised)."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as err:  # noqa: BLE001 - reported to the test
            outcome.append(err)

    started = time.monotonic()
    thread = threading.Thread(target=run, name="api-call", daemon=True)
    thread.start()
    thread.join(GIVE_UP)
    return not thread.is_alive(), time.monotonic() - started, outcome[0] if outcome else None


def test_a_call_to_an_api_server_that_never_answers_times_out(silent_server: str, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    api = api_client(timeout=TIMEOUT, kubeconfig=str(kubeconfig_for(tmp_path / "kubeconfig", silent_server)))
    try:
        for call in (lambda: client.CoordinationV1Api(api).read_namespaced_lease("understudy-leader", "default"),
                     lambda: client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
                         "understudy.dev", "v1alpha1", "default", "fallbackpolicies", "p", {"status": {}})):
            ended, seconds, raised = ends(call)
            assert ended, f"the call still hangs after {GIVE_UP}s"
            assert raised is not None and seconds < TIMEOUT + 5, (seconds, raised)
    finally:
        api.close()


def test_a_call_that_passes_its_own_timeout_keeps_it(silent_server: str) -> None:
    configuration = client.Configuration(host=silent_server)
    configuration.retries = False
    api = TimeoutApiClient(configuration, timeout=60.0)
    try:
        ended, seconds, raised = ends(lambda: client.CoreV1Api(api).list_namespace(_request_timeout=TIMEOUT))
        assert ended and raised is not None and seconds < TIMEOUT + 5, (seconds, raised)
    finally:
        api.close()


def test_the_client_works_against_the_real_api_server(control_plane: ControlPlane,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    api = api_client(timeout=TIMEOUT * 20, kubeconfig=str(control_plane.kubeconfig))
    try:
        names = [n.metadata.name for n in client.CoreV1Api(api).list_namespace().items]
        assert "default" in names
    finally:
        api.close()
