"""The operator's /healthz is the evaluation loop's liveness: it answers while the loop comes round.

(That it fails once the loop stalls is the health rule's unit test, tests/unit/test_controller_health.py;
here the wiring: kopf serves the probe, and the loop keeps it healthy, leader or standby.)
"""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any, Callable

from e2e.harness.prometheus import PrometheusServer, free_port
from e2e.scenario import Scenario, wait_until


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
