"""Sandbox pods run their container as the kubelet does: real server processes, real probes.

The server listens where its flags, env and defaults say; containerPort only declares.
Each case is one a learner may write, with what kind would do with it.
"""

from __future__ import annotations

import copy

import grpc
import pytest
import yaml
from support import REPO

import grpclab
from grpclab.demo._generated import demo_pb2, demo_pb2_grpc

NAMESPACE = REPO / "cluster" / "manifests" / "base" / "00-namespace.yaml"
BASE_DEPLOYMENT = yaml.safe_load((REPO / "cluster/manifests/base/deployment.yaml").read_text())
CHANNEL_OPTIONS = [("grpc.enable_http_proxy", 0)]


@pytest.fixture(scope="module")
def lab():
    with grpclab.connect("sandbox") as sandbox:
        sandbox.apply(NAMESPACE)
        yield sandbox


def deployment(name: str, port: int, probe_port: int, **container: object) -> dict:
    """The base Deployment, one replica, renamed, with its ports, probes and container set."""
    obj = copy.deepcopy(BASE_DEPLOYMENT)
    obj["metadata"]["name"] = name
    obj["spec"]["replicas"] = 1
    obj["spec"]["selector"]["matchLabels"] = {"app": name}
    template = obj["spec"]["template"]
    template["metadata"]["labels"] = {"app": name}
    server = template["spec"]["containers"][0]
    server["ports"][0]["containerPort"] = port
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        server[kind]["grpc"]["port"] = probe_port
    server["startupProbe"].update(periodSeconds=1, failureThreshold=600)
    server["readinessProbe"].update(periodSeconds=1, failureThreshold=1)
    server.update(container)
    return obj


def say_hello(address: str) -> demo_pb2.HelloReply:
    with grpc.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        return demo_pb2_grpc.MyServiceStub(channel).SayHello(demo_pb2.HelloRequest(), timeout=10)


def refused(address: str) -> bool:
    try:
        say_hello(address)
    except grpc.RpcError as error:
        return error.code() == grpc.StatusCode.UNAVAILABLE
    return False


def test_args_set_the_port_and_the_pod_becomes_ready_listening_there(lab):
    lab.apply(deployment("by-args", 9191, 9191, args=["--port", "9191"]))
    (pod,) = lab.wait_ready("by-args", timeout=60)
    reply = say_hello(f"{pod.ip}:9191")
    assert (reply.served_by.pod_name, reply.served_by.pod_ip) == (pod.name, pod.ip)
    assert refused(f"{pod.ip}:50051")  # the default port is not open: the flag moved it
    assert lab.local_address(pod.name) == f"{pod.ip}:9191"


def test_env_grpc_port_sets_the_port_and_the_pod_becomes_ready(lab):
    env = [*BASE_DEPLOYMENT["spec"]["template"]["spec"]["containers"][0]["env"]]
    env.append({"name": "GRPC_PORT", "value": "9191"})
    lab.apply(deployment("by-env", 9191, 9191, env=env))
    (pod,) = lab.wait_ready("by-env", timeout=60)
    assert say_hello(f"{pod.ip}:9191").served_by.pod_name == pod.name
    assert refused(f"{pod.ip}:50051")


def test_a_probe_on_another_port_than_the_server_never_turns_ready_and_is_named(lab):
    # The env moves the server to 9191; the probes still ask 9090 (where /metrics answers
    # HTTP/1, not gRPC). On kind this pod never turns Ready either.
    env = [{"name": "GRPC_PORT", "value": "9191"}]
    lab.apply(deployment("probe-elsewhere", 9191, 9090, env=env))
    with pytest.raises(TimeoutError) as caught:
        lab.wait_ready("probe-elsewhere", timeout=8)
    report = str(caught.value)
    assert "startup probe (grpc port 9090) failed" in report, report
    assert "9090" in report.split("failed", 1)[1], report  # the last failure, with its address
    (pod,) = lab.pods({"app": "probe-elsewhere"})
    assert not pod.ready
    assert say_hello(f"{pod.ip}:9191").served_by.pod_name == pod.name  # it runs, unready


def test_logs_are_on_the_interface_and_name_unknown_pods(lab):
    lab.apply(deployment("with-logs", 50051, 50051))
    (pod,) = lab.wait_ready("with-logs", timeout=60)
    assert f"grpclab.demo.server ready pod={pod.name} ip={pod.ip} port=50051" in lab.logs(pod.name)
    assert len(lab.logs(pod.name, tail=1).splitlines()) == 1
    with pytest.raises(KeyError, match="no-such-pod"):
        lab.logs("no-such-pod")


def test_a_numeric_target_port_needs_no_container_port(lab):
    # Kubernetes forwards a numeric targetPort whether or not a containerPort declares it.
    obj = deployment("undeclared", 50051, 50051)
    obj["spec"]["template"]["spec"]["containers"][0].pop("ports")
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "undeclared", "namespace": "production"},
        "spec": {"selector": {"app": "undeclared"}, "ports": [{"port": 80, "targetPort": 50051}]},
    }
    lab.apply([obj, service])
    (pod,) = lab.wait_ready("undeclared", timeout=60)
    assert say_hello(lab.target("undeclared", port=80, via="clusterip")).served_by.pod_name == (
        pod.name
    )


def test_every_data_plane_resolves_target_ports_the_same_way():
    # kube-proxy, the mesh, the ingress and gateway front ends all ask EndpointAddress.
    from grpclab.cluster.sandbox.addons import EndpointAddress

    pod = EndpointAddress("p", "127.42.1.10", {"grpc": 9191, "9191": 9191})
    assert pod.target_port({"port": 80, "targetPort": "grpc"}) == 9191
    assert pod.target_port({"port": 80, "targetPort": 50051}) == 50051  # undeclared is fine
    assert pod.target_port({"port": 80, "targetPort": "50051"}) == 50051
    assert pod.target_port({"port": 8080}) == 8080  # no targetPort: the port itself
    assert pod.target_port({"port": 80, "targetPort": "metrics"}) is None  # name not declared
