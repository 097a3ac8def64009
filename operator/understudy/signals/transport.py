"""A GET to Prometheus that no server can stretch in time or in size.

Why not prometheus-api-client (requests) or urllib3 in the reader: their timeouts bound each socket
operation, so a server sending one byte a second never trips them, and they hand out the socket only once
the answer has begun, too late to bound a TLS handshake or headers that trickle. Here the endpoint opens its
connection itself and gives the socket to a `Watchdog`, one thread that shuts the socket down at the
request's wall-clock deadline, whatever phase the request is in. The body is read in chunks and abandoned
beyond a byte cap (counted after gzip decoding, so a small compressed answer cannot expand in memory).
Redirects are never followed, and nothing is taken from the environment (no proxy variables, no netrc).

Credentials are attached only by an endpoint made with them, which the reader does for the operator's own
Prometheus alone. Secret files are read at each request, so a rotated Secret takes effect without a restart.
Failure messages carry no body, no header and no credential: they are logged.
"""
from __future__ import annotations

import base64
import heapq
import http.client
import itertools
import os
import re
import select
import socket
import ssl
import threading
import time
import zlib
from dataclasses import dataclass

from understudy.signals.endpoints import PrometheusURL

CHUNK_BYTES = 64 * 1024
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_HEADER_VALUE = re.compile(r"^[\t\x20-\x7e]*$")


class QueryFailed(Exception):
    """No usable answer. `costly`: the attempt spent its time or byte budget (deadline, size), which a lane
    that is not the operator's own Prometheus answers by backing off."""

    def __init__(self, message: str, costly: bool = False) -> None:
        super().__init__(message)
        self.costly = costly


@dataclass(frozen=True)
class Credentials:
    """How the operator authenticates to its own Prometheus; every secret lives in a file (a mounted Secret)."""

    bearer_token_file: str | None = None
    username: str | None = None
    password_file: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    """Extra request headers, e.g. (("X-Scope-OrgID", "team-a"),) for a multi-tenant store."""

    def __post_init__(self) -> None:
        if self.bearer_token_file and self.username:
            raise ValueError("choose a bearer token or basic auth, not both")
        if bool(self.username) != bool(self.password_file):
            raise ValueError("basic auth needs both a username and a password file")
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("a client certificate needs both its certificate and its key file")
        for name, value in self.headers:
            if not _HEADER_NAME.match(name) or not _HEADER_VALUE.match(value):
                raise ValueError(f"header {name!r} is not a valid HTTP header")
            if name.lower() in ("authorization", "host", "content-length", "transfer-encoding"):
                raise ValueError(f"header {name!r} is set by the operator itself")

    def authorization(self) -> str | None:
        """The Authorization header's value, from the files as they are now."""
        if self.bearer_token_file:
            return f"Bearer {_read_secret(self.bearer_token_file)}"
        if self.username and self.password_file:
            pair = f"{self.username}:{_read_secret(self.password_file)}".encode()
            return f"Basic {base64.b64encode(pair).decode()}"
        return None

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca_file)
        if self.cert_file and self.key_file:
            context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def files(self) -> tuple[str, ...]:
        return tuple(f for f in (self.ca_file, self.cert_file, self.key_file) if f)


def _read_secret(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError as error:
        raise QueryFailed(f"cannot read {path}: {error.strerror}") from None


class Guard:
    """One request's deadline: the watchdog shuts down whichever socket the request is using when it passes."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.fired = False
        self.done = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sock = sock
            fired = self.fired
        if fired:
            _shutdown(sock)

    def fire(self) -> None:
        with self._lock:
            if self.done:
                return
            self.fired = True
            sock = self._sock
        if sock is not None:
            _shutdown(sock)

    def disarm(self) -> None:
        with self._lock:
            self.done = True
            self._sock = None


def _shutdown(sock: socket.socket) -> None:
    """Wake any thread blocked on the socket. The base class's method, so an SSLSocket's TLS state is left
    to the thread that owns it."""
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


class Watchdog:
    """Enforces every request's deadline from one thread; a request costs a heap entry, not a timer thread."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Guard]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self._closed = False

    def arm(self, deadline: float) -> Guard:
        guard = Guard(deadline)
        with self._cond:
            heapq.heappush(self._heap, (deadline, next(self._order), guard))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="understudy-deadlines", daemon=True)
                self._thread.start()
            self._cond.notify()
        return guard

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                while self._heap and self._heap[0][2].done:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                wait = self._heap[0][0] - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)[2].fire()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()


class Endpoint:
    """One Prometheus base URL: a keep-alive connection per worker thread, and bounded GETs."""

    def __init__(self, url: PrometheusURL, watchdog: Watchdog, credentials: Credentials | None = None) -> None:
        self.url = url
        self.credentials = credentials
        self._watchdog = watchdog
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: set[http.client.HTTPConnection] = set()
        self._context: tuple[tuple[float, ...], ssl.SSLContext] | None = None

    def get(self, path: str, deadline: float, max_bytes: int) -> bytes:
        """The body of a 200 answer to `GET <base path><path>`; QueryFailed for anything else."""
        if time.monotonic() >= deadline:  # queued past its lane's deadline: not worth sending
            raise QueryFailed("no time left before the deadline", costly=True)
        for attempt in range(2):
            conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
            reused = conn is not None and conn.sock is not None and not _dropped(conn.sock)
            if conn is not None and not reused:
                self._discard(conn)
                conn = None
            guard = self._watchdog.arm(deadline)
            try:
                if conn is None:
                    conn = self._connect(guard)
                else:
                    guard.watch(conn.sock)
                    conn.sock.settimeout(max(deadline - time.monotonic(), 0.001))
                body = self._exchange(conn, self.url.path + path, max_bytes)
                if guard.fired:  # a body cut short by the watchdog can look complete
                    raise QueryFailed("no complete answer before the deadline", costly=True)
                return body
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self._discard(conn)
                if guard.fired:
                    raise QueryFailed("no complete answer before the deadline", costly=True) from None
                if reused and attempt == 0:
                    continue  # the server closed an idle keep-alive connection: one fresh try
                raise QueryFailed("the connection was closed before an answer") from None
            except QueryFailed:
                self._discard(conn)
                raise
            except Exception as error:  # socket, TLS and HTTP parsing errors: all mean "no answer"
                self._discard(conn)
                if guard.fired:
                    raise QueryFailed("no complete answer before the deadline", costly=True) from None
                raise QueryFailed(_describe(error), costly=isinstance(error, TimeoutError)) from None
            finally:
                guard.disarm()
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _connect(self, guard: Guard) -> http.client.HTTPConnection:
        remaining = max(guard.deadline - time.monotonic(), 0.001)
        sock = socket.create_connection((self.url.host, self.url.port), timeout=remaining)
        guard.watch(sock)
        if self.url.scheme == "https":
            sock = self._ssl_context().wrap_socket(sock, server_hostname=self.url.host, do_handshake_on_connect=False)
            guard.watch(sock)
            sock.do_handshake()
        conn = http.client.HTTPConnection(self.url.host, self.url.port)
        conn.sock = sock
        self._local.conn = conn
        with self._lock:
            self._connections.add(conn)
        return conn

    def _ssl_context(self) -> ssl.SSLContext:
        """Built again when a certificate file changes, so rotated certificates are used by new connections."""
        credentials = self.credentials or Credentials()
        stamp = tuple(os.stat(f).st_mtime for f in credentials.files())
        if self._context is None or self._context[0] != stamp:
            self._context = (stamp, credentials.ssl_context())
        return self._context[1]

    def _exchange(self, conn: http.client.HTTPConnection, target: str, max_bytes: int) -> bytes:
        headers = {"Accept": "application/json", "Accept-Encoding": "gzip", "User-Agent": "understudy"}
        if self.credentials is not None:
            headers.update(self.credentials.headers)
            authorization = self.credentials.authorization()
            if authorization:
                headers["Authorization"] = authorization
        conn.request("GET", target, headers=headers)
        response = conn.getresponse()
        if response.status != 200:
            redirect = " (redirects are not followed)" if 300 <= response.status < 400 else ""
            raise QueryFailed(f"HTTP {response.status}{redirect}")
        encoding = (response.getheader("Content-Encoding") or "identity").strip().lower()
        if encoding not in ("identity", "gzip"):
            raise QueryFailed("the answer's content encoding is not supported")
        body = _bounded_body(response, max_bytes, zlib.decompressobj(wbits=31) if encoding == "gzip" else None)
        if response.will_close:
            self._discard(conn)
        return body

    def _discard(self, conn: http.client.HTTPConnection | None) -> None:
        if conn is None:
            return
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None
        with self._lock:
            self._connections.discard(conn)
        conn.close()

    def close(self) -> None:
        """Close every connection; a request still running fails."""
        with self._lock:
            connections, self._connections = self._connections, set()
        for conn in connections:
            if conn.sock is not None:
                _shutdown(conn.sock)
            conn.close()


def _bounded_body(response: http.client.HTTPResponse, max_bytes: int, decoder: zlib._Decompress | None) -> bytes:
    chunks: list[bytes] = []
    size = 0

    def take(piece: bytes) -> None:
        nonlocal size
        size += len(piece)
        if size > max_bytes:
            raise QueryFailed(f"the answer is larger than {max_bytes} bytes", costly=True)
        chunks.append(piece)

    while data := response.read(CHUNK_BYTES):
        if decoder is None:
            take(data)
            continue
        while data:
            take(decoder.decompress(data, max_bytes - size + 1))
            data = decoder.unconsumed_tail
    if decoder is not None:
        take(decoder.flush())
        if not decoder.eof:
            raise QueryFailed("the compressed answer is truncated")
    return b"".join(chunks)


def _dropped(sock: socket.socket) -> bool:
    """An idle keep-alive socket that is readable was closed (or spoken on) by the server: not reusable."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


def _describe(error: Exception) -> str:
    """A failure in words that hold nothing the server sent (HTTP parsing errors quote the bytes they saw)."""
    if isinstance(error, ssl.SSLError):
        return f"TLS error ({error.reason or type(error).__name__})"
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return type(error).__name__
