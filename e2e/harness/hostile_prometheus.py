"""A hostile "Prometheus" on loopback: it answers the instant-query API the way a broken or malicious server
would, so tests and benchmarks can prove what the operator does with such answers.

Modes (`HostilePrometheus(mode, ...)`, or `set_mode` while it runs):
- ``ok``: a valid vector of `series` (one series without labels by default) with `value` each;
- ``inf``: the same with the value ``+Inf``;
- ``slow``: ``ok`` after `delay` seconds;
- ``trickle``: a 200 header promising a large body, then one byte every `trickle_every` seconds, forever;
- ``endless``: a valid vector's beginning, then series as fast as the socket takes them, forever;
- ``huge``: a complete, valid vector of `huge_series` series;
- ``malformed``: a 200 answer of the wrong shape, one of `SHAPES` (`shape`);
- ``redirect``: a 302 to `location`;
- ``errbody``: a 500 whose body is `CANARY` (a secret that must never reach a log or a status).

Every request is recorded (`requests`: path and headers), and `connections` counts accepted connections,
so a test can tell what reached the server, or that nothing did. `stop()` ends every connection, also
the ones still trickling. Loopback only.
"""
from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Mapping, Sequence

__all__ = ["CANARY", "MODES", "SHAPES", "HostilePrometheus", "Recorded"]

LOOPBACK = "127.0.0.1"
CANARY = "CANARY-SECRET-4f1d2c"


def _vector(result: Any, kind: str = "vector") -> bytes:
    return json.dumps({"status": "success", "data": {"resultType": kind, "result": result}}).encode()


SHAPES: dict[str, bytes] = {
    "not-json": b"<html>not json</html>",
    "not-object": b"[1, 2, 3]",
    "status-error": json.dumps({"status": "error", "errorType": "bad_data", "error": "no"}).encode(),
    "no-data": b'{"status": "success"}',
    "result-object": _vector({"a": 1}),
    "result-number": _vector(5),
    "matrix": _vector([{"metric": {}, "values": [[0, "1"]]}], "matrix"),
    "string": _vector([0, "x"], "string"),
    "short-value": _vector([{"metric": {}, "value": [0]}]),
    "metric-not-object": _vector([{"metric": "x", "value": [0, "1"]}]),
    "value-not-list": _vector([{"metric": {}, "value": "1"}]),
    "label-not-string": _vector([{"metric": {"a": 1}, "value": [0, "1"]}]),
    "boolean-value": _vector([{"metric": {}, "value": [0, True]}]),
    "scalar-short": _vector([0], "scalar"),
    "deep": b"[" * 60_000,
}
"""Answers of the wrong shape: each must fail its query, never raise out of the reader."""

MODES = ("ok", "inf", "slow", "trickle", "endless", "huge", "malformed", "redirect", "errbody")


@dataclass(frozen=True)
class Recorded:
    path: str
    headers: Mapping[str, str]


@dataclass
class _Behaviour:
    mode: str = "ok"
    value: str = "1"
    series: Sequence[Mapping[str, str]] = ({},)
    shape: str = "short-value"
    location: str = ""
    delay: float = 5.0
    trickle_every: float = 1.0
    huge_series: int = 100_000


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, owner: HostilePrometheus, port: int) -> None:
        self.owner = owner
        super().__init__((LOOPBACK, port), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up mid-answer is what these tests are about, not an error

    def process_request(self, request: Any, client_address: Any) -> None:
        self.owner._accepted(request)
        super().process_request(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        owner = self.server.owner
        owner.requests.append(Recorded(self.path, dict(self.headers.items())))
        b = owner.behaviour
        try:
            getattr(self, f"_{b.mode}")(b, owner.stopping)
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True

    def _reply(self, code: int, body: bytes, headers: Sequence[tuple[str, str]] = ()) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _ok(self, b: _Behaviour, stopping: threading.Event) -> None:
        self._reply(200, _vector([{"metric": dict(s), "value": [time.time(), b.value]} for s in b.series]))

    def _inf(self, b: _Behaviour, stopping: threading.Event) -> None:
        self._reply(200, _vector([{"metric": dict(s), "value": [time.time(), "+Inf"]} for s in b.series]))

    def _slow(self, b: _Behaviour, stopping: threading.Event) -> None:
        if not stopping.wait(b.delay):
            self._ok(b, stopping)

    def _trickle(self, b: _Behaviour, stopping: threading.Event) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "1000000000")
        self.end_headers()
        self.wfile.flush()
        while not stopping.wait(b.trickle_every):
            self.wfile.write(b" ")
            self.wfile.flush()
        self.close_connection = True

    def _stream(self, stopping: threading.Event, series: int | None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(b'{"status":"success","data":{"resultType":"vector","result":[')
        item = b'{"metric":{"destination_workload":"w","destination_workload_namespace":"n"},"value":[0,"1"]}'
        chunk = b",".join([item] * 1000)
        sent = 0
        while not stopping.is_set() and (series is None or sent < series):
            self.wfile.write((b"," if sent else b"") + chunk)
            sent += 1000
        self.wfile.write(b"]}}")
        self.close_connection = True

    def _endless(self, b: _Behaviour, stopping: threading.Event) -> None:
        self._stream(stopping, None)

    def _huge(self, b: _Behaviour, stopping: threading.Event) -> None:
        self._stream(stopping, b.huge_series)

    def _malformed(self, b: _Behaviour, stopping: threading.Event) -> None:
        self._reply(200, SHAPES[b.shape])

    def _redirect(self, b: _Behaviour, stopping: threading.Event) -> None:
        self._reply(302, b"", [("Location", b.location)])

    def _errbody(self, b: _Behaviour, stopping: threading.Event) -> None:
        self._reply(500, CANARY.encode())


class HostilePrometheus:
    """One hostile server on a free loopback port; a context manager that always stops what it started."""

    def __init__(self, mode: str = "ok", port: int = 0, **behaviour: Any) -> None:
        self.requests: list[Recorded] = []
        self.connections = 0
        self.stopping = threading.Event()
        self.behaviour = _Behaviour()
        self.set_mode(mode, **behaviour)
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._server = _Server(self, port)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self._server.server_address[1]}"

    def set_mode(self, mode: str, **behaviour: Any) -> None:
        """Change how later requests are answered; unnamed settings go back to their defaults."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; one of {MODES}")
        if behaviour.get("shape", "short-value") not in SHAPES:
            raise ValueError(f"unknown shape {behaviour['shape']!r}; one of {sorted(SHAPES)}")
        self.behaviour = _Behaviour(mode=mode, **behaviour)

    def _accepted(self, sock: socket.socket) -> None:
        with self._lock:
            self.connections += 1
            self._sockets.append(sock)

    def start(self) -> str:
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                            name="hostile-prometheus", daemon=True)
            self._thread.start()
        return self.url

    def stop(self) -> None:
        """Stop serving and end every connection, trickling or not."""
        self.stopping.set()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._server.server_close()

    def __enter__(self) -> HostilePrometheus:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

