"""The demo-server container as the kubelet runs it: the image's argv, env and ports.

No cluster here: these are the rules both backends share (grpclab.cluster.containers),
checked against cluster/Dockerfile itself, and the kube backend's use of them.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml
from kubernetes.client import (
    V1Container,
    V1ContainerPort,
    V1EnvVar,
    V1ObjectMeta,
    V1Pod,
    V1PodSpec,
    V1PodStatus,
)
from support import REPO

from grpclab.cluster import containers, kube
from grpclab.cluster.containers import container_argv, listening_ports, server_flags
from grpclab.cluster.manifests import ManifestError, check_sandbox_support, load_objects

DOCKERFILE = REPO / "cluster" / "Dockerfile"
BASE_DEPLOYMENT = REPO / "cluster" / "manifests" / "base" / "deployment.yaml"


def image_instruction(name: str) -> list[str]:
    """The exec-form (JSON) value of the Dockerfile's last `name` instruction; [] if none."""
    found = re.findall(rf"^{name}\s+(\[.*\])\s*$", DOCKERFILE.read_text(), re.M)
    return json.loads(found[-1]) if found else []


def test_the_module_mirrors_the_dockerfiles_entrypoint_and_cmd():
    # Exec form only: a shell-form ENTRYPOINT would ignore args altogether.
    assert image_instruction("ENTRYPOINT") == list(containers.IMAGE_ENTRYPOINT)
    assert image_instruction("CMD") == list(containers.IMAGE_CMD)
    assert not re.search(r"^(ENTRYPOINT|CMD)\s+[^\[\s]", DOCKERFILE.read_text(), re.M)


@pytest.mark.parametrize(
    ("command", "args", "expected"),
    [
        # Kubernetes, "Define a Command and Arguments for a Container": neither given runs
        # the image as built; args replace CMD; command replaces ENTRYPOINT and drops CMD.
        (None, None, "ENTRYPOINT CMD"),
        (None, ["--port", "9191"], "ENTRYPOINT --port 9191"),
        (["python", "-m", "grpclab.load"], None, "python -m grpclab.load"),
        (["python", "-m", "grpclab.load"], ["--rpcs", "5"], "python -m grpclab.load --rpcs 5"),
        (None, [], "ENTRYPOINT CMD"),  # an empty list is no list (omitempty)
    ],
)
def test_the_argv_is_built_as_the_container_runtime_builds_it(command, args, expected):
    entrypoint, cmd = image_instruction("ENTRYPOINT"), ["--from-cmd"]
    want = expected.replace("ENTRYPOINT", " ".join(entrypoint)).replace("CMD", "--from-cmd")
    assert container_argv(command, args, entrypoint=entrypoint, cmd=cmd) == want.split()
    # With the real image (no CMD), args are exactly the server's flags.
    if command is None:
        assert server_flags(container_argv(None, args)) == list(args or [])


def test_dollar_references_expand_from_the_env_as_the_kubelet_does():
    env = {"PORT": "9191"}
    argv = container_argv(None, ["--port", "$(PORT)", "$(MISSING)", "$$(PORT)", "a$$b"], env=env)
    assert argv[3:] == ["--port", "9191", "$(MISSING)", "$(PORT)", "a$b"]


def base_container() -> dict:
    return yaml.safe_load(BASE_DEPLOYMENT.read_text())["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize(
    ("change", "ports"),
    [
        ({}, {"grpc": 50051, "metrics": 9090}),
        ({"args": ["--port", "9191"]}, {"grpc": 9191, "metrics": 9090}),
        ({"env": [{"name": "GRPC_PORT", "value": "9191"}]}, {"grpc": 9191, "metrics": 9090}),
        (  # the flag wins over the env, as in the image
            {"args": ["--port=7000"], "env": [{"name": "GRPC_PORT", "value": "9191"}]},
            {"grpc": 7000, "metrics": 9090},
        ),
        (
            {"env": [{"name": "P", "value": "9191"}], "args": ["--port", "$(P)"]},
            {"grpc": 9191, "metrics": 9090},
        ),
        ({"env": [{"name": "METRICS_PORT", "value": "0"}]}, {"grpc": 50051, "metrics": 0}),
        # containerPort only declares: the server still listens on its default.
        ({"ports": [{"name": "grpc", "containerPort": 9191}]}, {"grpc": 50051, "metrics": 9090}),
        (
            {"command": ["python3", "-m", "grpclab.demo.server", "--port", "8000"]},
            {"grpc": 8000, "metrics": 9090},
        ),
        ({"command": ["/bin/my-server"]}, None),  # not the demo server
        ({"args": ["--port", "grpc"]}, None),  # the server exits 2 on this, as on kind
    ],
)
def test_listening_ports_follow_flags_env_and_defaults_not_container_port(change, ports, capsys):
    container = {**base_container(), **change}
    assert listening_ports(container) == ports
    assert capsys.readouterr().err == ""  # a refused flag is an answer, not stderr noise


def test_a_command_that_starts_the_demo_server_is_accepted_and_any_other_is_refused():
    text = BASE_DEPLOYMENT.read_text().replace(
        "          imagePullPolicy: IfNotPresent\n",
        '          imagePullPolicy: IfNotPresent\n          command: ["python", "-m", '
        '"grpclab.demo.server"]\n          args: ["--port", "50051"]\n',
    )
    check_sandbox_support(load_objects(text), "<text>")
    other = text.replace('"grpclab.demo.server"]', '"http.server"]')
    with pytest.raises(ManifestError, match=r"containers\[0\]\.command: the sandbox runs only"):
        check_sandbox_support(load_objects(other), "<text>")


def test_a_grpc_probe_with_a_named_port_says_it_takes_a_number():
    with pytest.raises(ManifestError) as caught:
        load_objects(REPO / "tests/fixtures/manifests/bad/probe-grpc-port-named.yaml")
    assert "GRPCAction.port is an int32" in str(caught.value)


def kube_pod(container: V1Container) -> V1Pod:
    return V1Pod(
        metadata=V1ObjectMeta(name="grpc-server-abc", namespace="production"),
        spec=V1PodSpec(containers=[V1Container(name="istio-proxy", image="x"), container]),
        status=V1PodStatus(pod_ip="10.244.1.5"),
    )


def test_the_kube_address_lookup_asks_the_same_question():
    declared = [V1ContainerPort(name="grpc", container_port=50052)]
    by_env = V1Container(
        name="grpc-server",
        image=kube.DEFAULT_IMAGE,
        ports=declared,
        env=[V1EnvVar(name="GRPC_PORT", value="9191")],
    )
    assert kube.server_address(kube_pod(by_env)) == "10.244.1.5:9191"
    by_args = V1Container(name="grpc-server", image="x", ports=declared, args=["--port", "7000"])
    assert kube.server_address(kube_pod(by_args)) == "10.244.1.5:7000"
    # A declared containerPort alone moves nothing: the server listens on its default.
    declared_only = V1Container(name="grpc-server", image="x", ports=declared)
    assert kube.server_address(kube_pod(declared_only)) == "10.244.1.5:50051"


class FakeCoreApi:
    """Stands in for CoreV1Api where no API server exists: records what logs() asks."""

    def __init__(self, pod: V1Pod, log: str) -> None:
        self.pod, self.log, self.calls = pod, log, []

    def read_namespaced_pod(self, name, namespace):
        return self.pod

    def read_namespaced_pod_log(self, name, namespace, **options):
        self.calls.append((name, namespace, options))
        return self.log


def test_kube_logs_read_the_server_containers_log_through_the_official_client():
    pod = kube_pod(V1Container(name="grpc-server", image="x"))
    core = FakeCoreApi(pod, "line 1\nline 2\n")
    cluster = object.__new__(kube.KubeCluster)
    cluster.namespace, cluster._core = "production", core
    assert cluster.logs("grpc-server-abc", tail=2) == "line 1\nline 2"
    assert core.calls == [
        ("grpc-server-abc", "production", {"container": "grpc-server", "tail_lines": 2})
    ]
