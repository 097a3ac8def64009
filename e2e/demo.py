"""`make demo`: Understudy's main job, end to end, on the local control plane.

Starts the control plane, Prometheus, three model servers, traffic and the operator; applies a policy;
injects a latency spike into the primary model, then recovery; prints what happened as it happens, then
the audit trail as `kubectl events` shows it, and stops everything it started.
"""
from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

from e2e.harness.cluster import ControlPlane
from e2e.harness.prometheus import PrometheusServer
from e2e.scenario import TIERS, Scenario, wait_until

CRD = Path(__file__).resolve().parents[1] / "crds" / "understudy.dev_fallbackpolicies.yaml"
NAMESPACE = "ml"


class Timeline:
    """Prints weight changes and new Events with a clock relative to the start."""

    def __init__(self, sc: Scenario) -> None:
        self.sc = sc
        self.t0 = time.monotonic()
        self._seen: set[str] = set()
        self._weights: dict[str, int] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def say(self, text: str) -> None:
        print(f"  t+{time.monotonic() - self.t0:6.1f}s  {text}", flush=True)

    def _watch(self) -> None:
        while not self._stop.wait(0.25):
            try:
                weights = self.sc.routed_weights()
                if weights != self._weights:
                    self._weights = weights
                    share = "  ".join(f"{t.name}={weights.get(t.name, 0):>3}%" for t in TIERS)
                    self.say(f"routing   {share}")
                for event in self.sc.events():
                    uid = str(event.get("metadata", {}).get("uid"))
                    if uid not in self._seen:
                        self._seen.add(uid)
                        self.say(f"event     {event.get('type'):<8} {event.get('reason'):<20} {event.get('note')}")
            except Exception as err:  # the demo narrates; a transient read error is not a failure
                self.say(f"(read error: {err})")

    def __enter__(self) -> Timeline:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@contextlib.contextmanager
def recommender(prefix: str) -> Iterator[tuple[ControlPlane, Scenario]]:
    """A local control plane and Prometheus with the CRD, namespace ml and the recommender's three tiers (no
    traffic or operator yet); everything is stopped on the way out."""
    print("Starting a local control plane (etcd, kube-apiserver, controller-manager, scheduler, KWOK) ...")
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp, ControlPlane(nodes=1) as cp, \
            PrometheusServer() as prometheus:
        cp.run_kubectl("apply", "--server-side", "-f", str(CRD))
        cp.run_kubectl("wait", "--for=condition=Established", "crd/fallbackpolicies.understudy.dev")
        cp.run_kubectl("create", "namespace", NAMESPACE)
        print(f"  control plane ready in {cp.startup_seconds:.1f}s; Prometheus at {prometheus.url}")
        print("Deploying three model tiers (a random forest, a logistic regression, a popularity baseline) ...")
        with contextlib.closing(cp.api_client()) as api, Scenario(cp, prometheus, NAMESPACE, api, "istio",
                                                                  Path(tmp)) as sc:
            yield cp, sc


def run_story(sc: Scenario, spike_seconds: float) -> None:
    """A latency spike on the primary, held for a while, then recovery; narrated by a Timeline."""
    with Timeline(sc) as timeline:
        wait_until(lambda: (c := sc.condition("Ready")) and c["status"] == "True", 180, "policy Ready")
        time.sleep(4)
        timeline.say("inject    primary model answers 2.5 s slower")
        sc.inject("primary", latency_ms=2500)
        wait_until(lambda: sc.routed_weights().get("distilled") == 100, 60, "fallback to distilled")
        time.sleep(spike_seconds)
        timeline.say("inject    primary model recovers")
        sc.inject("primary")
        wait_until(lambda: sc.routed_weights().get("primary") == 100, 120, "restore to primary")
        time.sleep(2)


def main() -> int:
    # A SIGTERM (Ctrl-C's cousin from a supervisor) unwinds the context managers, so nothing is left running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spike-seconds", type=float, default=25.0)
    args = parser.parse_args()

    with recommender("understudy-demo-") as (cp, sc):
        sc.start_traffic(rate=30, duration=600)
        sc.start_operator()
        policy = sc.policy(evaluation={"recoverAfter": 5, "restoreSteps": [10, 50, 100], "minDwell": "4s"})
        sc.apply_policy(policy)
        print("Applied FallbackPolicy ml/recommender: p99 latency above 1s or errors above 10% trip a tier.")
        print()
        try:
            run_story(sc, args.spike_seconds)
        except AssertionError as err:
            print(f"\nThe demo did not go as expected: {err}\n--- operator log ---\n{sc.operator_logs()}")
            return 1
        print()
        print("$ kubectl get fallbackpolicies -n ml")
        print(cp.run_kubectl("get", "fallbackpolicies", "-n", NAMESPACE).stdout)
        print("$ kubectl events -n ml --for fallbackpolicy/recommender")
        print(cp.run_kubectl("events", "-n", NAMESPACE, "--for", "fallbackpolicy/recommender").stdout)
        assert sc.traffic is not None
        stats = sc.traffic.stats()
        print(f"Traffic: {stats.total} requests; per tier: "
              + ", ".join(f"{k}={v}" for k, v in sorted(stats.sent.items())))
    print("Stopped everything the demo started.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
