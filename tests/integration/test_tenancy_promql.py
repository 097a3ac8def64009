"""Custom PromQL against a real Prometheus holding series of two namespaces: a tenant's query reads only
its own namespace's series (security review H4, T7), unless the operator runs single-team; the same holds
for a policy that reads its own Prometheus URL, and a query that cannot be confined is named in
`Readout.errors`."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from e2e.harness.prometheus import PrometheusServer
from understudy.engine.model import MISSING, Comparison, Policy, Reading, SignalKind, Tier, Trigger
from understudy.signals.confine import QUERY_REFUSED, Confinement
from understudy.signals.endpoints import URL_NOT_ALLOWED, EndpointPolicy, PolicyURLs
from understudy.signals.promql import Target
from understudy.signals.reader import PrometheusAccess, SignalReader

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


CONFINED = {"all": Reading.ok(1.0), "peek": MISSING, "any": Reading.ok(1.0)}
UNCONFINED = {"all": Reading.ok(43.0), "peek": Reading.ok(42.0), "any": Reading.ok(2.0)}


def readings(prometheus: PrometheusServer, confinement: Confinement, own_url: str | None = None) -> dict[str, Reading]:
    access = PrometheusAccess(policy_urls=EndpointPolicy(PolicyURLs.ANY))
    with SignalReader(prometheus.url, timeout=5.0, access=access, confinement=confinement) as reader:
        target = Target(("tenant-a", "attacker"), "tenant-a", POLICY, prometheus_url=own_url)
        readout = reader.read_all([target], {})
        assert reader.policy_lanes == (own_url is not None), "the policy's URL has a lane of its own"
        return dict(readout.samples[("tenant-a", "attacker")].readings["primary"])


def test_a_tenants_custom_query_reads_only_its_own_namespace(two_namespaces: PrometheusServer) -> None:
    assert readings(two_namespaces, Confinement()) == CONFINED


def test_single_team_mode_reads_every_namespace(two_namespaces: PrometheusServer) -> None:
    assert readings(two_namespaces, Confinement(enabled=False)) == UNCONFINED


@pytest.mark.parametrize(("confinement", "expected"), [
    (Confinement(), CONFINED),
    (Confinement(enabled=False), UNCONFINED),
    # A label the admin fixes holds every policy, whatever its namespaceLabel: `job` is never a namespace.
    (Confinement(label="job"), {"all": MISSING, "peek": MISSING, "any": MISSING}),
], ids=["confined", "single-team", "label-fixed-by-the-admin"])
def test_a_policys_own_prometheus_is_read_under_the_operators_confinement(
    two_namespaces: PrometheusServer, confinement: Confinement, expected: dict[str, Reading]
) -> None:
    """The same server under another spelling (localhost) is a policy URL with a lane of its own."""
    own_url = two_namespaces.url.replace("127.0.0.1", "localhost")
    assert own_url != two_namespaces.url
    assert readings(two_namespaces, confinement, own_url) == readings(two_namespaces, confinement) == expected


def test_refused_queries_and_refused_urls_are_named_per_policy(two_namespaces: PrometheusServer) -> None:
    """An unconfinable query (info()) and a URL the admin did not allow each give their policy a SignalError
    with its own reason; the policy's other triggers and its neighbours read as usual."""
    refused_query = Trigger("inventory", SignalKind.QUERY, Comparison.ABOVE, 0.0, promql="info(model_secret)",
                            applies_to=frozenset({"primary"}))
    leaky = Target(("tenant-a", "leaky"), "tenant-a", Policy(tiers=POLICY.tiers, triggers=(*POLICY.triggers,
                                                                                             refused_query)))
    elsewhere = Target(("tenant-a", "elsewhere"), "tenant-a", POLICY, prometheus_url="http://thanos.example:9090")
    plain = Target(("tenant-a", "plain"), "tenant-a", POLICY)
    with SignalReader(two_namespaces.url, timeout=5.0) as reader:  # policy URLs denied, queries confined
        readout = reader.read_all([leaky, elsewhere, plain], {})
    assert set(readout.errors) == {leaky.key, elsewhere.key}
    assert readout.errors[leaky.key].reason == QUERY_REFUSED == "CustomQueryRefused"
    assert "trigger inventory" in readout.errors[leaky.key].message
    assert "info()" in readout.errors[leaky.key].message
    assert readout.errors[elsewhere.key].reason == URL_NOT_ALLOWED == "PrometheusURLNotAllowed"
    assert dict(readout.samples[leaky.key].readings["primary"]) == {**CONFINED, "inventory": MISSING}
    assert dict(readout.samples[plain.key].readings["primary"]) == CONFINED
    assert set(readout.samples[elsewhere.key].readings["primary"].values()) == {MISSING}
