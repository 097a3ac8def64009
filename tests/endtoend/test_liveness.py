"""The operator's /healthz is the evaluation loop's liveness: it answers while the loop comes round, leader
or standby, and fails while a cycle is wedged (a status write held by an admission webhook that never
answers), so the kubelet would restart the operator.
"""
from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any, Callable

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from e2e.harness.prometheus import PrometheusServer, free_port
from e2e.scenario import Scenario, wait_until

WEBHOOK = "understudy-test-hang-status"


def healthz(port: int) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, None
    except OSError:
        return 0, None


def test_healthz_reports_the_evaluation_loop_alive_on_leader_and_standby(
        make_scenario: Callable[..., Scenario], prometheus: PrometheusServer) -> None:
    sc = make_scenario(prometheus)
    ports = [free_port(), free_port()]
    lease = ("--leader-election", "--lease-namespace", sc.namespace, "--lease-name", "understudy")
    for identity, port in zip(("replica-a", "replica-b"), ports):
        sc.start_operator(*lease, "--identity", identity, "--liveness-port", str(port), "--liveness-address",
                          "127.0.0.1", "--stall-seconds", "5")
    sc.apply_policy(sc.policy())
    for port in ports:
        status, body = wait_until(lambda: (h := healthz(port))[0] == 200 and h, 60, f"/healthz on {port}")
        assert body.get("evaluationLoop") == "ok", body
    wait_until(lambda: (c := sc.condition("Ready")) and c["status"] == "True", 60, "Ready=True")
    time.sleep(6)  # past the stall bound: both loops keep coming round, the leader's and the standby's
    for port in ports:
        wait_until(lambda: healthz(port)[0] == 200, 15, f"/healthz on {port} after the bound")


@contextlib.contextmanager
def silent_listener() -> Iterator[int]:
    """A loopback port that accepts connections and never answers (not even a TLS handshake)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.1)
    held: list[socket.socket] = []
    stopping = threading.Event()

    def accept() -> None:
        while not stopping.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, name="silent-webhook", daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stopping.set()
        thread.join(timeout=5)
        listener.close()
        for conn in held:
            conn.close()


@contextlib.contextmanager
def status_writes_hang(sc: Scenario, port: int) -> Iterator[None]:
    """A validating webhook on FallbackPolicy status writes in the test's namespace whose server never answers:
    each write waits the webhook's whole timeout (then is let through). Removed after."""
    admission = client.AdmissionregistrationV1Api(sc.api)
    ca = (sc.cp.workdir / "pki" / "ca.crt").read_bytes()
    admission.create_validating_webhook_configuration({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": WEBHOOK},
        "webhooks": [{"name": "hang.understudy.test", "admissionReviewVersions": ["v1"], "sideEffects": "None",
                      "failurePolicy": "Ignore", "timeoutSeconds": 20,
                      "clientConfig": {"url": f"https://127.0.0.1:{port}/validate",
                                       "caBundle": base64.b64encode(ca).decode()},
                      "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": sc.namespace}},
                      "rules": [{"apiGroups": ["understudy.dev"], "apiVersions": ["*"], "operations": ["UPDATE"],
                                 "resources": ["fallbackpolicies/status"]}]}],
    })
    try:
        yield
    finally:
        with contextlib.suppress(ApiException):
            admission.delete_validating_webhook_configuration(WEBHOOK)


def test_healthz_fails_while_a_cycle_is_wedged_and_recovers_after(
        make_scenario: Callable[..., Scenario], prometheus: PrometheusServer) -> None:
    sc = make_scenario(prometheus)
    port = free_port()
    with silent_listener() as silent, status_writes_hang(sc, silent):
        # The API timeout outlasts the webhook's, so the cycle waits on the status write: a wedge.
        sc.start_operator("--liveness-port", str(port), "--liveness-address", "127.0.0.1", "--stall-seconds", "3",
                          "--api-timeout", "60")
        wait_until(lambda: healthz(port)[0] == 200, 60, "/healthz up")
        sc.apply_policy(sc.policy())
        wait_until(lambda: healthz(port)[0] == 500, 30, "/healthz to fail while the cycle is wedged")
    wait_until(lambda: healthz(port)[0] == 200, 60, "/healthz to recover once the cycle comes round")
