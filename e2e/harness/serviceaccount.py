"""Act as a ServiceAccount: a short-lived TokenRequest token in a kubeconfig of its own.

The operator's end-to-end tests run it as the chart's ServiceAccount, so that the RBAC the chart grants
is what the operator actually gets (the admin kubeconfig is in system:masters and bypasses RBAC):

    path = write_service_account_kubeconfig(control_plane, "understudy-system", "understudy", tmp_path / "sa")
    subprocess.Popen(["understudy", "run", ...], env={**os.environ, "KUBECONFIG": str(path)})

No Secret-based (legacy) token is created: the token is bound to the ServiceAccount and expires.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import yaml


def request_token(api: Any, namespace: str, service_account: str, seconds: int = 3600,
                  audiences: list[str] | None = None) -> str:
    """A TokenRequest (authentication.k8s.io/v1) for the ServiceAccount; the API server's audience by default."""
    from kubernetes import client

    spec: dict[str, Any] = {"expirationSeconds": seconds}
    if audiences:
        spec["audiences"] = audiences
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
    response = client.CoreV1Api(api).create_namespaced_service_account_token(service_account, namespace, body)
    token: str = response.status.token
    return token


def kubeconfig_for_token(server: str, ca_file: Path, token: str, user: str, namespace: str) -> dict[str, Any]:
    """A kubeconfig document that authenticates with a bearer token and defaults to namespace."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "understudy-e2e", "cluster": {"server": server, "certificate-authority": str(ca_file)}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": {"cluster": "understudy-e2e", "user": user, "namespace": namespace}}],
        "current-context": user,
    }


def write_service_account_kubeconfig(control_plane: Any, namespace: str, service_account: str, path: Path,
                                     seconds: int = 3600) -> Path:
    """Write a kubeconfig (mode 0600) that acts as system:serviceaccount:<namespace>:<service_account>."""
    assert control_plane.workdir is not None, "the control plane is not started"
    with contextlib.closing(control_plane.api_client()) as api:
        token = request_token(api, namespace, service_account, seconds)
    doc = kubeconfig_for_token(control_plane.server, Path(control_plane.workdir) / "pki" / "ca.crt", token,
                               f"system:serviceaccount:{namespace}:{service_account}", namespace)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    path.chmod(0o600)
    return path


__all__ = ["request_token", "kubeconfig_for_token", "write_service_account_kubeconfig"]
