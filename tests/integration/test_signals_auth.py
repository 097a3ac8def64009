"""An authenticated Prometheus: the real server behind basic auth, behind TLS with client certificates, and a
recording server for bearer tokens and extra headers.

Credentials are the operator's: sent to its own Prometheus, never to a policy's own URL, and never written
to a log.
"""
from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.harness.hostile_prometheus import HostilePrometheus
from e2e.harness.pki import ThrowawayPKI
from e2e.harness.prometheus import PrometheusServer, WebConfig
from understudy.engine.model import Comparison, Policy, ReadingStatus, SignalKind, Tier, Trigger
from understudy.signals.endpoints import EndpointPolicy, PolicyURLs
from understudy.signals.promql import Target
from understudy.signals.reader import PrometheusAccess, SignalReader
from understudy.signals.transport import Credentials

USER = "understudy"
PASSWORD = "understudy-test-password"
PASSWORD_BCRYPT = "$2b$04$IKqOSdmzAKfzvzuD0plSBeCm3AkWQr/SNaE14Hg3/rXWa7cEltmvq"  # cost 4: quick, and only a test
TOKEN = "token-7d1e-not-for-logs"
ONE = Trigger("one", SignalKind.QUERY, Comparison.ABOVE, 0.5, promql="vector(1)")


def target(key: str, url: str | None = None) -> Target:
    return Target(key=key, namespace="ns", prometheus_url=url,
                  policy=Policy(tiers=(Tier("primary", "a", "a"),), triggers=(ONE,)))


def read(reader: SignalReader, *targets: Target) -> dict[object, set[ReadingStatus]]:
    readout = reader.read_all(list(targets) or [target("own")], {})
    return {k: {r.status for tier in s.readings.values() for r in tier.values()} for k, s in readout.samples.items()}


OK = {ReadingStatus.OK}
MISSING = {ReadingStatus.MISSING}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> ThrowawayPKI:
    return ThrowawayPKI.create(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "password"
    path.write_text(PASSWORD + "\n")
    return path


@pytest.fixture
def basic_auth_prometheus() -> Iterator[PrometheusServer]:
    with PrometheusServer(web=WebConfig(basic_auth=(USER, PASSWORD, PASSWORD_BCRYPT))) as server:
        yield server


@pytest.fixture
def mtls_prometheus(pki: ThrowawayPKI) -> Iterator[PrometheusServer]:
    web = WebConfig(tls_cert=pki.server_cert, tls_key=pki.server_key, ca=pki.ca, client_ca=pki.ca,
                    client_cert=pki.client_cert, client_key=pki.client_key)
    with PrometheusServer(web=web) as server:
        yield server


def test_basic_auth_from_a_password_file(basic_auth_prometheus: PrometheusServer, password_file: Path,
                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="understudy")
    with SignalReader(basic_auth_prometheus.url) as anonymous:
        assert read(anonymous) == {"own": MISSING}
    assert "HTTP 401" in caplog.text
    access = PrometheusAccess(credentials=Credentials(username=USER, password_file=str(password_file)))
    with SignalReader(basic_auth_prometheus.url, grace_reads=0, access=access) as reader:
        assert read(reader) == {"own": OK}
        password_file.write_text("rotated-wrong-password")  # a Secret rotated in place is read again
        assert read(reader) == {"own": MISSING}
    assert PASSWORD not in caplog.text and "dW5kZXJzdHVkeT" not in caplog.text  # nor its base64


def test_tls_with_a_client_certificate(mtls_prometheus: PrometheusServer, pki: ThrowawayPKI,
                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="understudy")
    assert mtls_prometheus.url.startswith("https://")
    trusted = Credentials(ca_file=str(pki.ca), cert_file=str(pki.client_cert), key_file=str(pki.client_key))
    with SignalReader(mtls_prometheus.url, access=PrometheusAccess(credentials=trusted)) as reader:
        assert read(reader) == {"own": OK}
    without_client_cert = Credentials(ca_file=str(pki.ca))
    with SignalReader(mtls_prometheus.url, access=PrometheusAccess(credentials=without_client_cert)) as reader:
        assert read(reader) == {"own": MISSING}
    with SignalReader(mtls_prometheus.url) as untrusting:  # the system's CAs do not know the test CA
        assert read(untrusting) == {"own": MISSING}
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text


def test_credentials_go_to_the_operators_prometheus_only(basic_auth_prometheus: PrometheusServer,
                                                          password_file: Path) -> None:
    access = PrometheusAccess(policy_urls=EndpointPolicy(PolicyURLs.ANY),
                              credentials=Credentials(username=USER, password_file=str(password_file)))
    with HostilePrometheus("ok") as tenants, SignalReader(basic_auth_prometheus.url, access=access) as reader:
        assert read(reader, target("own"), target("tenant", tenants.url)) == {"own": OK, "tenant": OK}
        assert tenants.requests and all("Authorization" not in r.headers for r in tenants.requests)


def test_bearer_token_and_extra_headers(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    credentials = Credentials(bearer_token_file=str(token_file), headers=(("X-Scope-OrgID", "team-a"),))
    access = PrometheusAccess(policy_urls=EndpointPolicy(PolicyURLs.ANY), credentials=credentials)
    with HostilePrometheus("ok") as own, HostilePrometheus("ok") as tenants, \
            SignalReader(own.url, access=access) as reader:
        assert read(reader, target("own"), target("tenant", tenants.url)) == {"own": OK, "tenant": OK}
        token_file.write_text("token-after-rotation")
        read(reader)
        sent = [r.headers for r in own.requests]
        assert [h.get("Authorization") for h in sent] == [f"Bearer {TOKEN}", "Bearer token-after-rotation"]
        assert all(h.get("X-Scope-OrgID") == "team-a" for h in sent)
        assert tenants.requests and all("Authorization" not in r.headers and "X-Scope-OrgID" not in r.headers
                                        for r in tenants.requests)


@pytest.mark.parametrize(("settings", "problem"), [
    ({"bearer_token_file": "t", "username": "u", "password_file": "p"}, "not both"),
    ({"username": "u"}, "password file"),
    ({"cert_file": "c"}, "key file"),
    ({"headers": (("X-Scope-OrgID", "a\r\nInjected: 1"),)}, "not a valid HTTP header"),
    ({"headers": (("Authorization", "Bearer x"),)}, "set by the operator"),
])
def test_inconsistent_credentials_are_refused(settings: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Credentials(**settings)  # type: ignore[arg-type]


def test_backtest_reads_the_authenticated_prometheus_with_the_operators_settings(
    basic_auth_prometheus: PrometheusServer, password_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.corpus import VALID
    from understudy.cli import backtest, build_parser

    policy = tmp_path / "policy.yaml"
    policy.write_text(VALID[0].path.read_text())

    def run(*flags: str) -> int:
        args = build_parser().parse_args(["backtest", "-f", str(policy), "--since", "5m", "--step", "1m",
                                          "--prometheus", basic_auth_prometheus.url, "--json", "-q", *flags])
        return backtest(args, io.StringIO())

    assert run() == 1 and "401" in capsys.readouterr().err
    assert run("--prometheus-username", USER, "--prometheus-password-file", str(password_file)) == 0
    assert PASSWORD not in capsys.readouterr().err
