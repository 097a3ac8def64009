"""The local playground that `make cluster-up` starts beside the control plane, so docs/tutorial.md can be
followed without a cluster of one's own.

`python -m e2e.playground serve` (started detached by `python -m e2e.harness up`) installs the
FallbackPolicy CRD, starts Prometheus on a loopback port and, unless `--no-models`, the recommender of
e2e/scenario.py in namespace `ml`: three Deployments with their Services, an Istio VirtualService, three
model servers scraped by Prometheus, and traffic that follows the VirtualService's weights (10 requests a
second, for at most four hours). It writes PROMETHEUS_URL and each tier's fault-injection URL into the
env file, then serves until SIGTERM (`make cluster-down`) and stops everything it started.

`python -m e2e.playground inject TIER --latency-ms 2500` (or `--error-ratio 0.5`, or `--reset`) changes a
model server's behaviour, the way the tutorial breaks the primary.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from e2e.harness.cluster import ControlPlaneError, tail, update_env_file
from e2e.harness.prometheus import PrometheusServer
from e2e.scenario import TIERS, Scenario

ROOT = Path(__file__).resolve().parents[1]
CRD = ROOT / "crds" / "understudy.dev_fallbackpolicies.yaml"
NAMESPACE = "ml"
READY = "playground ready"
TRAFFIC_RATE = 10.0
TRAFFIC_SECONDS = 4 * 3600.0


def admin_variable(tier: str) -> str:
    """The env file variable holding a tier's fault-injection URL, e.g. PLAYGROUND_PRIMARY_ADMIN."""
    return f"PLAYGROUND_{tier.upper().replace('-', '_')}_ADMIN"


def kubectl(*args: str) -> None:
    """The pinned kubectl on PATH (the harness's env), against KUBECONFIG."""
    subprocess.run(["kubectl", *args], check=True, capture_output=True, text=True, timeout=120)


def serve(workdir: Path, env_file: Path, models: bool) -> int:
    """Run the playground until SIGTERM or SIGINT; everything started here is stopped on the way out."""
    from kubernetes import client, config

    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    with contextlib.ExitStack() as stack:
        kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
        kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/fallbackpolicies.understudy.dev")
        prometheus = stack.enter_context(PrometheusServer(workdir=workdir / "prometheus"))
        exports = {"PROMETHEUS_URL": prometheus.url}
        if models:
            api = stack.enter_context(contextlib.closing(config.new_client_from_config()))
            with contextlib.suppress(client.ApiException):  # a playground started before left it
                client.CoreV1Api(api).create_namespace({"metadata": {"name": NAMESPACE}})
            # No ControlPlane object here (the cluster runs detached) and none is needed: the scenario uses
            # it only to start operators, and in the playground the reader of the tutorial starts the operator.
            scenario = stack.enter_context(Scenario(None, prometheus, NAMESPACE, api, "istio", workdir))  # type: ignore[arg-type]
            scenario.start_traffic(rate=TRAFFIC_RATE, duration=TRAFFIC_SECONDS)
            exports |= {admin_variable(t.name): scenario.servers[t.name].sidecar_url + "/admin" for t in TIERS}
        update_env_file(exports, env_file)
        print(READY, flush=True)
        while not done.wait(0.5):
            pass
    return 0


def launch(workdir: Path, kubeconfig: Path, kubectl_dir: Path, env_file: Path, models: bool,
           timeout: float = 300.0) -> int:
    """Start `serve` detached (its own session, not tied to this process) and wait until it is ready.

    Its command line names the control plane's workdir, which is how `down` recognises it. Returns its PID.
    """
    log = workdir / "logs" / "playground.log"
    argv = [sys.executable, "-m", "e2e.playground", "serve", "--workdir", str(workdir), "--env-file", str(env_file)]
    if not models:
        argv.append("--no-models")
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PATH": f"{kubectl_dir}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(ROOT)}
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT,
                                start_new_session=True, env=env)
    deadline = time.monotonic() + timeout
    while READY not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            raise ControlPlaneError(f"the playground did not start; log {log}:\n{tail(log)}")
        time.sleep(0.5)
    return proc.pid


def inject(env_file: Path, tier: str, changes: dict[str, Any]) -> dict[str, Any]:
    """POST the changes to the tier's model server, at the admin URL the playground wrote to env_file."""
    url = next((shlex.split(line.split("=", 1)[1])[0] for line in env_file.read_text().splitlines()
                if line.startswith(f"export {admin_variable(tier)}=")), None)
    if url is None:
        raise SystemExit(f"{env_file} names no {admin_variable(tier)}: is the playground up with its models?")
    request = urllib.request.Request(url, data=json.dumps(changes).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return dict(json.loads(response.read()))


def main(argv: list[str] | None = None) -> int:
    from e2e.harness.cluster import DEFAULT_ENV_FILE

    parser = argparse.ArgumentParser(prog="python -m e2e.playground", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="run the playground (started by `make cluster-up`)")
    p_serve.add_argument("--workdir", type=Path, required=True, help="the control plane's workdir")
    p_serve.add_argument("--env-file", type=Path, default=DEFAULT_ENV_FILE)
    p_serve.add_argument("--no-models", action="store_true", help="no model servers and no traffic")
    p_inject = sub.add_parser("inject", help="change how a tier's model server behaves")
    p_inject.add_argument("tier", choices=[t.name for t in TIERS])
    p_inject.add_argument("--latency-ms", type=float, help="extra latency of every answer")
    p_inject.add_argument("--error-ratio", type=float, help="share of answers that are HTTP 500")
    p_inject.add_argument("--reset", action="store_true", help="healthy again")
    p_inject.add_argument("--env-file", type=Path, default=DEFAULT_ENV_FILE)
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve(args.workdir, args.env_file, not args.no_models)
    changes: dict[str, Any] = {"reset": True} if args.reset else {}
    changes |= {k: v for k, v in (("latency_ms", args.latency_ms), ("error_ratio", args.error_ratio)) if v is not None}
    print(json.dumps(inject(args.env_file, args.tier, changes)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
