"""Which Prometheus URLs the operator may contact, in the one spelling it compares and logs them by.

A policy's `spec.signals.prometheusURL` is written by a tenant, so by default it is refused: the operator
sends nothing there and the policy's triggers read MISSING. An admin may allow URLs from a list
(`EndpointPolicy(mode=ALLOWLIST, allowed=...)`) or any URL (`ANY`, for a single-team cluster). A URL is
compared as scheme, host and port exactly (the default port made explicit, the host in lower case) and its
path must equal an entry's path or continue it after a `/`. URLs with a user name or password, a query, a
fragment, percent-escapes, or `.`/`..` path segments are never allowed, whatever the mode: they serve no
Prometheus and only help to smuggle a request somewhere else. Host names are compared as written, so an
entry should name a host the platform controls (e.g. `prometheus-operated.monitoring.svc`), never a name a
tenant can create (an ExternalName Service in its own namespace).

Pure: no I/O.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Iterable
from urllib.parse import SplitResult, urlsplit

URL_NOT_ALLOWED = "PrometheusURLNotAllowed"
"""The Ready=False reason of a policy whose prometheusURL the operator refuses."""

DEFAULT_PORTS = {"http": 80, "https": 443}
_HOST = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_PATH = re.compile(r"^(/[A-Za-z0-9._~-]*)*$")


class PolicyURLs(str, Enum):
    """What the operator makes of a policy's own prometheusURL."""

    DENY = "deny"
    ALLOWLIST = "allowlist"
    ANY = "any"


@dataclass(frozen=True)
class PrometheusURL:
    """A Prometheus base URL in canonical form: lower-case scheme and host, explicit port, no trailing `/`."""

    scheme: str
    host: str
    port: int
    path: str

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}{self.path}"

    def within(self, prefix: PrometheusURL) -> bool:
        """Same scheme, host and port, and a path equal to the prefix's or below it."""
        return (
            (self.scheme, self.host, self.port) == (prefix.scheme, prefix.host, prefix.port)
            and (self.path == prefix.path or self.path.startswith(prefix.path + "/"))
        )


def parse_url(text: str) -> PrometheusURL:
    """The canonical form of a Prometheus base URL; ValueError (without the URL's secrets) when it has none."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        raise ValueError("not a URL") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError("the scheme must be http or https")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise ValueError("a user name or password in the URL is not allowed; use the operator's auth settings")
    if parts.query or parts.fragment or "?" in text or "#" in text:
        raise ValueError("a query or fragment is not allowed")
    host = (parts.hostname or "").lower()
    if not _HOST.match(host):
        raise ValueError("the host must be a DNS name or an IPv4 address")
    path = parts.path.rstrip("/")
    if not _PATH.match(path) or any(segment in (".", "..") for segment in path.split("/")):
        raise ValueError("the path may hold only letters, digits and ._~- between slashes, and no . or .. segment")
    return PrometheusURL(scheme, host, port if port is not None else DEFAULT_PORTS[scheme], path)


def redact(url: str) -> str:
    """The URL without user name and password, for logs and output; unparseable text is not echoed."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises for a malformed port
    except ValueError:
        return "<malformed URL>"
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return SplitResult(parts.scheme, host, parts.path, parts.query, parts.fragment).geturl()


@dataclass(frozen=True)
class EndpointPolicy:
    """The admin's rule for policies' own Prometheus URLs (the operator's own URL is always used)."""

    mode: PolicyURLs = PolicyURLs.DENY
    allowed: tuple[PrometheusURL, ...] = ()

    @classmethod
    def of(cls, mode: PolicyURLs | str, allowed: Iterable[str] = ()) -> EndpointPolicy:
        """From flags or values; raises ValueError for an entry that could never match, or a list without its mode."""
        entries = tuple(parse_url(entry) for entry in allowed)
        mode = PolicyURLs(mode)
        if entries and mode is not PolicyURLs.ALLOWLIST:
            raise ValueError(f"allowed Prometheus URLs are only used in the {PolicyURLs.ALLOWLIST.value} mode")
        return cls(mode, entries)

    def check(self, url: str) -> PrometheusURL | str:
        """The canonical URL when it may be contacted, otherwise why not (a sentence for the policy's status)."""
        if self.mode is PolicyURLs.DENY:
            return "this operator does not read a policy's own spec.signals.prometheusURL; remove it to use the operator's Prometheus"
        try:
            parsed = parse_url(url)
        except ValueError as error:
            return f"spec.signals.prometheusURL is refused: {error}"
        if self.mode is PolicyURLs.ANY or any(parsed.within(entry) for entry in self.allowed):
            return parsed
        return "spec.signals.prometheusURL is not in this operator's list of allowed Prometheus URLs"
