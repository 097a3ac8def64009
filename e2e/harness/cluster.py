"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, controller-manager, scheduler, KWOK.

No containers and no kubelet exist on the machines this runs on, so pods are "run" by KWOK, which
plays the node and pod lifecycle (node Ready, pod Running/Ready, graceful delete) against a real API
server. Everything else — admission, RBAC, Deployments rolling ReplicaSets, namespace finalisation,
CRD validation — is the genuine upstream code, built by ``e2e/controlplane/build.sh``.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import hashlib
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
VERSIONS_FILE = REPO_ROOT / "e2e" / "controlplane" / "versions.env"
# Where `make cluster-up` records its cluster; UNDERSTUDY_STATE_DIR moves it (a test's own directory).
STATE_DIR = Path(os.environ.get("UNDERSTUDY_STATE_DIR") or REPO_ROOT / ".e2e")
DEFAULT_ENV_FILE = STATE_DIR / "env"
STATE_FILE = STATE_DIR / "cluster.json"

# kwok only drives nodes carrying this annotation, so other nodes (if any) are never touched.
KWOK_NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
# Never bound or contacted: the API server only needs *some* non-loopback address to publish as the
# `kubernetes` Service endpoint (loopback is rejected there). TEST-NET-2 keeps it obviously fake.
ADVERTISE_ADDRESS = "198.51.100.1"
SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"

# The Istio file holds every Istio CRD; the operator only routes through these two.
ISTIO_CRDS = ("virtualservices.networking.istio.io", "destinationrules.networking.istio.io")
# Standard-channel Gateway API kinds an HTTPRoute lives with (file stems in config/crd/standard/).
GATEWAY_API_CRDS = ("gatewayclasses", "gateways", "httproutes", "referencegrants")
# The Gateway API Inference Extension's backend kind: an HTTPRoute rule may weigh InferencePools.
INFERENCE_POOL_CRD = "inferencepools.inference.networking.k8s.io"


class ControlPlaneError(RuntimeError):
    """A component failed to start or become ready; the message carries the tail of its log."""


def load_versions(path: Path = VERSIONS_FILE) -> dict[str, str]:
    """Parse versions.env (KEY=VALUE lines) so Python and build.sh share one pin list."""
    versions: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        versions[key.strip()] = value.strip().strip('"')
    return versions


def cache_dir() -> Path:
    """Where build.sh put binaries and CRDs (same default as the Makefile)."""
    return Path(os.environ.get("UNDERSTUDY_CACHE") or Path.home() / ".cache" / "understudy")


@dataclass(frozen=True)
class Toolchain:
    """Paths to the pinned binaries and fetched manifests in the cache."""

    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubectl: Path
    kwok: Path
    helm: Path
    registry: Path
    actionlint: Path
    kwok_stages: Path
    istio_crds: Path
    gateway_api_crds: Path
    inference_pool_crd: Path
    prometheus_operator_crds: Path
    versions: Mapping[str, str]

    @classmethod
    def from_cache(cls, root: Path | None = None) -> Toolchain:
        """Resolve every path and fail early, with the fix, if build.sh has not run."""
        root = root or cache_dir()
        v = load_versions()
        k8s = v["KUBERNETES_VERSION"]

        def b(name: str, version: str) -> Path:
            return root / "bin" / f"{name}-{version}" / name

        tc = cls(
            etcd=b("etcd", v["ETCD_VERSION"]),
            kube_apiserver=b("kube-apiserver", k8s),
            kube_controller_manager=b("kube-controller-manager", k8s),
            kube_scheduler=b("kube-scheduler", k8s),
            kubectl=b("kubectl", k8s),
            kwok=b("kwok", v["KWOK_VERSION"]),
            helm=b("helm", v["HELM_VERSION"]),
            registry=b("registry", v["DISTRIBUTION_VERSION"]),
            actionlint=b("actionlint", v["ACTIONLINT_VERSION"]),
            kwok_stages=root / f"kwok-stages-{v['KWOK_VERSION']}" / "stages.yaml",
            istio_crds=root / "crds" / f"istio-{v['ISTIO_API_VERSION']}" / "customresourcedefinitions.gen.yaml",
            gateway_api_crds=root / "crds" / f"gateway-api-{v['GATEWAY_API_VERSION']}",
            inference_pool_crd=root / "crds" / f"gateway-api-inference-extension-{v['GATEWAY_API_INFERENCE_EXTENSION_VERSION']}"
            / "inference.networking.k8s.io_inferencepools.yaml",
            prometheus_operator_crds=root / "crds" / f"prometheus-operator-{v['PROMETHEUS_OPERATOR_VERSION']}",
            versions=v,
        )
        missing = [str(p) for p in tc.paths() if not p.exists()]
        if missing:
            raise ControlPlaneError(
                "control-plane binaries/manifests missing (run `make binaries`): " + ", ".join(missing)
            )
        return tc

    def paths(self) -> list[Path]:
        """Every file the harness needs."""
        return [
            self.etcd, self.kube_apiserver, self.kube_controller_manager, self.kube_scheduler,
            self.kubectl, self.kwok, self.helm, self.registry, self.actionlint, self.kwok_stages,
            self.istio_crds, self.gateway_api_crds, self.inference_pool_crd, self.prometheus_operator_crds,
        ]


# --------------------------------------------------------------------------------------------------
# Small helpers


def free_ports(n: int) -> list[int]:
    """Ask the kernel for n distinct free loopback ports (held open together so they differ)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def tail(path: Path, lines: int = 40) -> str:
    """Last lines of a log, for error messages that explain themselves."""
    try:
        data = path.read_text(errors="replace").splitlines()
    except OSError:
        return "<no log>"
    return "\n".join(data[-lines:])


def kill_with_parent() -> None:
    """preexec hook: the kernel SIGKILLs the child if the harness dies without cleaning up."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ControlPlaneError(f"openssl {' '.join(args)} failed: {proc.stderr.strip()}")


@dataclass
class Pki:
    """Certificates for one throwaway cluster, made with the openssl CLI (no extra Python deps)."""

    dir: Path

    def path(self, name: str) -> Path:
        return self.dir / name

    def create(self) -> None:
        """CA, API serving cert, one client cert per component, and the service-account key pair."""
        self.dir.mkdir(parents=True, exist_ok=True)
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        _openssl(
            "req", "-x509", "-new", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "3650",
            "-subj", "/CN=understudy-e2e-ca",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
            cwd=self.dir,
        )
        sans = ",".join([
            "IP:127.0.0.1", f"IP:{ADVERTISE_ADDRESS}", "IP:10.96.0.1", "DNS:localhost", "DNS:kubernetes",
            "DNS:kubernetes.default", "DNS:kubernetes.default.svc", "DNS:kubernetes.default.svc.cluster.local",
        ])
        self._leaf("apiserver", "/CN=kube-apiserver", "serverAuth", sans)
        # system:masters bypasses RBAC: the admin the tests and the demo act as.
        self._leaf("admin", "/O=system:masters/CN=understudy-admin", "clientAuth")
        # Real component identities, so bootstrap RBAC (not system:masters) authorises them.
        self._leaf("controller-manager", "/CN=system:kube-controller-manager", "clientAuth")
        self._leaf("scheduler", "/CN=system:kube-scheduler", "clientAuth")
        # The aggregation layer's identity; also lets components find a request-header CA (quiet logs).
        self._leaf("front-proxy-client", "/CN=front-proxy-client", "clientAuth")
        _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "sa.key", cwd=self.dir)
        _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=self.dir)
        for key in self.dir.glob("*.key"):
            key.chmod(0o600)

    def _leaf(self, name: str, subject: str, usage: str, sans: str | None = None) -> None:
        ext = [
            "basicConstraints=CA:FALSE",
            "keyUsage=critical,digitalSignature,keyEncipherment",
            f"extendedKeyUsage={usage}",
        ]
        if sans:
            ext.append(f"subjectAltName={sans}")
        (self.dir / f"{name}.ext").write_text("\n".join(ext) + "\n")
        _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=self.dir)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-set_serial", str(secrets.randbits(63)), "-days", "365", "-out", f"{name}.crt",
                 "-extfile", f"{name}.ext", cwd=self.dir)


def write_kubeconfig(path: Path, server: str, ca: Path, cert: Path, key: Path, user: str) -> None:
    """A kubeconfig that points at files, so it stays valid as long as the workdir exists."""
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "understudy-e2e", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": {"client-certificate": str(cert), "client-key": str(key)}}],
        "contexts": [{"name": "understudy-e2e", "context": {"cluster": "understudy-e2e", "user": user}}],
        "current-context": "understudy-e2e",
    }
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    path.chmod(0o600)


def render_env(values: Mapping[str, str], extra: Mapping[str, str]) -> str:
    """Shell syntax for `.e2e/env`; the Prometheus placeholder stays visible until someone fills it."""
    lines = ["# Written by `python -m e2e.harness`; load with `. .e2e/env`."]
    for key, value in {**values, **extra}.items():
        if key == "PATH":
            lines.append(f'export PATH="{value}:$PATH"')
        else:
            lines.append(f"export {key}={shlex.quote(value)}")
    if "PROMETHEUS_URL" not in extra and "PROMETHEUS_URL" not in values:
        lines.append("# export PROMETHEUS_URL=  (written by the Prometheus harness via write_env)")
    return "\n".join(lines) + "\n"


def update_env_file(extra: Mapping[str, str], path: Path = DEFAULT_ENV_FILE) -> None:
    """Merge `export KEY=VALUE` lines into an existing env file (for harnesses in another process)."""
    values: dict[str, str] = {}
    path_prefix: str | None = None
    if path.exists():
        for line in path.read_text().splitlines():
            if not line.startswith("export "):
                continue
            key, _, raw = line[len("export "):].partition("=")
            if key == "PATH":
                path_prefix = raw.strip('"').removesuffix(":$PATH")
            else:
                parts = shlex.split(raw)
                values[key] = parts[0] if parts else ""
    if path_prefix is not None:
        values = {"PATH": path_prefix, **values}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(render_env(values, extra))
    tmp.replace(path)


# --------------------------------------------------------------------------------------------------
# Processes


@dataclass
class Component:
    """One started binary: its own process group, so stopping it also stops anything it forked."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.proc.poll() is None


def stop_pgroup(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM the process group led by pid, then SIGKILL whatever is left after timeout."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        if _is_zombie(pid):
            break
        # Reap if it is our child, so the group can actually disappear.
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, 0)


WORKDIR_PREFIX = "understudy-cp-"


def reap_stale_workdirs(max_age: float = 3600.0) -> list[Path]:
    """Remove temp workdirs left by a harness that was SIGKILLed (its children died with it).

    A dir is stale only if it is older than max_age and no running process mentions it, so clusters
    of concurrent sessions and `make cluster-up` are never touched.
    """
    tmp = Path(tempfile.gettempdir())
    candidates = [d for d in tmp.glob(f"{WORKDIR_PREFIX}*") if d.is_dir()]
    if not candidates:
        return []
    cmdlines: list[str] = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                cmdlines.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
    removed = []
    now = time.time()
    for d in candidates:
        try:
            age = now - d.stat().st_mtime
        except OSError:
            continue
        if age > max_age and not any(str(d) in c for c in cmdlines):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


def _is_zombie(pid: int) -> bool:
    """An exited leader not yet reaped by its (new) parent still answers killpg(pid, 0)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


@dataclass
class ControlPlane:
    """Start/stop a loopback Kubernetes control plane; use as a context manager.

    ``nodes`` KWOK nodes are created and Ready before ``__enter__`` returns, along with the Istio
    VirtualService/DestinationRule and Gateway API CRDs. ``env_file`` (default: none) gets shell
    exports for KUBECONFIG and PATH; ``python -m e2e.harness up`` points it at ``.e2e/env``.
    """

    nodes: int = 1
    env_file: Path | None = None
    workdir: Path | None = None
    # Tie children to this Python process (PDEATHSIG); `up` turns it off to leave the cluster running.
    die_with_parent: bool = True
    start_timeout: float = 120.0
    toolchain: Toolchain = field(default_factory=Toolchain.from_cache)

    components: list[Component] = field(default_factory=list, init=False)
    ports: dict[str, int] = field(default_factory=dict, init=False)
    node_names: list[str] = field(default_factory=list, init=False)
    startup_seconds: float = field(default=0.0, init=False)
    # Seconds spent per start-up phase (waits included), for the docs and for spotting regressions.
    timings: dict[str, float] = field(default_factory=dict, init=False)
    _own_workdir: bool = field(default=False, init=False)
    _extra_env: dict[str, str] = field(default_factory=dict, init=False)
    _stopped: bool = field(default=True, init=False)

    # ---- public API ----------------------------------------------------------------------------

    @property
    def server(self) -> str:
        """HTTPS URL of the API server."""
        return f"https://127.0.0.1:{self.ports['apiserver']}"

    @property
    def kubeconfig(self) -> Path:
        """Admin kubeconfig (client certificate in system:masters)."""
        assert self.workdir is not None
        return self.workdir / "admin.kubeconfig"

    @property
    def log_dir(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "logs"

    @property
    def kubectl(self) -> Path:
        return self.toolchain.kubectl

    @property
    def helm(self) -> Path:
        return self.toolchain.helm

    def env(self) -> dict[str, str]:
        """Variables a subprocess (kubectl, helm, the operator) needs to talk to this cluster."""
        path = f"{self.toolchain.kubectl.parent}:{self.toolchain.helm.parent}"
        return {"KUBECONFIG": str(self.kubeconfig), "PATH": path, **self._extra_env}

    def subprocess_env(self) -> dict[str, str]:
        """os.environ plus env(), with the binaries first on PATH."""
        env = dict(os.environ)
        own = self.env()
        env.update({k: v for k, v in own.items() if k != "PATH"})
        env["PATH"] = own["PATH"] + os.pathsep + os.environ.get("PATH", "")
        # helm keeps state in $HOME by default; a per-cluster home avoids cross-test leaks.
        assert self.workdir is not None
        for var, sub in (("HELM_CACHE_HOME", "cache"), ("HELM_CONFIG_HOME", "config"), ("HELM_DATA_HOME", "data")):
            env.setdefault(var, str(self.workdir / "helm" / sub))
        return env

    def run_kubectl(self, *args: str, check: bool = True, input: str | None = None,
                    timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run the pinned kubectl against this cluster."""
        return subprocess.run([str(self.kubectl), *args], env=self.subprocess_env(), input=input,
                              capture_output=True, text=True, check=check, timeout=timeout)

    def run_helm(self, *args: str, check: bool = True, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run the pinned helm against this cluster."""
        return subprocess.run([str(self.helm), *args], env=self.subprocess_env(),
                              capture_output=True, text=True, check=check, timeout=timeout)

    def api_client(self) -> Any:
        """A fresh kubernetes.client.ApiClient for the admin user (caller closes it)."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def write_env(self, extra: Mapping[str, str] | None = None) -> Path | None:
        """(Re)write the env file; other harnesses add lines such as PROMETHEUS_URL through `extra`."""
        if extra:
            self._extra_env.update(extra)
        if self.env_file is None:
            return None
        base = {k: v for k, v in self.env().items() if k not in self._extra_env}
        base["UNDERSTUDY_APISERVER"] = self.server
        self.env_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.env_file.with_suffix(".tmp")
        tmp.write_text(render_env(base, self._extra_env))
        tmp.replace(self.env_file)
        return self.env_file

    def add_node(self, name: str, cpu: str = "32", memory: str = "256Gi", pods: str = "110",
                 labels: Mapping[str, str] | None = None) -> None:
        """Create a KWOK-managed node and wait until kwok reports it Ready."""
        from kubernetes import client

        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {KWOK_NODE_ANNOTATION[0]: KWOK_NODE_ANNOTATION[1], "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "kubernetes.io/role": "agent",
                    "node-role.kubernetes.io/agent": "",
                    "type": "kwok",
                    **(labels or {}),
                },
            },
            "status": {
                "allocatable": {"cpu": cpu, "memory": memory, "pods": pods},
                "capacity": {"cpu": cpu, "memory": memory, "pods": pods},
            },
        }
        with contextlib.closing(self.api_client()) as api:
            client.CoreV1Api(api).create_node(node)
        self.node_names.append(name)
        self._wait(f"node {name} Ready", lambda: self._node_ready(name), "kwok")

    # ---- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Bring every component up in dependency order; on any failure stop what was started."""
        t0 = time.monotonic()
        if self.workdir is None:
            reap_stale_workdirs()
            self.workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX))
            self._own_workdir = True
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        self._stopped = False
        atexit.register(self.stop)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        self.write_env()

    def _start(self) -> None:
        assert self.workdir is not None
        tc = self.toolchain
        names = ["etcd", "etcd_peer", "apiserver", "controller_manager", "scheduler", "kwok"]
        self.ports = dict(zip(names, free_ports(len(names)), strict=True))
        pki = Pki(self.workdir / "pki")
        t0 = time.monotonic()
        pki.create()
        self.timings["certificates"] = round(time.monotonic() - t0, 2)
        ca = pki.path("ca.crt")
        for user, cert in (("admin", "admin"), ("controller-manager", "controller-manager"),
                           ("scheduler", "scheduler")):
            write_kubeconfig(self.workdir / f"{user}.kubeconfig", self.server, ca,
                             pki.path(f"{cert}.crt"), pki.path(f"{cert}.key"), user)

        etcd_url = f"http://127.0.0.1:{self.ports['etcd']}"
        peer_url = f"http://127.0.0.1:{self.ports['etcd_peer']}"
        self._spawn("etcd", [
            str(tc.etcd), "--name=e2e", f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=e2e={peer_url}", "--initial-cluster-state=new",
            # Throwaway data: skipping fsync makes every API write much cheaper on small disks.
            "--unsafe-no-fsync", "--log-level=warn", "--quota-backend-bytes=2147483648",
        ])
        self._wait("etcd healthy", lambda: self._http_ok(f"{etcd_url}/health"), "etcd")

        self._spawn("kube-apiserver", [
            str(tc.kube_apiserver),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1", f"--secure-port={self.ports['apiserver']}",
            f"--advertise-address={ADVERTISE_ADDRESS}",
            f"--tls-cert-file={pki.path('apiserver.crt')}", f"--tls-private-key-file={pki.path('apiserver.key')}",
            f"--client-ca-file={ca}",
            f"--requestheader-client-ca-file={ca}", "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User", "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki.path('front-proxy-client.crt')}",
            f"--proxy-client-key-file={pki.path('front-proxy-client.key')}",
            f"--service-account-key-file={pki.path('sa.pub')}",
            f"--service-account-signing-key-file={pki.path('sa.key')}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            # PodSecurity is in the default admission set; listed so it stays on if defaults change.
            "--enable-admission-plugins=NodeRestriction,PodSecurity",
            "--allow-privileged=true",
            f"--cert-dir={self.workdir / 'apiserver-certs'}",
            "--profiling=false",
        ])
        self._wait("kube-apiserver /readyz", self._apiserver_ready, "kube-apiserver")
        t_spawn = time.monotonic()

        self._spawn("kube-controller-manager", [
            str(tc.kube_controller_manager),
            f"--kubeconfig={self.workdir / 'controller-manager.kubeconfig'}",
            f"--authentication-kubeconfig={self.workdir / 'controller-manager.kubeconfig'}",
            f"--authorization-kubeconfig={self.workdir / 'controller-manager.kubeconfig'}",
            "--bind-address=127.0.0.1", f"--secure-port={self.ports['controller_manager']}",
            f"--cert-dir={self.workdir / 'controller-manager-certs'}",
            f"--root-ca-file={ca}", f"--service-account-private-key-file={pki.path('sa.key')}",
            f"--cluster-signing-cert-file={ca}", f"--cluster-signing-key-file={pki.path('ca.key')}",
            "--use-service-account-credentials=true",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--leader-elect=false", "--profiling=false",
        ])
        self._spawn("kube-scheduler", [
            str(tc.kube_scheduler),
            f"--kubeconfig={self.workdir / 'scheduler.kubeconfig'}",
            f"--authentication-kubeconfig={self.workdir / 'scheduler.kubeconfig'}",
            f"--authorization-kubeconfig={self.workdir / 'scheduler.kubeconfig'}",
            "--bind-address=127.0.0.1", f"--secure-port={self.ports['scheduler']}",
            f"--cert-dir={self.workdir / 'scheduler-certs'}",
            "--leader-elect=false", "--profiling=false",
        ])
        # kwok acts for every fake node (status, leases, pod status), like kwokctl it uses the admin identity.
        self._spawn("kwok", [
            str(tc.kwok),
            f"--kubeconfig={self.kubeconfig}",
            f"--config={tc.kwok_stages}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION[0]}={KWOK_NODE_ANNOTATION[1]}",
            f"--cidr={POD_CIDR}", "--node-ip=127.0.0.1",
            f"--node-port={self.ports['kwok']}", f"--server-address=127.0.0.1:{self.ports['kwok']}",
            "--node-lease-duration-seconds=40",
        ])
        self.timings["spawn kcm/scheduler/kwok"] = round(time.monotonic() - t_spawn, 2)
        self._wait("kube-controller-manager /healthz",
                   lambda: self._https_ok(self.ports["controller_manager"], "/healthz"), "kube-controller-manager")
        self._wait("kube-scheduler /healthz",
                   lambda: self._https_ok(self.ports["scheduler"], "/healthz"), "kube-scheduler")
        self.install_crds()
        for i in range(self.nodes):
            self.add_node(f"kwok-node-{i}")
        # Pods are rejected until the ServiceAccount controller has made `default` in the namespace.
        self._wait("default ServiceAccount", self._default_sa_exists, "kube-controller-manager")

    def stop(self) -> None:
        """Stop every component (reverse order), then remove the workdir we created. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        for comp in reversed(self.components):
            stop_pgroup(comp.proc.pid)
            with contextlib.suppress(Exception):
                comp.proc.wait(timeout=5)
        self.components.clear()
        if self._own_workdir and self.workdir is not None and not os.environ.get("UNDERSTUDY_KEEP_WORKDIR"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def detach(self) -> dict[str, Any]:
        """Leave the cluster running after this process exits; return what `down` needs to stop it."""
        assert self.workdir is not None
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        self._stopped = True
        state = {
            "workdir": str(self.workdir),
            "kubeconfig": str(self.kubeconfig),
            "server": self.server,
            "env_file": str(self.env_file) if self.env_file else None,
            "pids": {c.name: c.proc.pid for c in self.components},
            "startup_seconds": round(self.startup_seconds, 2),
            "timings": self.timings,
        }
        self.components.clear()
        return state

    # ---- CRDs ----------------------------------------------------------------------------------

    def crd_documents(self) -> list[dict[str, Any]]:
        """The Istio routing CRDs, the Gateway API CRDs around HTTPRoute and the InferencePool.

        Parsing ~2 MB of upstream YAML takes seconds on a busy 2-core box, so the selection is kept
        as JSON in the cache, keyed by both pinned versions.
        """
        v = self.toolchain.versions
        selection = hashlib.sha256(",".join(ISTIO_CRDS + GATEWAY_API_CRDS).encode()).hexdigest()[:8]
        bundle = cache_dir() / "crds" / (
            f"bundle-istio-{v['ISTIO_API_VERSION']}-gwapi-{v['GATEWAY_API_VERSION']}"
            f"-gie-{v['GATEWAY_API_INFERENCE_EXTENSION_VERSION']}-{selection}.json"
        )
        with contextlib.suppress(OSError, ValueError):
            return json.loads(bundle.read_text())
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        docs: list[dict[str, Any]] = []
        # The Istio file holds ~15 CRDs; parse only the documents we install.
        for text in self.toolchain.istio_crds.read_text().split("\n---"):
            if not any(f"name: {n}" in text for n in ISTIO_CRDS):
                continue
            doc = yaml.load(text, Loader=loader)  # noqa: S506 - safe loader
            if doc and doc.get("kind") == "CustomResourceDefinition" and doc["metadata"]["name"] in ISTIO_CRDS:
                docs.append(doc)
        files = [self.toolchain.gateway_api_crds / f"gateway.networking.k8s.io_{k}.yaml" for k in GATEWAY_API_CRDS]
        for f in (*files, self.toolchain.inference_pool_crd):
            for doc in yaml.load_all(f.read_text(), Loader=loader):  # noqa: S506 - safe loader
                if doc and doc.get("kind") == "CustomResourceDefinition":
                    docs.append(doc)
        tmp = bundle.with_suffix(f".{os.getpid()}.tmp")
        with contextlib.suppress(OSError):
            tmp.write_text(json.dumps(docs, default=str))
            tmp.replace(bundle)
        return docs

    def install_crds(self, docs: Sequence[dict[str, Any]] | None = None) -> None:
        """Create the CRDs and wait until each is Established (i.e. its endpoint is served)."""
        from kubernetes import client

        docs_given = docs
        t0 = time.monotonic()
        docs = list(docs) if docs is not None else self.crd_documents()
        self.timings["CRD manifests"] = round(time.monotonic() - t0, 2)
        names = [d["metadata"]["name"] for d in docs]
        found = set(names)
        wanted = [*ISTIO_CRDS, *(f"{k}.gateway.networking.k8s.io" for k in GATEWAY_API_CRDS), INFERENCE_POOL_CRD]
        missing = [n for n in wanted if n not in found] if docs_given is None else []
        if missing:
            raise ControlPlaneError(f"CRDs missing from the fetched upstream manifests: {missing}")
        with contextlib.closing(self.api_client()) as api:
            ext = client.ApiextensionsV1Api(api)
            t0 = time.monotonic()
            for doc in docs:
                self._create_crd(ext, doc)
            self.timings["CRD create"] = round(time.monotonic() - t0, 2)

            def established() -> bool:
                for name in names:
                    resp = ext.read_custom_resource_definition_status(name, _preload_content=False)
                    status = json.loads(resp.data).get("status") or {}
                    conds = {c["type"]: c["status"] for c in status.get("conditions") or []}
                    if conds.get("Established") != "True":
                        return False
                return True

            self._wait("CRDs Established", established, "kube-apiserver")

    def _create_crd(self, ext: Any, doc: dict[str, Any], attempts: int = 5) -> None:
        """Create one CRD; a busy API server can time out (504) while rebuilding OpenAPI, so retry.

        One at a time on purpose: concurrent creates on a loaded 2-core machine hit the request timeout.
        """
        from kubernetes.client.rest import ApiException

        for attempt in range(1, attempts + 1):
            try:
                # _preload_content=False: turning a huge schema back into client models costs seconds.
                ext.create_custom_resource_definition(doc, _preload_content=False).data  # noqa: B018 - drain
                return
            except ApiException as err:
                if err.status == 409:  # an earlier attempt landed after all
                    return
                if attempt == attempts or (err.status or 0) < 429:
                    raise ControlPlaneError(
                        f"creating CRD {doc['metadata']['name']} failed: {err.status} {err.reason}; "
                        f"log {self.log_dir / 'kube-apiserver.log'}:\n{tail(self.log_dir / 'kube-apiserver.log')}"
                    ) from err
            time.sleep(attempt)

    # ---- internals -----------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str]) -> Component:
        log = self.log_dir / f"{name}.log"
        with open(log, "ab") as fh:
            proc = subprocess.Popen(
                argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.workdir,
                start_new_session=True, preexec_fn=kill_with_parent if self._tie_children() else None,
                env={**os.environ, "HOME": str(self.workdir)},
            )
        comp = Component(name, proc, log)
        self.components.append(comp)
        return comp

    def _tie_children(self) -> bool:
        """PDEATHSIG fires when the *thread* that forked exits, so only tie children from the main thread."""
        return self.die_with_parent and threading.current_thread() is threading.main_thread()

    def _component(self, name: str) -> Component | None:
        return next((c for c in self.components if c.name == name), None)

    def _wait(self, what: str, probe: Any, component: str, timeout: float | None = None) -> None:
        """Poll probe until it returns True; fail fast (with the log tail) if any component dies."""
        t0 = time.monotonic()
        try:
            self._poll(what, probe, component, timeout)
        finally:
            self.timings[what] = round(time.monotonic() - t0, 2)

    def _poll(self, what: str, probe: Any, component: str, timeout: float | None) -> None:
        deadline = time.monotonic() + (timeout or self.start_timeout)
        last_err: BaseException | None = None
        while time.monotonic() < deadline:
            for comp in self.components:
                if not comp.alive():
                    raise ControlPlaneError(
                        f"{comp.name} exited with code {comp.proc.returncode} while waiting for {what}; "
                        f"log {comp.log} (kept only with UNDERSTUDY_KEEP_WORKDIR=1):\n{tail(comp.log)}"
                    )
            try:
                if probe():
                    return
            except Exception as err:  # probes raise while the server is still coming up
                last_err = err
            time.sleep(0.2)
        comp = self._component(component)
        log = comp.log if comp else self.log_dir / f"{component}.log"
        raise ControlPlaneError(
            f"timed out after {timeout or self.start_timeout:.0f}s waiting for {what} "
            f"(last error: {last_err!r}); log {log} (kept only with UNDERSTUDY_KEEP_WORKDIR=1):\n{tail(log)}"
        )

    @staticmethod
    def _http_ok(url: str) -> bool:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200

    def _admin_ssl(self) -> ssl.SSLContext:
        assert self.workdir is not None
        pki = self.workdir / "pki"
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        return ctx

    def _apiserver_ready(self) -> bool:
        with urllib.request.urlopen(f"{self.server}/readyz", timeout=3, context=self._admin_ssl()) as resp:
            return resp.status == 200

    @staticmethod
    def _https_ok(port: int, path: str) -> bool:
        """Component health endpoints use self-signed serving certs: check liveness, not identity."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        try:
            with urllib.request.urlopen(f"https://127.0.0.1:{port}{path}", timeout=2, context=ctx) as resp:
                return resp.status == 200
        except urllib.error.HTTPError:
            return False

    def _node_ready(self, name: str) -> bool:
        from kubernetes import client

        with contextlib.closing(self.api_client()) as api:
            node = client.CoreV1Api(api).read_node(name)
        return any(c.type == "Ready" and c.status == "True" for c in (node.status.conditions or []))

    def _default_sa_exists(self) -> bool:
        from kubernetes import client

        with contextlib.closing(self.api_client()) as api:
            client.CoreV1Api(api).read_namespaced_service_account("default", "default")
        return True


# --------------------------------------------------------------------------------------------------
# Detached cluster (`python -m e2e.harness up|down`)


def _pid_belongs_to(pid: int, workdir: str) -> bool:
    """Guard against PID reuse: only signal processes whose command line mentions our workdir."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return workdir in cmdline


def read_state(path: Path = STATE_FILE) -> dict[str, Any] | None:
    """The recorded detached cluster, if any."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def detached_alive(state: Mapping[str, Any]) -> bool:
    """True if every recorded component of a detached cluster still runs."""
    return all(_pid_belongs_to(pid, state["workdir"]) for pid in state["pids"].values())


def up(nodes: int = 1, env_file: Path = DEFAULT_ENV_FILE, state_file: Path = STATE_FILE) -> dict[str, Any]:
    """Start a cluster that outlives this process and record it under .e2e/."""
    state = read_state(state_file)
    if state and detached_alive(state):
        return {**state, "reused": True}
    if state:
        down(state_file)
    cp = ControlPlane(nodes=nodes, env_file=env_file, die_with_parent=False)
    cp.start()
    state = cp.detach()
    state_file.parent.mkdir(parents=True, exist_ok=True)
    state_file.write_text(json.dumps(state, indent=2) + "\n")
    return state


def down(state_file: Path = STATE_FILE) -> bool:
    """Stop the detached cluster recorded in state_file; False if there was none."""
    state = read_state(state_file)
    if not state:
        return False
    for _name, pid in reversed(list(state["pids"].items())):
        if _pid_belongs_to(pid, state["workdir"]):
            stop_pgroup(pid)
    shutil.rmtree(state["workdir"], ignore_errors=True)
    env_file = state.get("env_file")
    if env_file:
        Path(env_file).unlink(missing_ok=True)
    state_file.unlink(missing_ok=True)
    return True


def iter_logs(workdir: Path) -> Iterator[Path]:
    """Component logs of a (possibly detached) cluster, for debugging output."""
    yield from sorted((workdir / "logs").glob("*.log"))


__all__ = [
    "ControlPlane", "ControlPlaneError", "Toolchain", "load_versions", "cache_dir", "update_env_file",
    "up", "down", "read_state", "detached_alive", "free_ports",
]
