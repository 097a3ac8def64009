"""Custom PromQL against a real Prometheus holding series of two namespaces: a tenant's query reads only
its own namespace's series (security review H4, T7), unless the operator runs single-team."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from e2e.harness.prometheus import PrometheusServer
from understudy.engine.model import MISSING, Comparison, Policy, Reading, SignalKind, Tier, Trigger
from understudy.signals.confine import Confinement
from understudy.signals.promql import Target
from understudy.signals.reader import SignalReader

EXPOSITION = b"""\
# TYPE model_secret gauge
model_secret{destination_workload_namespace="tenant-a",workload="rec"} 1
model_secret{destination_workload_namespace="tenant-b",workload="rec"} 42
"""

TRIGGERS = (
    # Every series of the metric: the tenant's own only.
    Trigger("all", SignalKind.QUERY, Comparison.ABOVE, 100.0, promql="sum(model_secret)"),
    # Another namespace named outright (the review's T7): nothing.
    Trigger("peek", SignalKind.QUERY, Comparison.ABOVE, 100.0,
            promql='sum(model_secret{destination_workload_namespace="tenant-b"})'),
    # Every metric by regex on the name: still the tenant's own.
    Trigger("any", SignalKind.QUERY, Comparison.ABOVE, 100.0, promql='count({__name__=~"model_secret"})'),
)
POLICY = Policy(tiers=(Tier("primary", "rec", "rec"), Tier("small", "rec-small", "rec-small")),
                triggers=tuple(Trigger(t.name, t.kind, t.comparison, t.threshold, promql=t.promql,
                                       applies_to=frozenset({"primary"})) for t in TRIGGERS))


class _Exposition(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write(EXPOSITION)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def two_namespaces(prometheus: PrometheusServer) -> Iterator[PrometheusServer]:
    """The series above, scraped by the session's Prometheus from a loopback exporter."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Exposition)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
    try:
        with prometheus.target(url):
            prometheus.wait_for('count(model_secret)', lambda r: bool(r) and r[0]["value"][1] == "2", timeout=30)
            yield prometheus
    finally:
        server.shutdown()
        server.server_close()


def readings(prometheus: PrometheusServer, confinement: Confinement) -> dict[str, Reading]:
    with SignalReader(prometheus.url, timeout=5.0, confinement=confinement) as reader:
        target = Target(("tenant-a", "attacker"), "tenant-a", POLICY)
        return dict(reader.read([target], {})[("tenant-a", "attacker")].readings["primary"])


def test_a_tenants_custom_query_reads_only_its_own_namespace(two_namespaces: PrometheusServer) -> None:
    assert readings(two_namespaces, Confinement()) == {
        "all": Reading.ok(1.0), "peek": MISSING, "any": Reading.ok(1.0),
    }


def test_single_team_mode_reads_every_namespace(two_namespaces: PrometheusServer) -> None:
    assert readings(two_namespaces, Confinement(enabled=False)) == {
        "all": Reading.ok(43.0), "peek": Reading.ok(42.0), "any": Reading.ok(2.0),
    }
