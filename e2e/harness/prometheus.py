"""A real Prometheus server on loopback for end-to-end tests.

Runs Debian's ``prometheus`` binary with its own data directory and a free 127.0.0.1 port.
Scrape targets live in a file_sd file so tests can add and remove them while Prometheus runs;
Prometheus watches that file, so no reload is needed. ``stop()`` followed by ``start()`` keeps
the port and the TSDB, which lets a test simulate a monitoring outage and recovery.

``web=WebConfig(...)`` starts it behind its own web configuration (``--web.config.file``): basic auth,
TLS, or TLS requiring client certificates, as production servers are run; the harness's own requests then
present the same credentials.
"""

from __future__ import annotations

import base64
import ctypes
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["PrometheusError", "PrometheusServer", "PrometheusUnavailable", "WebConfig", "free_port"]

LOOPBACK = "127.0.0.1"


class PrometheusError(RuntimeError):
    """Prometheus could not be started, or an API call failed."""


class PrometheusUnavailable(PrometheusError):
    """Nothing answered: Prometheus is stopped or not listening (e.g. a simulated outage)."""


def _parent_death_hook() -> Callable[[], None] | None:
    """A preexec hook so the child gets SIGTERM if this process dies without cleaning up.

    Linux ties PR_SET_PDEATHSIG to the forking *thread*, so it is only used from the main thread
    (a worker thread ending would otherwise stop a server that is still wanted).
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # loaded here: the child only makes the call
    except OSError:
        return None

    def hook() -> None:
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return hook


def free_port(host: str = LOOPBACK) -> int:
    """Ask the kernel for a port that is free right now (a small race is accepted)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class WebConfig:
    """What Prometheus demands of its clients, and what the harness presents to it in return."""

    basic_auth: tuple[str, str, str] | None = None
    """(user, password, bcrypt hash of the password): Prometheus stores only the hash."""
    tls_cert: Path | None = None
    tls_key: Path | None = None
    ca: Path | None = None
    """The CA that signed tls_cert; the harness trusts it."""
    client_ca: Path | None = None
    """When set, Prometheus requires a client certificate signed by this CA."""
    client_cert: Path | None = None
    client_key: Path | None = None
    """The harness's own client certificate, for a server that requires one."""

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    def document(self) -> dict[str, Any]:
        """The --web.config.file document."""
        doc: dict[str, Any] = {}
        if self.tls:
            server: dict[str, Any] = {"cert_file": str(self.tls_cert), "key_file": str(self.tls_key)}
            if self.client_ca is not None:
                server.update(client_auth_type="RequireAndVerifyClientCert", client_ca_file=str(self.client_ca))
            doc["tls_server_config"] = server
        if self.basic_auth is not None:
            user, _, hashed = self.basic_auth
            doc["basic_auth_users"] = {user: hashed}
        return doc

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        context = ssl.create_default_context(cafile=str(self.ca) if self.ca else None)
        if self.client_cert is not None:
            context.load_cert_chain(str(self.client_cert), str(self.client_key))
        return context

    def headers(self) -> dict[str, str]:
        if self.basic_auth is None:
            return {}
        user, password, _ = self.basic_auth
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _split_target(url: str) -> tuple[str, dict[str, str]]:
    """Turn ``http://host:port/path`` into a file_sd ``host:port`` plus meta labels."""
    if "://" not in url:
        url = "http://" + url
    parsed = urllib.parse.urlsplit(url)
    if not parsed.hostname or not parsed.port:
        raise ValueError(f"scrape target needs host and port: {url!r}")
    meta: dict[str, str] = {"__scheme__": parsed.scheme or "http"}
    path = parsed.path or "/metrics"
    if path != "/metrics":
        meta["__metrics_path__"] = path
    return f"{parsed.hostname}:{parsed.port}", meta


class PrometheusServer:
    """One Prometheus process; a context manager that always stops what it started.

    ``workdir`` holds ``prometheus.yml``, ``targets.json``, ``data/`` and ``prometheus.log``;
    when not given, a temporary directory is made and removed again by ``close()``. Blocks written
    into ``data/`` before ``start()`` (e.g. by ``promtool tsdb create-blocks-from``) are served.
    """

    def __init__(
        self,
        *,
        binary: str = "prometheus",
        port: int | None = None,
        workdir: str | os.PathLike[str] | None = None,
        scrape_interval: str = "1s",
        evaluation_interval: str = "1s",
        rule_files: Sequence[str | os.PathLike[str]] = (),
        ready_timeout: float = 30.0,
        retention: str = "1d",
        web: WebConfig | None = None,
    ) -> None:
        resolved = shutil.which(binary)
        if resolved is None:
            raise PrometheusError(
                f"{binary!r} is not on PATH; run `make system-deps` (e2e/install-system-deps.sh)"
            )
        self.binary = resolved
        self.port = port if port is not None else free_port()
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="understudy-prom-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.workdir / "data"
        self.config_file = self.workdir / "prometheus.yml"
        self.targets_file = self.workdir / "targets.json"
        self.log_file = self.workdir / "prometheus.log"
        self.web = web
        self.web_config_file = self.workdir / "web.yml"
        self.scrape_interval = scrape_interval
        self.evaluation_interval = evaluation_interval
        self.rule_files = [str(Path(p).resolve()) for p in rule_files]
        self.ready_timeout = ready_timeout
        self.retention = retention
        """``--storage.tsdb.retention.time``: long for a data dir backfilled with old history (promtool)."""
        self._targets: dict[str, tuple[str, dict[str, str]]] = {}
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_handle: Any = None
        self._write_targets()
        self._write_config()

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL of the HTTP API, e.g. ``http://127.0.0.1:40123`` (``https`` behind TLS)."""
        scheme = "https" if self.web is not None and self.web.tls else "http"
        return f"{scheme}://{LOOPBACK}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> str:
        """Start (or restart after ``stop()``) on the same port and data dir; wait until ready."""
        if self.running:
            return self.url
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log_handle = open(self.log_file, "ab")
        cmd = [
            self.binary,
            f"--config.file={self.config_file}",
            f"--storage.tsdb.path={self.data_dir}",
            f"--web.listen-address={LOOPBACK}:{self.port}",
            "--web.enable-lifecycle",
            "--web.enable-admin-api",
            f"--storage.tsdb.retention.time={self.retention}",
            "--log.level=info",
        ]
        if self.web is not None:
            self.web_config_file.write_text(json.dumps(self.web.document(), indent=2) + "\n")
            cmd.append(f"--web.config.file={self.web_config_file}")
        try:
            # A new session keeps Ctrl-C in a terminal from killing it behind our back.
            self._proc = subprocess.Popen(
                cmd,
                stdout=self._log_handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
                start_new_session=True,
                preexec_fn=_parent_death_hook(),
            )
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self.url

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the process gracefully (SIGTERM, then SIGKILL); keeps port and data for ``start()``."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None

    def close(self) -> None:
        """Stop and remove the working directory if this object made it."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PrometheusServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        last_error = "not tried"
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                raise PrometheusError(f"prometheus exited early:\n{self.log_tail()}")
            try:
                with self._open(urllib.request.Request(self.url + "/-/ready"), timeout=1) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError) as err:
                last_error = str(err)
            time.sleep(0.1)
        raise PrometheusError(f"prometheus not ready after {self.ready_timeout}s ({last_error}):\n{self.log_tail()}")

    def _open(self, req: urllib.request.Request, timeout: float) -> Any:
        """urlopen with the credentials and trust the web configuration asks for."""
        if self.web is None:
            return urllib.request.urlopen(req, timeout=timeout)
        for name, value in self.web.headers().items():
            req.add_header(name, value)
        return urllib.request.urlopen(req, timeout=timeout, context=self.web.ssl_context())

    def log_tail(self, lines: int = 30) -> str:
        """Last lines of the server log, for error messages."""
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    # -- configuration -----------------------------------------------------------------------

    def _write_config(self) -> None:
        # JSON is valid YAML, so no YAML library is needed here.
        config: dict[str, Any] = {
            "global": {
                "scrape_interval": self.scrape_interval,
                "scrape_timeout": self.scrape_interval,
                "evaluation_interval": self.evaluation_interval,
            },
            "scrape_configs": [
                {
                    "job_name": "sim",
                    "file_sd_configs": [{"files": [str(self.targets_file)], "refresh_interval": "1s"}],
                }
            ],
        }
        if self.rule_files:
            config["rule_files"] = self.rule_files
        self.config_file.write_text(json.dumps(config, indent=2) + "\n")

    def _write_targets(self) -> None:
        groups = [
            {"targets": [hostport], "labels": labels} for hostport, labels in self._targets.values()
        ]
        tmp = self.targets_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(groups, indent=2) + "\n")
        # Rename is atomic, so Prometheus never reads a half-written file.
        os.replace(tmp, self.targets_file)

    def add_target(self, url: str, labels: Mapping[str, str] | None = None) -> None:
        """Scrape ``url`` (``http://host:port[/path]``, default path ``/metrics``) from now on."""
        hostport, meta = _split_target(url)
        with self._lock:
            self._targets[url] = (hostport, {**meta, **dict(labels or {})})
            self._write_targets()

    def remove_target(self, url: str) -> None:
        """Stop scraping ``url``; its series go stale in Prometheus."""
        with self._lock:
            self._targets.pop(url, None)
            self._write_targets()

    @contextmanager
    def target(self, url: str, labels: Mapping[str, str] | None = None) -> Iterator[None]:
        """Scrape ``url`` inside the block only, so a session-wide server stays clean."""
        self.add_target(url, labels)
        try:
            yield
        finally:
            self.remove_target(url)

    @property
    def targets(self) -> list[str]:
        with self._lock:
            return list(self._targets)

    def reload(self) -> None:
        """Ask Prometheus to re-read its configuration (lifecycle API)."""
        self._request("POST", "/-/reload")

    # -- HTTP API ----------------------------------------------------------------------------

    def _request(self, method: str, path: str, params: Mapping[str, str] | None = None) -> Any:
        query = urllib.parse.urlencode(params or {})
        url = self.url + path
        data: bytes | None = None
        if method == "GET" and query:
            url += "?" + query
        elif query:
            data = query.encode()
        req = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/x-www-form-urlencoded")
        try:
            with self._open(req, timeout=10) as resp:
                body = resp.read()
        except urllib.error.HTTPError as err:
            raise PrometheusError(f"{method} {path} -> {err.code}: {err.read()[:500]!r}") from err
        except (urllib.error.URLError, OSError) as err:
            raise PrometheusUnavailable(f"{method} {self.url}{path}: {err}") from err
        if not body:
            return None
        try:
            payload = json.loads(body)
        except ValueError:
            return body.decode(errors="replace")
        if isinstance(payload, dict) and payload.get("status") == "error":
            raise PrometheusError(f"{path}: {payload.get('errorType')}: {payload.get('error')}")
        return payload.get("data") if isinstance(payload, dict) and "data" in payload else payload

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """Instant query; returns the ``result`` list (vector samples have ``metric`` and ``value``)."""
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self._request("POST", "/api/v1/query", params)
        result = data.get("result", [])
        if data.get("resultType") == "scalar":
            return [{"metric": {}, "value": result}]
        return list(result)

    def query_value(self, promql: str) -> dict[tuple[tuple[str, str], ...], float]:
        """Instant query as ``{sorted label items: float}``, convenient for assertions."""
        out: dict[tuple[tuple[str, str], ...], float] = {}
        for sample in self.query(promql):
            out[tuple(sorted(sample["metric"].items()))] = float(sample["value"][1])
        return out

    def active_targets(self) -> list[dict[str, Any]]:
        data = self._request("GET", "/api/v1/targets", {"state": "active"})
        return list(data.get("activeTargets", []))

    def wait_for_targets_up(self, urls: Sequence[str] | None = None, timeout: float = 20.0) -> None:
        """Block until every given target (default: all added) has been scraped successfully."""
        wanted = {_split_target(u)[0] for u in (urls if urls is not None else self.targets)}
        deadline = time.monotonic() + timeout
        up: set[str] = set()
        while time.monotonic() < deadline:
            up = {
                t["labels"].get("instance", "")
                for t in self.active_targets()
                if t.get("health") == "up"
            }
            if wanted <= up:
                return
            time.sleep(0.2)
        raise PrometheusError(f"targets not up after {timeout}s: missing {sorted(wanted - up)}")

    def wait_for(
        self,
        promql: str,
        predicate: Any = bool,
        timeout: float = 30.0,
        interval: float = 0.5,
    ) -> list[dict[str, Any]]:
        """Poll ``promql`` until ``predicate(result)`` holds; returns that result or raises."""
        deadline = time.monotonic() + timeout
        result: list[dict[str, Any]] = []
        while True:
            result = self.query(promql)
            if predicate(result):
                return result
            if time.monotonic() >= deadline:
                raise PrometheusError(f"timed out after {timeout}s waiting on {promql!r}; last: {result!r}")
            time.sleep(interval)

    def delete_series(self, match: str) -> None:
        """Admin API: drop series matching ``match`` (e.g. between tests sharing one server)."""
        self._request("POST", "/api/v1/admin/tsdb/delete_series", {"match[]": match})
