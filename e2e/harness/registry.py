"""The CNCF Distribution registry on loopback: a real OCI registry for `helm push` and `helm install oci://`.

The binary is built from its Go module by build.sh (pinned in versions.env). Each `OciRegistry` listens on
a free 127.0.0.1 port, keeps its blobs in a directory of its own and is stopped, with its directory
removed, when the block ends (also when the test in it fails). Plain HTTP: helm talks to it with
`--plain-http`, as to any registry without TLS.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from e2e.harness.cluster import ControlPlaneError, Toolchain, free_ports, kill_with_parent, stop_pgroup, tail

__all__ = ["OciRegistry"]


class OciRegistry:
    """One registry process; a context manager that always stops what it started."""

    def __init__(self, binary: Path | None = None, ready_timeout: float = 30.0) -> None:
        self.binary = binary or Toolchain.from_cache().registry
        self.port = free_ports(1)[0]
        self.workdir = Path(tempfile.mkdtemp(prefix="understudy-registry-"))
        self.log_file = self.workdir / "registry.log"
        self.ready_timeout = ready_timeout
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        """host:port, what `oci://` references start with."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> OciRegistry:
        config = self.workdir / "config.yml"
        # JSON is YAML; no access log (every blob request would be a line), no tracing exporter.
        config.write_text(json.dumps({
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(self.workdir / "data")}, "delete": {"enabled": True}},
            "http": {"addr": self.host},
        }))
        env = {**os.environ, "OTEL_TRACES_EXPORTER": "none", "OTEL_SDK_DISABLED": "true"}
        with open(self.log_file, "ab") as log:
            self._proc = subprocess.Popen([str(self.binary), "serve", str(config)], stdout=log,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                          start_new_session=True, preexec_fn=kill_with_parent)
        try:
            self._wait_ready()
        except BaseException:
            self.close()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        last = "not tried"
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                raise ControlPlaneError(f"registry exited early:\n{tail(self.log_file)}")
            try:
                with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError) as err:
                last = str(err)
            time.sleep(0.1)
        raise ControlPlaneError(f"registry not ready after {self.ready_timeout}s ({last}):\n{tail(self.log_file)}")

    def tags(self, repository: str) -> list[str]:
        """The tags of a repository, from the registry's own API (not through helm)."""
        with urllib.request.urlopen(f"http://{self.host}/v2/{repository}/tags/list", timeout=5) as response:
            return sorted(json.loads(response.read())["tags"] or [])

    def close(self) -> None:
        """Stop the process group and remove the storage directory. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_pgroup(proc.pid)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> OciRegistry:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
