"""The kind Prometheus's scrape scope, checked by a real Prometheus.

cluster/addons/prometheus.yaml's own relabel rules run in a real Prometheus. Debian's
Prometheus (what .ci/run installs) is built without Kubernetes discovery, so the
discovery step is written out here: a file of targets with the labels that Prometheus's
`kubernetes_sd_configs` role "pod" gives each container port (`__meta_kubernetes_*`, as
https://prometheus.io/docs/prometheus/latest/configuration/configuration/#kubernetes_sd_config
lists them). Demo pods sit beside add-on controllers whose ports are also named "metrics".
What Prometheus then lists as its active and dropped targets is what it would scrape.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from support import CLUSTER, REPO

from grpclab.cluster.sandbox.processes import MissingBinaryError
from grpclab.cluster.sandbox.prometheus import prometheus_binary

MANIFEST = CLUSTER / "addons" / "prometheus.yaml"


def pod(namespace: str, name: str, labels: dict, ports: dict, ip: str) -> dict:
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{name}",
            "labels": labels,
            "resourceVersion": "1",
        },
        "spec": {
            "nodeName": "grpclab-worker",
            "containers": [
                {
                    "name": "main",
                    "image": "example",
                    "ports": [{"name": n, "containerPort": p} for n, p in ports.items()],
                }
            ],
        },
        "status": {"phase": "Running", "podIP": ip, "hostIP": "10.0.0.1"},
    }


DEMO = {"grpc": 50051, "metrics": 9090}
PODS = [
    pod("production", "grpc-server-5d4f8-abcde", {"app": "grpc-server"}, DEMO, "10.244.1.2"),
    pod("attendee-7", "grpc-server-v2-77f9c-fghij", {"app": "grpc-server-v2"}, DEMO, "10.244.1.3"),
    pod(
        "envoy-gateway-system",
        "envoy-gateway-6b9f-klmno",
        {"app.kubernetes.io/name": "gateway-helm"},
        {"metrics": 19001},
        "10.244.2.2",
    ),
    pod(
        "traefik",
        "traefik-7c8d-pqrst",
        {"app.kubernetes.io/name": "traefik"},
        {"metrics": 9100, "web": 8000},
        "10.244.2.3",
    ),
    pod(
        "linkerd",
        "linkerd-destination-1a2b-uvwxy",
        {"linkerd.io/control-plane-component": "destination"},
        {"admin-http": 9990, "metrics": 9996},
        "10.244.2.4",
    ),
    pod("default", "grpc-serverless-9z8y-zzzzz", {"app": "grpc-serverless"}, DEMO, "10.244.2.5"),
]


def discovered(pods: list[dict]) -> list[dict]:
    """The target groups kubernetes_sd_configs (role: pod) makes: one per container port."""
    groups = []
    for item in pods:
        meta, status = item["metadata"], item["status"]
        for container in item["spec"]["containers"]:
            for port in container["ports"]:
                labels = {
                    "__meta_kubernetes_namespace": meta["namespace"],
                    "__meta_kubernetes_pod_name": meta["name"],
                    "__meta_kubernetes_pod_phase": status["phase"],
                    "__meta_kubernetes_pod_ip": status["podIP"],
                    "__meta_kubernetes_pod_container_name": container["name"],
                    "__meta_kubernetes_pod_container_port_name": port["name"],
                    "__meta_kubernetes_pod_container_port_number": str(port["containerPort"]),
                    **{
                        "__meta_kubernetes_pod_label_"
                        + "".join(c if c.isalnum() else "_" for c in key): value
                        for key, value in meta["labels"].items()
                    },
                }
                address = f"{status['podIP']}:{port['containerPort']}"
                groups.append({"targets": [address], "labels": labels})
    return groups


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape_config(targets_file: Path) -> dict:
    config_map = next(
        d for d in yaml.safe_load_all(MANIFEST.read_text()) if d["kind"] == "ConfigMap"
    )
    config = yaml.safe_load(config_map["data"]["prometheus.yml"])
    for job in config["scrape_configs"]:
        # Discovery from the file instead of the API server; the relabel rules stay as they are.
        del job["kubernetes_sd_configs"]
        job["file_sd_configs"] = [{"files": [str(targets_file)]}]
    return config


@pytest.fixture(scope="module")
def targets(tmp_path_factory) -> Iterator[dict]:
    try:
        binary = prometheus_binary()
    except MissingBinaryError as error:
        pytest.skip(str(error))
    folder = tmp_path_factory.mktemp("prometheus")
    targets_file = folder / "targets.json"
    groups = discovered(PODS)
    targets_file.write_text(json.dumps(groups))
    config = folder / "prometheus.yml"
    config.write_text(yaml.safe_dump(scrape_config(targets_file)))
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(folder / "prometheus.log").open("w"),
    )
    try:
        url = f"http://127.0.0.1:{port}/api/v1/targets"
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2) as reply:
                    data = json.load(reply)["data"]
                # Prometheus reports the targets as its scrape manager takes them in, which
                # can be dropped ones first on a busy machine: wait until it has placed all.
                if len(data["activeTargets"]) + len(data["droppedTargets"]) >= len(groups):
                    yield data
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    "Prometheus discovered nothing:\n"
                    + (folder / "prometheus.log").read_text()[-2000:]
                )
            time.sleep(0.2)
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_only_the_demo_pods_metrics_ports_are_scraped(targets):
    active = sorted(
        (t["labels"]["namespace"], t["labels"]["pod"], t["scrapeUrl"])
        for t in targets["activeTargets"]
    )
    assert active == [
        ("attendee-7", "grpc-server-v2-77f9c-fghij", "http://10.244.1.3:9090/metrics"),
        ("production", "grpc-server-5d4f8-abcde", "http://10.244.1.2:9090/metrics"),
    ]
    dropped = {
        t["discoveredLabels"]["__meta_kubernetes_pod_name"] for t in targets["droppedTargets"]
    }
    # The add-ons' own "metrics" ports are discovered and left alone.
    assert {
        "envoy-gateway-6b9f-klmno",
        "traefik-7c8d-pqrst",
        "linkerd-destination-1a2b-uvwxy",
    } <= dropped
    assert "grpc-serverless-9z8y-zzzzz" in dropped  # app: grpc-server... as a prefix only


def test_each_series_carries_the_pod_and_app_labels_lab_06_selects_on(targets):
    # Lab 06's solution sums by (pod) and keeps app="grpc-server", with grpc-server-v2's pod
    # scraped beside it under its own app (labs/06-promql/solution/evenness.promql).
    labels = sorted(
        (t["labels"]["job"], t["labels"]["app"], t["labels"]["pod"])
        for t in targets["activeTargets"]
    )
    assert labels == [
        ("pods", "grpc-server", "grpc-server-5d4f8-abcde"),
        ("pods", "grpc-server-v2", "grpc-server-v2-77f9c-fghij"),
    ]
    solution = (REPO / "labs" / "06-promql" / "solution" / "evenness.promql").read_text()
    assert 'job="pods"' in solution and 'app="grpc-server"' in solution
    assert "by (pod)" in solution
