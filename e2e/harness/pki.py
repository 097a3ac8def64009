"""A throw-away certificate authority for tests, made with the system's openssl.

`ThrowawayPKI.create(directory)` writes a CA, a server certificate for 127.0.0.1 and a client certificate,
each with its key, valid for a day; nothing leaves the directory.
"""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ThrowawayPKI"]


def _openssl(*args: str, cwd: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("openssl is not on PATH; run `make system-deps`")
    done = subprocess.run([openssl, *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {done.stderr.strip()}")


@dataclass(frozen=True)
class ThrowawayPKI:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    @classmethod
    def create(cls, directory: Path) -> ThrowawayPKI:
        directory.mkdir(parents=True, exist_ok=True)
        key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
        _openssl("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
                 "-subj", "/CN=understudy test CA", "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory)
        for name, usage, san in (("server", "serverAuth", "subjectAltName=IP:127.0.0.1\n"),
                                 ("client", "clientAuth", "")):
            _openssl("req", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN=understudy {name}",
                     cwd=directory)
            (directory / f"{name}.ext").write_text(f"{san}extendedKeyUsage={usage}\n")
            _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                     "-out", f"{name}.crt", "-days", "1", "-extfile", f"{name}.ext", cwd=directory)
        return cls(directory / "ca.crt", directory / "server.crt", directory / "server.key",
                   directory / "client.crt", directory / "client.key")
