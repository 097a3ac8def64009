"""A traffic generator that obeys the routing object in the API server.

There is no mesh data plane on a KWOK cluster, so this plays Envoy's part: it reads the routing
object Understudy rewrites (an Istio VirtualService, a core Service's selector or a Gateway API
HTTPRoute), turns it into weights over named backends, and sends requests to the simulators in
those proportions. It polls the object (cheap on loopback; ``poll_interval`` defaults to 50 ms)
and switches as soon as the resourceVersion or the weights change.

Choice is smooth weighted round-robin (as nginx does), not random, so a 70/30 split is exact to
within one request per cycle. Every routing change, the first request to each backend, status
codes and latencies are recorded, so benchmarks can measure time-to-shift.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol

__all__ = [
    "HTTPRouteSource",
    "RouteChange",
    "RouteSnapshot",
    "RouteSource",
    "ServiceSelectorSource",
    "SmoothWeightedRoundRobin",
    "StaticSource",
    "TrafficGenerator",
    "TrafficStats",
    "VirtualServiceSource",
]

UNROUTED = "<unrouted>"


# -- routing sources ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RouteSnapshot:
    """Weights over backend names at one resourceVersion of the routing object."""

    version: str
    weights: Mapping[str, int]


class RouteSource(Protocol):
    """Something that can say, right now, how traffic should be split."""

    def read(self) -> RouteSnapshot: ...


class StaticSource:
    """Fixed weights; for tests that need no API server."""

    def __init__(self, weights: Mapping[str, int]) -> None:
        self.weights = dict(weights)

    def read(self) -> RouteSnapshot:
        return RouteSnapshot("static", dict(self.weights))


def _aliases(key: str) -> list[str]:
    """Names a destination may be known by: as written, then with the host cut to its short name.

    ``svc.ns.svc.cluster.local/subset`` -> ``svc/subset``; ``svc.ns`` -> ``svc``.
    """
    host, sep, subset = key.partition("/")
    short = host.split(".", 1)[0]
    return [key, f"{short}{sep}{subset}"]


def _as_dict(obj: object) -> dict[str, Any]:
    """Custom objects come back as plain JSON dicts; say so to the type checker, check at runtime."""
    if not isinstance(obj, dict):
        raise TypeError(f"expected a JSON object, got {type(obj).__name__}")
    return obj


class VirtualServiceSource:
    """Istio ``networking.istio.io/v1`` VirtualService: one named ``http`` route's destinations.

    Backend names are the destination host as written, or ``host/subset`` when the route uses
    DestinationRule subsets; the generator also accepts the host's short name.
    """

    group = "networking.istio.io"
    plural = "virtualservices"

    def __init__(
        self,
        api_client: Any,
        namespace: str,
        name: str,
        http_route: str | None = None,
        *,
        version: str = "v1",
    ) -> None:
        from kubernetes import client

        self._api = client.CustomObjectsApi(api_client)
        self.namespace, self.name, self.http_route, self.version = namespace, name, http_route, version

    def _get(self) -> dict[str, Any]:
        return _as_dict(
            self._api.get_namespaced_custom_object(
                self.group, self.version, self.namespace, self.plural, self.name, _request_timeout=2
            )
        )

    def read(self) -> RouteSnapshot:
        obj = self._get()
        routes = obj.get("spec", {}).get("http") or []
        chosen = None
        for http in routes:
            if self.http_route is None or http.get("name") == self.http_route:
                chosen = http
                break
        if chosen is None:
            raise LookupError(f"VirtualService {self.namespace}/{self.name} has no http route {self.http_route!r}")
        dests = chosen.get("route") or []
        weights: dict[str, int] = {}
        for dest in dests:
            d = dest.get("destination") or {}
            # Istio: a lone destination gets everything; otherwise a missing weight means 0.
            weight = int(dest.get("weight", 100 if len(dests) == 1 else 0))
            host, subset = str(d.get("host", "")), d.get("subset")
            key = f"{host}/{subset}" if subset else host
            weights[key] = weights.get(key, 0) + weight
        return RouteSnapshot(str(obj.get("metadata", {}).get("resourceVersion", "")), weights)


class HTTPRouteSource:
    """Gateway API ``gateway.networking.k8s.io/v1`` HTTPRoute: one rule's ``backendRefs``."""

    group = "gateway.networking.k8s.io"
    plural = "httproutes"

    def __init__(
        self,
        api_client: Any,
        namespace: str,
        name: str,
        rule: int | str = 0,
        *,
        version: str = "v1",
    ) -> None:
        from kubernetes import client

        self._api = client.CustomObjectsApi(api_client)
        self.namespace, self.name, self.rule, self.version = namespace, name, rule, version

    def read(self) -> RouteSnapshot:
        obj = _as_dict(
            self._api.get_namespaced_custom_object(
                self.group, self.version, self.namespace, self.plural, self.name, _request_timeout=2
            )
        )
        rules = obj.get("spec", {}).get("rules") or []
        if isinstance(self.rule, int):
            if self.rule >= len(rules):
                raise LookupError(f"HTTPRoute {self.namespace}/{self.name} has no rule #{self.rule}")
            chosen = rules[self.rule]
        else:
            matches = [r for r in rules if r.get("name") == self.rule]
            if not matches:
                raise LookupError(f"HTTPRoute {self.namespace}/{self.name} has no rule {self.rule!r}")
            chosen = matches[0]
        weights: dict[str, int] = {}
        for ref in chosen.get("backendRefs") or []:
            name = str(ref.get("name", ""))
            # Gateway API: weight defaults to 1.
            weights[name] = weights.get(name, 0) + int(ref.get("weight", 1))
        return RouteSnapshot(str(obj.get("metadata", {}).get("resourceVersion", "")), weights)


class ServiceSelectorSource:
    """A core Service whose selector picks the tier: every tier whose pod labels match shares evenly.

    ``tiers`` maps a backend name to the labels its pods carry. An empty or missing selector
    matches nothing, as for a Service without endpoints.
    """

    def __init__(
        self,
        api_client: Any,
        namespace: str,
        name: str,
        tiers: Mapping[str, Mapping[str, str]],
    ) -> None:
        from kubernetes import client

        self._api = client.CoreV1Api(api_client)
        self.namespace, self.name = namespace, name
        self.tiers = {k: dict(v) for k, v in tiers.items()}

    def read(self) -> RouteSnapshot:
        svc = self._api.read_namespaced_service(self.name, self.namespace, _request_timeout=2)
        selector = dict((svc.spec.selector if svc.spec else None) or {})
        weights = {
            tier: 1
            for tier, labels in self.tiers.items()
            if selector and all(labels.get(k) == v for k, v in selector.items())
        }
        version = svc.metadata.resource_version if svc.metadata else None
        return RouteSnapshot(str(version or ""), weights)


# -- choice ------------------------------------------------------------------------------------


class SmoothWeightedRoundRobin:
    """nginx's smooth WRR: deterministic, exact per cycle, and interleaved rather than bursty."""

    def __init__(self, weights: Mapping[str, int]) -> None:
        self.weights = {k: int(w) for k, w in weights.items() if int(w) > 0}
        self.total = sum(self.weights.values())
        self._current = dict.fromkeys(self.weights, 0)

    def pick(self) -> str | None:
        if not self.total:
            return None
        best: str | None = None
        for key, weight in self.weights.items():
            self._current[key] += weight
            if best is None or self._current[key] > self._current[best]:
                best = key
        assert best is not None
        self._current[best] -= self.total
        return best


# -- generator ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RouteChange:
    """A routing state the generator saw, and when (wall clock and monotonic)."""

    at: float
    at_monotonic: float
    version: str
    weights: Mapping[str, int]


@dataclass
class TrafficStats:
    """What was sent where. ``first_request_at`` is wall-clock time of dispatch per backend."""

    sent: Counter[str] = field(default_factory=Counter)
    statuses: dict[str, Counter[int]] = field(default_factory=dict)
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)
    first_request_at: dict[str, float] = field(default_factory=dict)
    first_request_monotonic: dict[str, float] = field(default_factory=dict)
    route_changes: list[RouteChange] = field(default_factory=list)
    # (monotonic dispatch time, backend) for every request, in order: lets callers split a run
    # at a routing change and check where each request went.
    dispatches: list[tuple[float, str]] = field(default_factory=list)
    read_errors: int = 0
    started_at: float = 0.0
    finished_at: float | None = None

    @property
    def total(self) -> int:
        return sum(self.sent.values())

    def share(self, backend: str) -> float:
        """Fraction of all dispatched requests that went to ``backend``."""
        return self.sent[backend] / self.total if self.total else 0.0

    def errors(self, backend: str | None = None) -> int:
        """Responses that were not 2xx (status 0 = connection failed or timed out)."""
        keys = [backend] if backend else list(self.statuses)
        return sum(n for k in keys for code, n in self.statuses.get(k, Counter()).items() if not 200 <= code < 300)

    def sent_between(self, start: float, end: float = float("inf")) -> Counter[str]:
        """Requests per backend dispatched in ``[start, end)`` (monotonic clock)."""
        return Counter(b for t, b in self.dispatches if start <= t < end)

    def copy(self) -> TrafficStats:
        return TrafficStats(
            sent=Counter(self.sent),
            statuses={k: Counter(v) for k, v in self.statuses.items()},
            latencies_ms={k: list(v) for k, v in self.latencies_ms.items()},
            first_request_at=dict(self.first_request_at),
            first_request_monotonic=dict(self.first_request_monotonic),
            route_changes=list(self.route_changes),
            dispatches=list(self.dispatches),
            read_errors=self.read_errors,
            started_at=self.started_at,
            finished_at=self.finished_at,
        )


class TrafficGenerator:
    """Open-loop load at ``rate`` req/s, split as ``source`` says, bounded in count and time.

    ``backends`` maps backend names (as the source reports them) to simulator base URLs.
    A weighted destination missing from ``backends`` still gets its share, recorded as status 0
    without a request (like Envoy answering "no healthy upstream"), so proportions stay honest;
    when nothing has weight, requests count under ``<unrouted>``.
    """

    def __init__(
        self,
        source: RouteSource,
        backends: Mapping[str, str],
        *,
        rate: float = 50.0,
        max_requests: int | None = 1000,
        duration: float | None = 60.0,
        poll_interval: float = 0.05,
        workers: int = 16,
        timeout: float = 5.0,
        path: str = "/predict",
        source_workload: str = "traffic-generator",
        body: Mapping[str, Any] | None = None,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        if max_requests is None and duration is None:
            raise ValueError("bound the run: give max_requests or duration")
        if not 0 < poll_interval <= 0.2:
            raise ValueError("poll_interval must be within (0, 0.2] seconds")
        self.source = source
        self.backends = dict(backends)
        self.rate = rate
        self.max_requests = max_requests
        self.duration = duration
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.path = path
        self.source_workload = source_workload
        self._body = json.dumps(dict(body or {})).encode()
        self._stats = TrafficStats()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._done = threading.Event()
        self._picker = SmoothWeightedRoundRobin({})
        self._snapshot: RouteSnapshot | None = None
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="traffic")
        self._threads: list[threading.Thread] = []

    # -- routing -----------------------------------------------------------------------------

    def _refresh(self) -> None:
        try:
            snap = self.source.read()
        except Exception:  # the API server may blip; keep the last known routing
            with self._lock:
                self._stats.read_errors += 1
            return
        weights: dict[str, int] = {}
        for key, weight in snap.weights.items():
            name = self._resolve(key)
            weights[name] = weights.get(name, 0) + int(weight)
        with self._lock:
            old = self._snapshot
            if old is not None and old.version == snap.version and dict(old.weights) == weights:
                return
            self._snapshot = RouteSnapshot(snap.version, weights)
            if old is None or dict(old.weights) != weights:
                self._picker = SmoothWeightedRoundRobin(weights)
                self._stats.route_changes.append(
                    RouteChange(time.time(), time.monotonic(), snap.version, weights)
                )

    def _resolve(self, key: str) -> str:
        for alias in _aliases(key):
            if alias in self.backends:
                return alias
        return key

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_interval):
            self._refresh()

    @property
    def weights(self) -> dict[str, int]:
        """The weights in force now."""
        with self._lock:
            return dict(self._snapshot.weights) if self._snapshot else {}

    # -- sending -----------------------------------------------------------------------------

    def _send(self, backend: str) -> None:
        req = urllib.request.Request(
            self.backends[backend] + self.path,
            data=self._body,
            method="POST",
            headers={"Content-Type": "application/json", "x-source-workload": self.source_workload},
        )
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                resp.read()
                code = resp.status
        except urllib.error.HTTPError as err:
            err.read()
            code = err.code
        except (urllib.error.URLError, OSError):
            code = 0  # refused, reset or timed out
        elapsed = (time.perf_counter() - started) * 1000.0
        with self._lock:
            self._stats.statuses.setdefault(backend, Counter())[code] += 1
            self._stats.latencies_ms.setdefault(backend, []).append(elapsed)

    def _send_loop(self) -> None:
        start = time.monotonic()
        deadline = start + self.duration if self.duration is not None else float("inf")
        n = 0
        try:
            while not self._stop.is_set():
                if self.max_requests is not None and n >= self.max_requests:
                    break
                due = start + n / self.rate
                now = time.monotonic()
                if due >= deadline:
                    break
                if due > now and self._stop.wait(due - now):
                    break
                with self._lock:
                    backend = self._picker.pick() or UNROUTED
                    stats = self._stats
                    stats.sent[backend] += 1
                    mono = time.monotonic()
                    stats.dispatches.append((mono, backend))
                    if backend not in stats.first_request_at:
                        stats.first_request_at[backend] = time.time()
                        stats.first_request_monotonic[backend] = mono
                if backend in self.backends:
                    self._pool.submit(self._send, backend)
                elif backend != UNROUTED:
                    with self._lock:
                        self._stats.statuses.setdefault(backend, Counter())[0] += 1
                n += 1
        finally:
            self._pool.shutdown(wait=True)
            with self._lock:
                self._stats.finished_at = time.time()
            self._stop.set()
            self._done.set()

    # -- control -----------------------------------------------------------------------------

    def start(self) -> TrafficGenerator:
        """Read the routing object once (it must be readable), then send in background threads."""
        self._refresh()
        if self._snapshot is None:
            # One retry loop, so a just-created object that the cache has not seen yet is fine.
            deadline = time.monotonic() + 10
            while self._snapshot is None and time.monotonic() < deadline:
                time.sleep(self.poll_interval)
                self._refresh()
            if self._snapshot is None:
                self._pool.shutdown(wait=False)
                raise RuntimeError("could not read the routing object")
        self._stats.started_at = time.time()
        for target, name in ((self._poll_loop, "traffic-poll"), (self._send_loop, "traffic-send")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> TrafficStats:
        """Stop sending, wait for requests in flight, and return the final stats."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.timeout + 10)
        self._pool.shutdown(wait=True)
        return self.stats()

    def wait(self, timeout: float | None = None) -> TrafficStats:
        """Block until the run's own bounds end it (or ``timeout``), then stop and return stats."""
        self._done.wait(timeout)
        return self.stop()

    def run(self) -> TrafficStats:
        """Start and wait for the bounded run to finish."""
        return self.start().wait()

    def stats(self) -> TrafficStats:
        """A consistent copy of the counters so far."""
        with self._lock:
            return self._stats.copy()

    def wait_for_first(self, backend: str, timeout: float = 30.0) -> float:
        """Wall-clock time of the first request dispatched to ``backend``; raises on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if backend in self._stats.first_request_at:
                    return self._stats.first_request_at[backend]
            if self._done.is_set():
                break
            time.sleep(0.01)
        raise TimeoutError(f"no request was sent to {backend!r}")

    def __enter__(self) -> TrafficGenerator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
