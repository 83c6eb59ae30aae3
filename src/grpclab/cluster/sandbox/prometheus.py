"""Prometheus in the sandbox: the real server, finding pods through file-based discovery.

On Kubernetes, Prometheus lists pods from the API server (`kubernetes_sd_configs`, see
cluster/addons/prometheus.yaml). The sandbox has no API server for it to ask, so this
addon writes every running pod's `metrics` port to a targets file after each change
(`file_sd_configs`), with the labels the kind setup gives each target: namespace, pod
and app. Scraping, storage and PromQL are Prometheus's own.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time
import urllib.error
from pathlib import Path

from grpclab.cluster.sandbox.addons import ClusterView
from grpclab.cluster.sandbox.processes import MissingBinaryError, ProcessLauncher
from grpclab.local_http import open_local

JOB = "pods"  # the scrape job's name, the same as on kind
METRICS_PORT_NAME = "metrics"
POD_SUFFIX = re.compile(r"[0-9a-f]{10}-[0-9a-z]{5}")
# production: 15s to 60s. One second lets a notebook see a change while it watches, and
# keeps rate() windows of a few seconds meaningful (a window needs two samples or more).
SCRAPE_INTERVAL = "1s"
INSTALL_HINT = (
    "Prometheus is not installed. On Debian or Ubuntu: `sudo apt-get install prometheus` "
    "(then `sudo systemctl disable --now prometheus`: grpclab starts its own); elsewhere "
    "download it from https://prometheus.io/download/ and put `prometheus` on PATH, or "
    "set GRPCLAB_PROMETHEUS to the binary."
)


def prometheus_binary(search_path: str | None = None) -> str:
    """The Prometheus server: $GRPCLAB_PROMETHEUS, else `prometheus` on PATH or in /usr/bin."""
    chosen = os.environ.get("GRPCLAB_PROMETHEUS")
    if chosen:
        if not (Path(chosen).is_file() and os.access(chosen, os.X_OK)):
            raise MissingBinaryError(f"GRPCLAB_PROMETHEUS={chosen} is not an executable file.")
        return chosen
    if search_path is None:
        # Debian's package installs /usr/bin/prometheus, which a kernel's PATH may lack.
        search_path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/bin"])
    found = shutil.which("prometheus", path=search_path)
    if found is None:
        raise MissingBinaryError(INSTALL_HINT)
    return found


def scrape_config(targets_file: Path) -> dict:
    """prometheus.yml: one job that scrapes whatever the targets file lists."""
    return {
        "global": {
            "scrape_interval": SCRAPE_INTERVAL,
            "scrape_timeout": SCRAPE_INTERVAL,
            "evaluation_interval": SCRAPE_INTERVAL,  # production: the same as scrape_interval
        },
        "scrape_configs": [
            {
                "job_name": JOB,
                # Prometheus watches the file (inotify) and rereads it at once on a
                # change; the refresh is only the fallback for filesystems without it.
                "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": "5s"}],
            }
        ],
    }


def scrape_targets(view: ClusterView) -> list[dict]:
    """One file_sd entry per running pod with a `metrics` port, as kind's relabelling labels it.

    `instance` is left to Prometheus, which sets it to the address (ip:port) as on kind.
    """
    entries = []
    for pod in sorted(view.pods, key=lambda p: p.pod):
        port = pod.ports.get(METRICS_PORT_NAME)
        if port is None:
            continue
        labels = {"namespace": _namespace_of(view, pod.pod), "pod": pod.pod}
        if "app" in pod.labels:
            labels["app"] = pod.labels["app"]
        entries.append({"targets": [f"{pod.ip}:{port}"], "labels": labels})
    return entries


def _namespace_of(view: ClusterView, pod: str) -> str:
    # A pod's name is <deployment>-<template hash>-<suffix>: its Deployment says where it is.
    for kind, namespace, name in view.objects:
        if kind == "Deployment" and POD_SUFFIX.fullmatch(pod.removeprefix(name + "-")):
            return namespace
    return ""


class PrometheusAddon:
    """A real Prometheus that scrapes every pod of the sandbox; `url` is its HTTP API."""

    name = "prometheus"

    def __init__(
        self, launcher: ProcessLauncher, host: str, work_dir: Path, timeout: float = 30.0
    ) -> None:
        binary = prometheus_binary()
        self._launcher = launcher
        self.dir = work_dir / "prometheus"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.targets_file = self.dir / "targets.json"
        self._write_targets([])
        config_file = self.dir / "prometheus.yml"
        # JSON is YAML: no YAML writer needed for a file nobody edits by hand.
        config_file.write_text(json.dumps(scrape_config(self.targets_file), indent=2))
        self.address = f"{host}:{_free_port(host)}"
        self.url = f"http://{self.address}"
        argv = [
            binary,
            f"--config.file={config_file}",
            f"--web.listen-address={self.address}",
            f"--storage.tsdb.path={self.dir / 'data'}",
            "--storage.tsdb.retention.time=1h",  # production: 15d (the default) or more
            "--log.level=warn",
        ]
        self.process = launcher.start("prometheus", argv)
        try:
            self._wait_ready(timeout)
        except BaseException:
            launcher.stop(self.process)
            raise

    def sync(self, view: ClusterView) -> None:
        self._write_targets(scrape_targets(view))

    def target(self, service: str, port: int, namespace: str, via: str) -> str | None:
        return None  # Prometheus reaches pods; it is not a way for clients to reach Services

    def stop(self) -> None:
        self._launcher.stop(self.process, grace=5.0)

    def targets(self) -> list[dict]:
        """What the targets file lists now (the file_sd entries)."""
        return json.loads(self.targets_file.read_text())

    def _write_targets(self, entries: list[dict]) -> None:
        # Write, then rename: Prometheus must never read a half-written file.
        partial = self.targets_file.with_suffix(".tmp")
        partial.write_text(json.dumps(entries, indent=1))
        os.replace(partial, self.targets_file)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                log = (self._launcher.log_dir / "prometheus.log").read_text(errors="replace")
                raise RuntimeError(
                    f"Prometheus exited with code {self.process.returncode}:\n{log[-2000:]}"
                )
            try:
                with open_local(f"{self.url}/-/ready", timeout=1) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"Prometheus at {self.url} was not ready within {timeout:.0f} s")
            time.sleep(0.1)


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]
