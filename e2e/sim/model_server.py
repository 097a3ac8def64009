"""A model-server simulator that serves a real scikit-learn model and reports Istio-style metrics.

Each ``ModelServer`` stands in for one model tier (a Deployment plus its Istio sidecar):

* the *app* listener answers ``POST /predict`` with a prediction and its confidence;
* the *sidecar* listener serves ``/metrics`` and ``/admin`` and stays up during a
  ``refuse`` outage, like Envoy's stats port does when the app container is down.

Metric names and labels follow Istio's standard metrics, so the operator's PromQL is the same
against this simulator as against a mesh: ``istio_requests_total`` and
``istio_request_duration_milliseconds`` (Envoy's default buckets), plus a quality signal
``model_prediction_confidence`` labelled ``workload`` and ``namespace``.

Faults are injected at runtime through ``POST /admin`` (JSON) or ``ModelServer.inject()``:
``latency_ms``, ``latency_jitter_ms``, ``error_ratio`` (deterministic, so 0.2 means exactly one in
five), ``error_code``, ``outage`` (``"503"`` answers everything with 503; ``"refuse"`` closes the
app port so connections are refused), ``input_noise`` (degrades confidence), and ``reset``.

Run as a process: ``python -m e2e.sim.model_server --workload W --namespace NS --model large
--port 0`` prints the app URL on its first line and ``sidecar <url>`` on the second.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import fcntl
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Predicting from request threads makes scikit-learn warn, once per prediction, that its joblib
# configuration does not follow into worker threads; the models here run with n_jobs=1, so it is noise.
warnings.filterwarnings("ignore", message=".*sklearn.utils.parallel.delayed.*")

__all__ = [
    "ENVOY_DEFAULT_BUCKETS_MS",
    "MODEL_KINDS",
    "Faults",
    "ModelServer",
    "ModelServerProcess",
    "TrainedModel",
    "load_model",
    "model_cache_dir",
    "spawn_model_server",
]

LOOPBACK = "127.0.0.1"
MODEL_KINDS = ("large", "small", "baseline")
# Envoy's default histogram boundaries, which Istio's sidecar uses for request duration.
ENVOY_DEFAULT_BUCKETS_MS = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000,
    30000, 60000, 300000, 600000, 1800000, 3600000,
)
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
_DATASET = "digits"
_SPLIT_SEED = 7
_CACHE_FORMAT = 3

ISTIO_LABELS = (
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "destination_workload",
    "destination_workload_namespace",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "destination_app",
    "destination_version",
    "request_protocol",
    "response_code",
    "response_flags",
    "connection_security_policy",
)


# -- models ------------------------------------------------------------------------------------


def model_cache_dir() -> Path:
    """Where trained models are kept; keyed by scikit-learn version because pickles are not portable."""
    import sklearn

    root = Path(os.environ.get("UNDERSTUDY_CACHE") or Path.home() / ".cache" / "understudy")
    return root / "models" / f"sklearn-{sklearn.__version__}"


@dataclass(frozen=True)
class TrainedModel:
    """A fitted classifier plus the held-out samples the simulator serves by default."""

    kind: str
    estimator: Any
    x_test: np.ndarray
    y_test: np.ndarray
    accuracy: float
    feature_scale: float


def _build_estimator(kind: str) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeClassifier

    if kind == "large":
        # A two-layer MLP: the most accurate and most confident tier, and the costliest to run.
        # (A random forest is as accurate, but its vote-share probabilities make it look less
        # confident than logistic regression, which would invert the quality signal.)
        return make_pipeline(
            StandardScaler(), MLPClassifier(hidden_layer_sizes=(128, 64), max_iter=300, random_state=0)
        )
    if kind == "small":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    if kind == "baseline":
        # A decision stump: almost free to run, and barely better than guessing.
        return DecisionTreeClassifier(max_depth=1, random_state=0)
    raise ValueError(f"model kind must be one of {MODEL_KINDS}, not {kind!r}")


def _split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.3, random_state=_SPLIT_SEED, stratify=y
    )
    return x_train, x_test, y_train, y_test


_model_lock = threading.Lock()
_models: dict[str, TrainedModel] = {}


def load_model(kind: str) -> TrainedModel:
    """Train ``kind`` on scikit-learn's bundled digits data, or load it from the on-disk cache."""
    import joblib

    if kind not in MODEL_KINDS:
        raise ValueError(f"model kind must be one of {MODEL_KINDS}, not {kind!r}")
    with _model_lock:
        if kind in _models:
            return _models[kind]
        x_train, x_test, y_train, y_test = _split()
        path = model_cache_dir() / f"{_DATASET}-{kind}-f{_CACHE_FORMAT}.joblib"
        path.parent.mkdir(parents=True, exist_ok=True)
        # Several simulator processes may start at once on a fresh machine: one trains, the
        # others wait on the lock and then load what it wrote.
        with open(path.with_name(path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            estimator = None
            if path.exists():
                try:
                    estimator = joblib.load(path)
                except Exception:  # a truncated or foreign file: train again
                    estimator = None
            if estimator is None:
                estimator = _build_estimator(kind).fit(x_train, y_train)
                tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
                joblib.dump(estimator, tmp)
                os.replace(tmp, path)  # atomic, so a reader never sees half a file
        accuracy = float((estimator.predict(x_test) == y_test).mean())
        model = TrainedModel(kind, estimator, x_test, y_test, accuracy, float(x_train.max()))
        _models[kind] = model
        return model


# -- faults ------------------------------------------------------------------------------------


@dataclass
class Faults:
    """What the tier is currently made to do wrong; all zero means healthy."""

    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    error_ratio: float = 0.0
    error_code: int = 500
    outage: str | None = None  # None, "503" or "refuse"
    input_noise: float = 0.0

    def validate(self) -> None:
        if self.latency_ms < 0 or self.latency_jitter_ms < 0:
            raise ValueError("latency must be >= 0")
        if not 0.0 <= self.error_ratio <= 1.0:
            raise ValueError("error_ratio must be within [0, 1]")
        if not 400 <= self.error_code <= 599:
            raise ValueError("error_code must be a 4xx or 5xx status")
        if self.outage not in (None, "503", "refuse"):
            raise ValueError("outage must be null, '503' or 'refuse'")
        if self.input_noise < 0:
            raise ValueError("input_noise must be >= 0")


# -- server ------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], sim: ModelServer, role: str) -> None:
        self.sim = sim
        self.role = role
        super().__init__(addr, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (a scrape or request timeout on a busy machine) is not a server error."""
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, so a "refuse" outage really cuts clients off.
    protocol_version = "HTTP/1.0"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # thousands of requests per test; keep stderr readable

    def _send(self, code: int, body: Any, content_type: str = "application/json") -> None:
        raw = body if isinstance(body, bytes) else (json.dumps(body) + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        if length <= 0:
            return {}
        return json.loads(self.rfile.read(length) or b"{}")

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        sim = self.server.sim
        if self.path == "/metrics":
            self._send(200, generate_latest(sim.registry), CONTENT_TYPE_LATEST)
        elif self.path == "/admin":
            self._send(200, sim.describe())
        elif self.path in ("/healthz", "/readyz"):
            broken = self.server.role == "app" and sim.faults.outage is not None
            self._send(503 if broken else 200, {"ok": not broken})
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        sim = self.server.sim
        try:
            body = self._body()
        except ValueError as err:
            self._send(400, {"error": f"bad JSON: {err}"})
            return
        if self.path == "/admin":
            try:
                self._send(200, sim.inject(**body) if isinstance(body, dict) else {})
            except (TypeError, ValueError) as err:
                self._send(400, {"error": str(err)})
        elif self.path == "/predict" and self.server.role == "app":
            code, payload = sim.handle_predict(body, self.headers.get("x-source-workload"))
            self._send(code, payload)
        else:
            self._send(404, {"error": "not found"})


class ModelServer:
    """One model tier on loopback: ``start()`` returns the app URL; ``stop()`` closes everything."""

    def __init__(
        self,
        workload: str,
        namespace: str = "default",
        model: str = "large",
        *,
        port: int = 0,
        sidecar_port: int = 0,
        service: str | None = None,
        version: str = "v1",
        host: str = LOOPBACK,
    ) -> None:
        if model not in MODEL_KINDS:
            raise ValueError(f"model must be one of {MODEL_KINDS}, not {model!r}")
        self.workload = workload
        self.namespace = namespace
        self.model_kind = model
        self.service = service or workload
        self.version = version
        self.host = host
        self._want_port = port
        self._want_sidecar_port = sidecar_port
        self.faults = Faults()
        self._faults_lock = threading.Lock()
        self._error_budget = 0.0
        self._next_sample = 0
        self._rng = random.Random(f"{namespace}/{workload}")
        self._app: _Server | None = None
        self._sidecar: _Server | None = None
        self._threads: list[threading.Thread] = []
        self._model: TrainedModel | None = None
        self.registry = CollectorRegistry(auto_describe=True)
        self._requests = Counter(
            "istio_requests",
            "Requests handled, as counted by an Istio sidecar (simulated).",
            ISTIO_LABELS,
            registry=self.registry,
        )
        self._duration = Histogram(
            "istio_request_duration_milliseconds",
            "Request duration in milliseconds, as seen by an Istio sidecar (simulated).",
            ISTIO_LABELS,
            buckets=ENVOY_DEFAULT_BUCKETS_MS,
            registry=self.registry,
        )
        self._confidence = Histogram(
            "model_prediction_confidence",
            "Max class probability of each prediction.",
            ("workload", "namespace"),
            buckets=CONFIDENCE_BUCKETS,
            registry=self.registry,
        )
        self._predictions = Counter(
            "model_predictions",
            "Predictions made, by whether they matched the held-out label.",
            ("workload", "namespace", "outcome"),
            registry=self.registry,
        )
        self._accuracy = Gauge(
            "model_offline_accuracy",
            "Accuracy of this tier's model on its held-out set, measured at startup.",
            ("workload", "namespace", "model"),
            registry=self.registry,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._app is None and self._want_port == 0:
            raise RuntimeError("not started")
        return self._want_port

    @property
    def url(self) -> str:
        """App URL: ``POST {url}/predict``."""
        return f"http://{self.host}:{self.port}"

    @property
    def sidecar_url(self) -> str:
        """Stats/admin URL, up even during a ``refuse`` outage; scrape ``{sidecar_url}/metrics``."""
        if self._sidecar is None:
            raise RuntimeError("not started")
        return f"http://{self.host}:{self._sidecar.server_address[1]}"

    @property
    def metrics_url(self) -> str:
        return self.sidecar_url + "/metrics"

    @property
    def model(self) -> TrainedModel:
        if self._model is None:
            self._model = load_model(self.model_kind)
        return self._model

    def start(self) -> str:
        """Load the model, bind both listeners and serve in background threads."""
        model = self.model
        self._accuracy.labels(self.workload, self.namespace, self.model_kind).set(model.accuracy)
        try:
            self._sidecar = self._serve(self._want_sidecar_port, "sidecar")
            if self.faults.outage != "refuse":
                self._app = self._serve(self._want_port, "app")
                self._want_port = int(self._app.server_address[1])
        except BaseException:
            self.stop()
            raise
        return self.url

    def _serve(self, port: int, role: str) -> _Server:
        server = _Server((self.host, port), self, role)
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"sim-{self.workload}-{role}",
            daemon=True,
        )
        thread.start()
        self._threads.append(thread)
        return server

    @staticmethod
    def _close(server: _Server | None) -> None:
        if server is not None:
            server.shutdown()
            server.server_close()

    def stop(self) -> None:
        """Close both listeners; safe to call twice."""
        app, self._app = self._app, None
        sidecar, self._sidecar = self._sidecar, None
        self._close(app)
        self._close(sidecar)
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()

    def __enter__(self) -> ModelServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- faults ------------------------------------------------------------------------------

    def inject(self, *, reset: bool = False, **changes: Any) -> dict[str, Any]:
        """Change faults (``Faults`` field names); ``reset=True`` first clears them. Returns state."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(Faults)}
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        with self._faults_lock:
            base = Faults() if reset else dataclasses.replace(self.faults)
            if "outage" in changes and changes["outage"] is not None:
                changes["outage"] = str(changes["outage"])
            new = dataclasses.replace(base, **changes)
            new.validate()
            old_outage = self.faults.outage
            self.faults = new
            if new.error_ratio != base.error_ratio or reset:
                self._error_budget = 0.0
        if self._sidecar is not None:  # started: open or close the app port to match
            if new.outage == "refuse" and old_outage != "refuse":
                app, self._app = self._app, None
                self._close(app)
            elif new.outage != "refuse" and self._app is None:
                self._app = self._serve(self._want_port, "app")
        return self.describe()

    def reset(self) -> dict[str, Any]:
        return self.inject(reset=True)

    def describe(self) -> dict[str, Any]:
        return {
            "workload": self.workload,
            "namespace": self.namespace,
            "model": self.model_kind,
            "accuracy": self.model.accuracy,
            "faults": dataclasses.asdict(self.faults),
        }

    # -- requests ----------------------------------------------------------------------------

    def _labels(self, code: int, source: str | None, flags: str = "-") -> dict[str, str]:
        return {
            "reporter": "destination",
            "source_workload": source or "unknown",
            "source_workload_namespace": self.namespace if source else "unknown",
            "destination_workload": self.workload,
            "destination_workload_namespace": self.namespace,
            "destination_service": f"{self.service}.{self.namespace}.svc.cluster.local",
            "destination_service_name": self.service,
            "destination_service_namespace": self.namespace,
            "destination_app": self.workload,
            "destination_version": self.version,
            "request_protocol": "http",
            "response_code": str(code),
            "response_flags": flags,
            "connection_security_policy": "none",
        }

    def _record(self, started: float, code: int, source: str | None, flags: str = "-") -> None:
        labels = self._labels(code, source, flags)
        self._requests.labels(**labels).inc()
        self._duration.labels(**labels).observe((time.perf_counter() - started) * 1000.0)

    def handle_predict(self, body: Any, source: str | None = None) -> tuple[int, dict[str, Any]]:
        """Serve one ``/predict`` call: faults first, then the model. Returns (status, JSON)."""
        started = time.perf_counter()
        with self._faults_lock:
            faults = self.faults
            fail = False
            if faults.error_ratio > 0:
                # Deterministic: exactly error_ratio of requests fail, evenly spread.
                self._error_budget += faults.error_ratio
                if self._error_budget >= 1.0 - 1e-9:
                    self._error_budget -= 1.0
                    fail = True
            delay_ms = faults.latency_ms
            if faults.latency_jitter_ms:
                delay_ms += self._rng.uniform(0, faults.latency_jitter_ms)
        if faults.outage is not None:
            self._record(started, 503, source, "UH")
            return 503, {"error": "no healthy upstream", "workload": self.workload}
        if delay_ms > 0:
            time.sleep(delay_ms / 1000.0)
        if fail:
            self._record(started, faults.error_code, source)
            return faults.error_code, {"error": "injected failure", "workload": self.workload}
        try:
            result = self._predict(body if isinstance(body, dict) else {}, faults.input_noise)
        except (ValueError, TypeError, KeyError, IndexError) as err:
            self._record(started, 400, source)
            return 400, {"error": str(err), "workload": self.workload}
        self._record(started, 200, source)
        return 200, result

    def _predict(self, body: Mapping[str, Any], noise: float) -> dict[str, Any]:
        model = self.model
        truth: list[int | None]
        if "instances" in body:
            x = np.asarray(body["instances"], dtype=float)
            if x.ndim != 2 or x.shape[1] != model.x_test.shape[1]:
                raise ValueError(f"instances must be rows of {model.x_test.shape[1]} features")
            truth = [None] * len(x)
        else:
            if "index" in body:
                idx = int(body["index"]) % len(model.x_test)
            else:
                with self._faults_lock:
                    idx = self._next_sample
                    self._next_sample = (idx + 1) % len(model.x_test)
            x = model.x_test[idx : idx + 1]
            truth = [int(model.y_test[idx])]
        if noise > 0:
            rng = np.random.default_rng(self._rng.getrandbits(32))
            x = np.clip(x + rng.normal(0.0, noise * model.feature_scale, x.shape), 0, model.feature_scale)
        proba = model.estimator.predict_proba(x)
        classes = model.estimator.classes_
        preds = []
        for row, label in zip(proba, truth, strict=True):
            best = int(np.argmax(row))
            predicted = int(classes[best])
            confidence = float(row[best])
            self._confidence.labels(self.workload, self.namespace).observe(confidence)
            outcome = "unknown" if label is None else ("correct" if label == predicted else "incorrect")
            self._predictions.labels(self.workload, self.namespace, outcome).inc()
            preds.append({"prediction": predicted, "confidence": confidence, "label": label})
        return {
            "workload": self.workload,
            "model": self.model_kind,
            "prediction": preds[0]["prediction"],
            "confidence": preds[0]["confidence"],
            "predictions": preds,
        }


# -- subprocess form ---------------------------------------------------------------------------


@dataclass
class ModelServerProcess:
    """A model server in its own process (as a separate pod would be); ``stop()`` ends it."""

    proc: subprocess.Popen[str]
    url: str
    sidecar_url: str
    workload: str
    namespace: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def metrics_url(self) -> str:
        return self.sidecar_url + "/metrics"

    def inject(self, **changes: Any) -> dict[str, Any]:
        """POST the changes to the sidecar's ``/admin``."""
        import urllib.request

        req = urllib.request.Request(
            self.sidecar_url + "/admin",
            data=json.dumps(changes).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            return dict(json.loads(resp.read()))

    def reset(self) -> dict[str, Any]:
        return self.inject(reset=True)

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> ModelServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _parent_death_hook() -> Callable[[], None] | None:
    """preexec hook: SIGTERM the simulator if the process that spawned it dies without stopping it.

    Only from the main thread, because Linux ties PR_SET_PDEATHSIG to the forking thread.
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None

    def hook() -> None:
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return hook


def spawn_model_server(
    workload: str,
    namespace: str = "default",
    model: str = "large",
    *,
    port: int = 0,
    service: str | None = None,
    extra_args: Sequence[str] = (),
    startup_timeout: float = 120.0,
) -> ModelServerProcess:
    """Start ``python -m e2e.sim.model_server`` and wait for it to print its URLs."""
    cmd = [
        sys.executable, "-m", "e2e.sim.model_server",
        "--workload", workload, "--namespace", namespace, "--model", model, "--port", str(port),
    ]
    if service:
        cmd += ["--service", service]
    cmd += list(extra_args)
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        text=True, env=env, cwd=root, preexec_fn=_parent_death_hook(),
    )
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for _ in range(2):
            line = proc.stdout.readline()
            if not line:
                return
            lines.append(line.strip())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(startup_timeout)
    if len(lines) < 2 or not lines[1].startswith("sidecar "):
        proc.kill()
        _, err = proc.communicate(timeout=5)
        raise RuntimeError(f"model server {workload} did not start: {lines!r}\n{err[-2000:]}")
    return ModelServerProcess(proc, lines[0], lines[1].split(" ", 1)[1], workload, namespace)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: serve until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", required=True)
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--model", choices=MODEL_KINDS, default="large")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--sidecar-port", type=int, default=0)
    parser.add_argument("--service", default=None)
    parser.add_argument("--version", default="v1")
    parser.add_argument("--host", default=LOOPBACK)
    args = parser.parse_args(argv)

    server = ModelServer(
        args.workload, args.namespace, args.model, port=args.port,
        sidecar_port=args.sidecar_port, service=args.service, version=args.version, host=args.host,
    )
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    server.start()
    try:
        print(server.url, flush=True)
        print(f"sidecar {server.sidecar_url}", flush=True)
        while not done.wait(0.2):  # short waits, so the signal handler runs promptly
            pass
    finally:
        server.stop()
    sys.stdout.flush()
    # Skip interpreter teardown (scikit-learn/joblib atexit hooks cost ~1 s); nothing is left to flush.
    os._exit(0)


if __name__ == "__main__":
    raise SystemExit(main())
