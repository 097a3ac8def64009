"""Which Prometheus URLs a policy may name: the admin's modes, exact allowlist matching, and redaction."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from understudy.signals.endpoints import EndpointPolicy, PolicyURLs, PrometheusURL, parse_url, redact

ALLOWED = EndpointPolicy.of("allowlist", ["http://thanos.monitoring.svc:9090/prom", "https://mimir.example.com"])


@pytest.mark.parametrize(("text", "canonical"), [
    ("http://prometheus:9090", "http://prometheus:9090"),
    ("HTTP://Prometheus.Monitoring.svc:9090/", "http://prometheus.monitoring.svc:9090"),
    ("https://mimir.example.com/prometheus/", "https://mimir.example.com:443/prometheus"),
    ("http://10.0.0.7", "http://10.0.0.7:80"),
])
def test_canonical_form(text: str, canonical: str) -> None:
    assert str(parse_url(text)) == canonical


@pytest.mark.parametrize("text", [
    "http://user:pass@prometheus:9090",
    "http://user@prometheus:9090",
    "http://prometheus:9090/?x=",
    "http://prometheus:9090/api#",
    "http://prometheus:9090/a/../b",
    "http://prometheus:9090/./b",
    "http://prometheus:9090/%2e%2e/b",
    "http://prometheus:9090/a b",
    "http://[::1]:9090",
    "ftp://prometheus:9090",
    "prometheus:9090",
    "http://prometheus:99999",
    "http://",
])
def test_urls_that_are_never_allowed(text: str) -> None:
    with pytest.raises(ValueError):
        parse_url(text)
    assert isinstance(EndpointPolicy(PolicyURLs.ANY).check(text), str)
    assert isinstance(ALLOWED.check(text), str)


def test_error_messages_never_repeat_a_password() -> None:
    with pytest.raises(ValueError) as error:
        parse_url("http://admin:hunter2@prometheus:9090")
    assert "hunter2" not in str(error.value)
    assert "hunter2" not in str(EndpointPolicy(PolicyURLs.ANY).check("http://admin:hunter2@prometheus:9090"))


@pytest.mark.parametrize(("url", "allowed"), [
    ("http://thanos.monitoring.svc:9090/prom", True),
    ("http://thanos.monitoring.svc:9090/prom/", True),
    ("http://thanos.monitoring.svc:9090/prom/select/0", True),
    ("http://THANOS.monitoring.svc:9090/prom", True),
    ("http://thanos.monitoring.svc:9090/prometheus", False),  # a longer name, not a path below
    ("http://thanos.monitoring.svc:9090", False),
    ("http://thanos.monitoring.svc:9091/prom", False),
    ("https://thanos.monitoring.svc:9090/prom", False),
    ("http://thanos.monitoring.svc.evil.example.com:9090/prom", False),
    ("https://mimir.example.com:443/anything", True),
    ("https://mimir.example.com:8443", False),
    ("http://mimir.example.com", False),
])
def test_allowlist_matches_scheme_host_port_exactly_and_paths_by_segment(url: str, allowed: bool) -> None:
    assert isinstance(ALLOWED.check(url), PrometheusURL) is allowed


def test_deny_refuses_everything_and_any_allows_every_plain_url() -> None:
    deny = EndpointPolicy()
    assert deny.mode is PolicyURLs.DENY
    assert isinstance(deny.check("http://prometheus:9090"), str)
    assert isinstance(EndpointPolicy(PolicyURLs.ANY).check("http://anything:1/x"), PrometheusURL)


def test_an_allowlist_needs_its_mode_and_valid_entries() -> None:
    with pytest.raises(ValueError, match="allowlist"):
        EndpointPolicy.of("deny", ["http://prometheus:9090"])
    with pytest.raises(ValueError):
        EndpointPolicy.of("allowlist", ["http://u:p@prometheus:9090"])
    with pytest.raises(ValueError):
        EndpointPolicy.of("sometimes")


@pytest.mark.parametrize(("url", "shown"), [
    ("http://user:secret@prometheus:9090/x", "http://prometheus:9090/x"),
    ("https://token@h", "https://h"),
    ("http://prometheus:9090", "http://prometheus:9090"),
    ("http://h:notaport", "<malformed URL>"),
])
def test_redact(url: str, shown: str) -> None:
    assert redact(url) == shown


@given(st.text(max_size=60), st.text(max_size=20))
def test_an_allowed_url_never_carries_userinfo_query_or_fragment(path: str, password: str) -> None:
    for text in (f"http://prometheus:9090/{path}", f"http://u:{password}@prometheus:9090/{path}"):
        verdict = EndpointPolicy(PolicyURLs.ANY).check(text)
        if isinstance(verdict, PrometheusURL):
            assert "@" not in text.split("/")[2] and "?" not in text and "#" not in text
            assert ".." not in verdict.path.split("/")
