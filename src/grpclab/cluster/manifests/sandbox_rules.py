"""What only the sandbox refuses: kinds, fields and values it cannot run as Kubernetes would.

Built-in kinds are checked here; custom resources' checks (cluster/crds/) join on first need.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from grpclab.cluster.manifests.api_server import PORT_NAME
from grpclab.cluster.manifests.errors import Checker, Problem, entries, refusal

# The sandbox runs only grpclab's demo server, whatever tag is asked for. These repositories
# name it: our own image, its flat spelling, and the guide's `<registry>/grpc-server`.
DEMO_SERVER_REPOSITORIES = ("grpclab/demo-server", "grpclab-demo-server", "grpc-server")

# Each sandbox pod is a real process; on a 2-core laptop more than this only measures the
# laptop, not the load balancer.
SANDBOX_MAX_REPLICAS = 20

# The Downward API fields the sandbox fills in for a pod.
SANDBOX_FIELD_REFS = ("metadata.name", "metadata.namespace", "status.podIP")

# The trafficDistribution values the sandbox's kube-proxy acts on (cluster/sandbox/topology.py).
# Kubernetes 1.31, whose schema grpclab checks against, has only PreferClose; 1.33 adds
# PreferSameZone and PreferSameNode (KEP-3015).
TRAFFIC_DISTRIBUTIONS = ("PreferClose",)
# Topology Aware Routing: hints the EndpointSlice controller spreads by each zone's CPU, which
# the sandbox (no nodes, no CPUs per zone) cannot compute. trafficDistribution supersedes it.
TOPOLOGY_ANNOTATIONS = (
    "service.kubernetes.io/topology-mode",
    "service.kubernetes.io/topology-aware-hints",
)


def check_sandbox_support(objects: Sequence[Mapping[str, Any]], source_label: str) -> None:
    """Raise ManifestError if the sandbox cannot run one of `objects` (from `load_objects`).
    Objects that load_objects returned name their own file; plain dicts get `source_label`."""
    if any((obj.get("apiVersion"), obj.get("kind")) not in SANDBOX_KINDS for obj in objects):
        _register_custom_resources()
    for index, obj in enumerate(objects):
        checker = SANDBOX_KINDS.get((obj.get("apiVersion"), obj.get("kind")))
        if checker is None:
            supported = ", ".join(kind for _, kind in SANDBOX_KINDS)
            problem: Problem | None = Problem(
                ("kind",),
                f"the sandbox backend does not support kind {obj.get('kind')} yet; "
                f"it supports {supported}",
                "use the kind backend (GRPCLAB_BACKEND=kind) for everything else",
            )
        else:
            problem = next(checker(obj), None)
        if problem is not None:
            raise refusal(obj, source_label, index, problem.reason, problem.field, problem.hint)


_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(rf"{_DNS_LABEL.pattern}(\.{_DNS_LABEL.pattern})*")


def _check_name(obj: Mapping[str, Any], pattern: re.Pattern[str], limit: int) -> Iterator[Problem]:
    # Kubernetes checks these on the server; the sandbox turns names into DNS names and pod
    # names, so it checks them the same way.
    name = obj["metadata"]["name"]
    if len(name) > limit or not pattern.fullmatch(name):
        first = (
            "a lowercase letter" if pattern is _DNS_1035_LABEL else "a lowercase letter or digit"
        )
        yield Problem(
            ("metadata", "name"),
            f"{name!r} is not a valid {obj['kind']} name",
            f"at most {limit} characters: lowercase letters, digits and '-', starting with "
            f"{first} and ending with a letter or digit",
        )


def _check_namespace(obj: Mapping[str, Any]) -> Iterator[Problem]:
    yield from _check_name(obj, _DNS_LABEL, 63)
    yield from _check_ambient_labels(obj)


def _check_ambient_labels(obj: Mapping[str, Any]) -> Iterator[Problem]:
    # Istio ambient mode's enrollment labels: only the rules module knows which it emulates.
    labels = (obj.get("metadata") or {}).get("labels") or {}
    if not any(key.startswith("istio.io/use-waypoint") for key in labels):
        return
    from grpclab.cluster.crds.ambient import enrollment_problem

    found = enrollment_problem(obj)
    if found is not None:
        label, reason = found
        yield Problem(
            ("metadata", "labels", label), reason, "use the kind backend for cross-namespace"
        )


def _check_service(obj: Mapping[str, Any]) -> Iterator[Problem]:
    yield from _check_name(obj, _DNS_1035_LABEL, 63)
    yield from _check_ambient_labels(obj)
    spec = obj.get("spec") or {}
    service_type = spec.get("type") or "ClusterIP"
    if service_type != "ClusterIP":
        yield Problem(
            ("spec", "type"),
            f"the sandbox backend supports only type ClusterIP, not {service_type}",
            "the sandbox has no nodes or cloud load balancer; reach Services through "
            "cluster.target(), or use the kind backend",
        )
    headless = spec.get("clusterIP") == "None"
    if spec.get("clusterIP") not in (None, "", "None"):
        yield Problem(
            ("spec", "clusterIP"),
            "the sandbox assigns cluster IPs from its own loopback block; "
            f"remove clusterIP: {spec['clusterIP']}",
            "or set clusterIP: None for a headless Service",
        )
    cluster_ips = spec.get("clusterIPs")
    if cluster_ips and cluster_ips != ["None"] and cluster_ips != [spec.get("clusterIP")]:
        yield Problem(
            ("spec", "clusterIPs"),
            "the sandbox assigns cluster IPs from its own loopback block; remove clusterIPs",
        )
    if spec.get("sessionAffinity") == "ClientIP":
        yield Problem(
            ("spec", "sessionAffinity"),
            "the sandbox backend does not support sessionAffinity: ClientIP yet",
            "every client in the sandbox is on 127.0.0.1, so it would pin all of them to one pod",
        )
    if spec.get("externalTrafficPolicy"):
        # Kubernetes itself refuses this field on a ClusterIP Service.
        yield Problem(
            ("spec", "externalTrafficPolicy"),
            "externalTrafficPolicy applies only to NodePort and LoadBalancer Services",
        )
    distribution = spec.get("trafficDistribution")
    if distribution is not None and distribution not in TRAFFIC_DISTRIBUTIONS:
        yield Problem(
            ("spec", "trafficDistribution"),
            f"the sandbox backend supports trafficDistribution PreferClose, not {distribution!r}",
            "Kubernetes 1.31 has only PreferClose; PreferSameZone (its new name) and "
            "PreferSameNode came in 1.33",
        )
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    for key in TOPOLOGY_ANNOTATIONS:
        if key in annotations:
            yield Problem(
                ("metadata", "annotations", key),
                "the sandbox backend does not support Topology Aware Routing: its hints "
                "follow each zone's allocatable CPU, and the sandbox has no nodes",
                "set spec.trafficDistribution: PreferClose instead (it supersedes the "
                "annotation), or use the kind backend",
            )
    # internalTrafficPolicy: Local is accepted: the sandbox is one node, so every endpoint is
    # node-local and the result is the same as with Cluster (as on a one-node kind cluster).
    for key in ("externalIPs", "loadBalancerIP", "externalName", "loadBalancerSourceRanges"):
        if spec.get(key):
            yield Problem(("spec", key), f"the sandbox backend does not support {key}")
    if not spec.get("selector"):
        yield Problem(
            ("spec", "selector"),
            "the sandbox backend needs a selector; Services without one need hand-made "
            "EndpointSlices, which it does not support yet",
        )
    ports = entries(spec.get("ports"))
    if not ports and not headless:
        yield Problem(("spec", "ports"), "a ClusterIP Service needs at least one port")
    names: dict[str, int] = {}
    for index, port in enumerate(ports):
        where = ("spec", "ports", index)
        name = port.get("name")
        if len(ports) > 1 and not name:
            yield Problem(
                (*where, "name"),
                "every port needs a name when a Service has more than one",
                "Kubernetes refuses this too",
            )
        if name and names.setdefault(name, index) != index:
            yield Problem((*where, "name"), f"port name {name!r} is used twice")
        if (port.get("protocol") or "TCP") != "TCP":
            yield Problem(
                (*where, "protocol"),
                f"the sandbox backend carries only TCP, not {port['protocol']}",
            )


def _check_deployment(obj: Mapping[str, Any]) -> Iterator[Problem]:
    yield from _check_name(obj, _DNS_SUBDOMAIN, 253)
    spec = obj.get("spec") or {}
    replicas = spec.get("replicas")
    if replicas is not None and replicas < 0:
        yield Problem(("spec", "replicas"), f"replicas must be 0 or more, not {replicas}")
    if replicas is not None and replicas > SANDBOX_MAX_REPLICAS:
        yield Problem(
            ("spec", "replicas"),
            f"the sandbox runs at most {SANDBOX_MAX_REPLICAS} replicas, not {replicas}",
            "each sandbox pod is a real process, and a 2-core laptop shows little more than "
            f"{SANDBOX_MAX_REPLICAS}; use the kind backend for more",
        )
    template = spec.get("template") or {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    yield from _check_selector(spec.get("selector") or {}, labels)
    if any(key.startswith("istio.io/use-waypoint") for key in labels):
        from grpclab.cluster.crds.ambient import USE_WAYPOINT_LABEL, pod_waypoint_problem

        reason = pod_waypoint_problem(labels)
        if reason is not None:
            yield Problem(
                ("spec", "template", "metadata", "labels", USE_WAYPOINT_LABEL),
                reason,
                "use the kind backend for a workload waypoint",
            )
    pod = template.get("spec") or {}
    pod_path = ("spec", "template", "spec")
    containers = entries(pod.get("containers"))
    if len(containers) != 1:
        yield Problem(
            (*pod_path, "containers"),
            f"the sandbox backend runs exactly one container per pod, not {len(containers)}",
            "each sandbox pod is one demo-server process",
        )
    for key in ("initContainers", "ephemeralContainers", "volumes"):
        if pod.get(key):
            yield Problem((*pod_path, key), f"the sandbox backend does not support {key} yet")
    for index, container in enumerate(containers[:1]):
        yield from _check_container(container, (*pod_path, "containers", index))


def _check_selector(selector: Mapping[str, Any], labels: Mapping[str, Any]) -> Iterator[Problem]:
    match_labels = selector.get("matchLabels") or {}
    expressions = entries(selector.get("matchExpressions"))
    if not match_labels and not expressions:
        yield Problem(("spec", "selector"), "empty selector is invalid for deployment")
        return
    mismatched = [key for key, value in match_labels.items() if labels.get(key) != value]
    for expression in expressions:
        key, operator = expression.get("key"), expression.get("operator")
        values = expression.get("values") or []
        matches = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }.get(operator, False)
        if not matches:
            mismatched.append(key)
    if mismatched:
        yield Problem(
            ("spec", "selector"),
            "selector does not match template labels",
            f"spec.template.metadata.labels must satisfy the selector on {', '.join(mismatched)}; "
            "Kubernetes refuses this too",
        )


def _image_repository(image: str) -> str:
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


def _check_container(container: Mapping[str, Any], path: tuple[Any, ...]) -> Iterator[Problem]:
    from grpclab.cluster.containers import (
        IMAGE_ENTRYPOINT,
        UnsupportedHook,
        container_argv,
        prestop_sleep_seconds,
        server_flags,
    )

    command = container.get("command")
    if command and server_flags(container_argv(command, container.get("args"))) is None:
        yield Problem(
            (*path, "command"),
            f"the sandbox runs only the demo server, not {' '.join(map(str, command))!r}",
            "drop command: the image's ENTRYPOINT is `" + " ".join(IMAGE_ENTRYPOINT) + "`, "
            "and args are its flags; or start the command with it",
        )
    image = container.get("image") or ""
    repository = _image_repository(image)
    if not any(repository == r or repository.endswith("/" + r) for r in DEMO_SERVER_REPOSITORIES):
        yield Problem(
            (*path, "image"),
            f"the sandbox cannot pull images; it runs only the demo server, not {image!r}",
            "use grpclab/demo-server:<tag> (it runs `python -m grpclab.demo.server`); "
            "the kind backend runs any image",
        )
    for key in ("volumeMounts", "volumeDevices", "envFrom"):
        if container.get(key):
            yield Problem((*path, key), f"the sandbox backend does not support {key} yet")
    try:
        prestop_sleep_seconds(container)
    except UnsupportedHook as refused:
        yield Problem((*path, *refused.field.split(".")), refused.reason, refused.hint or None)
    ports = entries(container.get("ports"))
    port_names: dict[str, int] = {}
    for index, port in enumerate(ports):
        name = port.get("name")
        if name is None:
            continue
        if len(name) > 15 or not PORT_NAME.fullmatch(name) or not re.search("[a-z]", name):
            yield Problem(
                (*path, "ports", index, "name"),
                f"{name!r} is not a valid port name",
                "at most 15 characters: lowercase letters, digits and '-', with at least one "
                "letter; Kubernetes refuses this too",
            )
        if port_names.setdefault(name, index) != index:
            yield Problem((*path, "ports", index, "name"), f"port name {name!r} is used twice")
    for index, port in enumerate(ports):
        if (port.get("protocol") or "TCP") != "TCP":
            yield Problem(
                (*path, "ports", index, "protocol"),
                f"the sandbox backend carries only TCP, not {port['protocol']}",
            )
    for probe_key in ("readinessProbe", "livenessProbe", "startupProbe"):
        probe = container.get(probe_key)
        if probe:
            yield from _check_probe(probe, (*path, probe_key), port_names)
    for index, variable in enumerate(entries(container.get("env"))):
        yield from _check_env(variable, (*path, "env", index))


def _check_probe(
    probe: Mapping[str, Any], path: tuple[Any, ...], port_names: Mapping[str, int]
) -> Iterator[Problem]:
    for handler in ("httpGet", "exec"):
        if handler in probe:
            yield Problem(
                (*path, handler),
                f"the sandbox backend supports grpc and tcpSocket probes, not {handler}",
                "the demo server serves grpc.health.v1; use `grpc: {port: 50051}`",
            )
    port = (probe.get("tcpSocket") or {}).get("port")
    if isinstance(port, str) and port not in port_names:
        known = ", ".join(port_names) or "none"
        yield Problem(
            (*path, "tcpSocket", "port"),
            f"no containerPort is named {port!r} (named ports: {known})",
            "on Kubernetes this probe would fail forever",
        )


def _check_env(variable: Mapping[str, Any], path: tuple[Any, ...]) -> Iterator[Problem]:
    source = variable.get("valueFrom")
    if not source:
        return
    for key in source:
        if key != "fieldRef":
            yield Problem(
                (*path, "valueFrom", key),
                f"the sandbox backend does not support valueFrom.{key} yet",
                "it fills in fieldRef for " + ", ".join(SANDBOX_FIELD_REFS),
            )
    field_path = (source.get("fieldRef") or {}).get("fieldPath")
    if "fieldRef" in source and field_path not in SANDBOX_FIELD_REFS:
        yield Problem(
            (*path, "valueFrom", "fieldRef", "fieldPath"),
            f"the sandbox backend cannot fill in {field_path}",
            "it fills in " + ", ".join(SANDBOX_FIELD_REFS),
        )


# What the sandbox backend can run, one checker per (apiVersion, kind): these three, then
# Istio, Ingress and TLS Secrets, Gateway API, Linkerd and Traefik kinds from cluster/crds/,
# added when an apply first has another kind (those modules import the xDS translators).
SANDBOX_KINDS: dict[tuple[str, str], Checker] = {
    ("v1", "Namespace"): _check_namespace,
    ("apps/v1", "Deployment"): _check_deployment,
    ("v1", "Service"): _check_service,
}
_registration = threading.Lock()
_registered = False


def _register_custom_resources() -> None:
    global _registered
    with _registration:
        if _registered:
            return
        from grpclab.cluster.crds import custom_kinds
        from grpclab.cluster.crds.shapes import checker

        for key, (_, check, error_type) in custom_kinds().items():
            SANDBOX_KINDS[key] = checker(check, error_type, Problem)
        _registered = True
