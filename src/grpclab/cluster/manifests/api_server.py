"""What kube-apiserver refuses beyond the JSON schema: port numbers, port names, node ports,
and a sleep hook longer than the grace period."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from grpclab.cluster.manifests.errors import Problem, entries

# An IANA service name, as a named port must be (the sandbox checks container ports with it too).
PORT_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")

# Where workload kinds keep their pod spec; the API server validates every one of them.
_POD_SPEC_PATHS = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}
# kube-apiserver's default --service-node-port-range.
NODE_PORT_RANGE = (30000, 32767)


def problems(obj: Mapping[str, Any]) -> Iterator[Problem]:
    """Port rules that kube-apiserver enforces and the JSON schema cannot express.

    From its validation (pkg/apis/core/validation): every port is 1-65535, a named port
    is an IANA service name, and a nodePort lies in the node port range; and a preStop or
    postStart sleep fits in the grace period.
    """
    if obj.get("apiVersion") == "v1" and obj.get("kind") == "Service":
        yield from _service_port_rules(obj.get("spec") or {})
        return
    path = _POD_SPEC_PATHS.get(str(obj.get("kind")))
    if path is None or "." in obj.get("apiVersion", "").split("/")[0]:
        return
    pod: Any = obj
    for key in path:
        pod = (pod or {}).get(key) if isinstance(pod, Mapping) else None
    grace = (pod or {}).get("terminationGracePeriodSeconds", 30)
    for group in ("initContainers", "containers"):
        for index, container in enumerate(entries((pod or {}).get(group))):
            yield from _container_port_rules(container, (*path, group, index))
            yield from _sleep_action_rules(container, grace, (*path, group, index))


def _sleep_action_rules(
    container: Mapping[str, Any], grace: Any, path: tuple[Any, ...]
) -> Iterator[Problem]:
    """validateSleepAction (pkg/apis/core/validation): 0 < seconds <= the grace period, as
    on the Kubernetes of cluster/kind.yaml (1.31); 1.33 and later also take 0 (KEP-4818)."""
    for hook in ("preStop", "postStart"):
        sleep = ((container.get("lifecycle") or {}).get(hook) or {}).get("sleep")
        seconds = (sleep or {}).get("seconds")
        if isinstance(seconds, int) and isinstance(grace, int) and not 0 < seconds <= grace:
            yield Problem(
                (*path, "lifecycle", hook, "sleep", "seconds"),
                f"Invalid value: {seconds}: must be greater than 0 and less than "
                f"terminationGracePeriodSeconds ({grace})",
                "Kubernetes refuses this too: the hook counts against the grace period",
            )


def _port_number_problem(value: Any, where: tuple[Any, ...]) -> Problem | None:
    if isinstance(value, int) and not 1 <= value <= 65535:
        return Problem(where, f"Invalid value: {value}: must be between 1 and 65535, inclusive")
    return None


def _port_name_problem(value: Any, where: tuple[Any, ...]) -> Problem | None:
    if isinstance(value, str) and not (
        len(value) <= 15 and PORT_NAME.fullmatch(value) and re.search("[a-z]", value)
    ):
        return Problem(
            where,
            f"Invalid value: {value!r}: a port is a number or an IANA service name",
            "a name has at most 15 characters: lowercase letters, digits and '-', with at "
            "least one letter",
        )
    return None


def _container_port_rules(container: Mapping[str, Any], path: tuple[Any, ...]) -> Iterator[Problem]:
    for index, port in enumerate(entries(container.get("ports"))):
        for key in ("containerPort", "hostPort"):
            if key in port:
                problem = _port_number_problem(port[key], (*path, "ports", index, key))
                if problem:
                    yield problem
    for probe_key in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = container.get(probe_key) or {}
        for handler in ("grpc", "tcpSocket", "httpGet"):
            if "port" in (probe.get(handler) or {}):
                where = (*path, probe_key, handler, "port")
                value = probe[handler]["port"]
                problem = _port_number_problem(value, where) or _port_name_problem(value, where)
                if problem:
                    yield problem


def _service_port_rules(spec: Mapping[str, Any]) -> Iterator[Problem]:
    service_type = spec.get("type") or "ClusterIP"
    for index, port in enumerate(entries(spec.get("ports"))):
        where = ("spec", "ports", index)
        problem = _port_number_problem(port.get("port"), (*where, "port"))
        # targetPort 0 (or "") is no mistake: the API server defaults it to `port`.
        target = port.get("targetPort")
        problem = (
            problem
            or _port_number_problem(target, (*where, "targetPort"))
            or (_port_name_problem(target, (*where, "targetPort")) if target != "" else None)
        )
        if problem:
            yield problem
        node_port = port.get("nodePort")
        if not node_port:
            continue  # 0 or unset: the API server picks one for NodePort and LoadBalancer
        if service_type in ("ClusterIP", "ExternalName"):
            yield Problem(
                (*where, "nodePort"),
                f"Forbidden: may not be used when `type` is '{service_type}'",
                "nodePort needs type NodePort or LoadBalancer",
            )
        elif not NODE_PORT_RANGE[0] <= node_port <= NODE_PORT_RANGE[1]:
            low, high = NODE_PORT_RANGE
            yield Problem(
                (*where, "nodePort"),
                f"Invalid value: {node_port}: provided port is not in the valid range. "
                f"The range of valid ports is {low}-{high}",
                "or leave nodePort out, and Kubernetes picks a free one",
            )
