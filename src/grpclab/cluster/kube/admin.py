"""The demo server's Admin API, reached by exec'ing a few lines of Python in its pod.

Fault knobs and crashes go this way (the pod IP is not reachable from this machine); the
server's container is found among a mesh's sidecars.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from grpclab.cluster.kube.errors import KubeError

GRPC_PORT = 50051
FAULT_FIELDS = ("added_latency_ms", "error_rate", "error_code", "not_serving")
# Sidecars a mesh injects next to the demo server; exec goes to the server's container.
PROXY_CONTAINERS = frozenset({"istio-proxy", "linkerd-proxy", "istio-init", "linkerd-init"})


# Runs inside the target pod with the image's own grpclab: argv is [address, Admin method,
# request JSON]; prints the reply as JSON.
ADMIN_SCRIPT = """\
import json, sys
import grpc
from google.protobuf.json_format import MessageToDict
from grpclab.demo._generated import admin_pb2, admin_pb2_grpc
method = admin_pb2.DESCRIPTOR.services_by_name["Admin"].methods_by_name[sys.argv[2]]
request = getattr(admin_pb2, method.input_type.name)(**json.loads(sys.argv[3]))
with grpc.insecure_channel(sys.argv[1]) as channel:
    reply = getattr(admin_pb2_grpc.AdminStub(channel), sys.argv[2])(request, timeout=5)
print(json.dumps(MessageToDict(reply, preserving_proto_field_name=True,
                               always_print_fields_with_no_presence=True)))
"""


def fault_exec_command(address: str, fault: Mapping[str, Any], python: str = "python") -> list[str]:
    """argv that sets the fault knobs of the server at `address` and prints them as JSON."""
    unknown = sorted(set(fault) - set(FAULT_FIELDS))
    if unknown:
        raise ValueError(
            f"set_fault: unknown fault field(s) {', '.join(unknown)}; "
            f"known: {', '.join(FAULT_FIELDS)}"
        )
    return [python, "-c", ADMIN_SCRIPT, address, "SetFault", json.dumps(dict(fault))]


def crash_exec_command(address: str, python: str = "python") -> list[str]:
    """argv that makes the server at `address` exit at once, as a crash (see Admin.Crash).

    A SIGKILL from inside the pod cannot do it: the server is the container's PID 1, and
    the kernel drops signals that a namespace's init process has no handler for.
    """
    return [python, "-c", ADMIN_SCRIPT, address, "Crash", "{}"]


def server_address(pod: Any) -> str:
    """pod IP and gRPC port of the demo server in a V1Pod, where its flags and env say."""
    from kubernetes.client import ApiClient

    from grpclab.cluster.containers import listening_ports

    container = ApiClient().sanitize_for_serialization(server_containers(pod)[0])
    ports = listening_ports(container) or {"grpc": GRPC_PORT}
    # The server listens on every interface of its pod; meshes leave pod-local traffic
    # alone, so this reaches the server directly.
    return f"{pod.status.pod_ip}:{ports['grpc']}"


def server_containers(pod: Any) -> list[Any]:
    return [c for c in pod.spec.containers if c.name not in PROXY_CONTAINERS]


def crashed_since(before: Any, after: Any) -> bool:
    """Whether the server container of a V1Pod `after` restarted or died since `before`."""

    def server_statuses(pod: Any) -> dict[str, Any]:
        names = {c.name for c in server_containers(pod)}
        items = (pod.status.container_statuses if pod.status else None) or []
        return {s.name: s for s in items if s.name in names}

    if after.metadata.uid != before.metadata.uid:
        return True  # a new pod of the same name (a StatefulSet's) replaced it
    old = server_statuses(before)
    for name, status in server_statuses(after).items():
        if (status.restart_count or 0) > (old[name].restart_count or 0 if name in old else 0):
            return True
        if status.state and (status.state.terminated or status.state.waiting):
            return True
    return False


def exec_in_pod(core: Any, pod: str, container: str, command: list[str], namespace: str) -> str:
    """stdout of `command` run in one container of a pod; KubeError with stderr on failure."""
    from kubernetes.stream import stream

    session = stream(
        core.connect_get_namespaced_pod_exec,
        pod,
        namespace,
        command=command,
        container=container,
        stderr=True,
        stdin=False,
        stdout=True,
        tty=False,
        _preload_content=False,
    )
    try:
        session.run_forever(timeout=30)
        out, err, code = session.read_stdout(), session.read_stderr(), session.returncode
    finally:
        session.close()
    if code != 0:
        raise KubeError(
            f"exec {' '.join(command[:2])} in {namespace}/{pod} ({container}) failed "
            f"(exit {code}): {err.strip()}"
        )
    return out
