"""Linkerd in the sandbox: the meshed client's proxy, emulated with Envoy.

Linkerd balances in the *client's* proxy: a pod in a namespace annotated
`linkerd.io/inject: enabled` gets linkerd2-proxy, which sends each request to one of the
Service's pods. The sandbox's load generator plays that client, so `via="linkerd"` hands it
the address of an Envoy that acts as its proxy would (grpclab.xds.linkerd says how, and
where it differs). On kind it is real Linkerd.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from grpclab.cluster.sandbox.addons import ClusterView
from grpclab.cluster.sandbox.frontends import EnvoyFrontend, service_backend
from grpclab.xds.gateway import GATEWAY_API_VERSION
from grpclab.xds.linkerd import (
    INJECT_ANNOTATION,
    PROFILE_API_VERSION,
    MeshedPort,
    format_mapping,
    mapping,
    profile_name,
    proxy_resources,
)

if TYPE_CHECKING:
    from grpclab.cluster.sandbox import Sandbox

LABEL = (
    "Linkerd (EMULATED in the sandbox: the client's linkerd2-proxy is played by Envoy, "
    "LEAST_REQUEST with choice_count 2; on kind it is real Linkerd)"
)


def injected(obj: Mapping[str, Any] | None) -> bool:
    annotations = ((obj or {}).get("metadata") or {}).get("annotations") or {}
    return annotations.get(INJECT_ANNOTATION) == "enabled"


class LinkerdEmulation:
    """Outbound listeners, one address per meshed Service, with Linkerd-like balancing."""

    name = "linkerd"
    via = "linkerd"

    def __init__(self, sandbox: Sandbox) -> None:
        self._sandbox = sandbox
        self._lock = threading.Lock()
        self.envoy = EnvoyFrontend(sandbox, "linkerd-proxy")
        self._ips: dict[tuple[str, str], str] = {}
        self._view: ClusterView | None = None

    def sync(self, view: ClusterView) -> None:
        with self._lock:
            ports = []
            for service in view.of_kind("Service"):
                namespace, name = service["metadata"]["namespace"], service["metadata"]["name"]
                if not self._meshed(view, namespace) or service["spec"].get("clusterIP") == "None":
                    continue
                if (namespace, name) not in self._ips:
                    self._ips[(namespace, name)] = self._sandbox.block.take_pod_ip()
                for port in service["spec"].get("ports") or []:
                    backend = service_backend(view, namespace, name, port["port"])
                    if backend is not None:
                        ports.append(MeshedPort(backend, self._ips[(namespace, name)]))

            def resolve(namespace: str, service: str, port: int | str):
                return service_backend(view, namespace, service, port)

            services = {k[1:]: obj for k, obj in view.objects.items() if k[0] == "Service"}
            resources = proxy_resources(
                ports,
                services,
                self._of_version(view, "ServiceProfile", PROFILE_API_VERSION),
                self._of_version(view, "GRPCRoute", GATEWAY_API_VERSION),
                resolve,
            )
            self.envoy.push(resources)
            self._view = view

    def target(self, service: str, port: int, namespace: str, via: str) -> str | None:
        if via != self.via:
            return None
        view = self._view
        if view is None or not self._meshed(view, namespace):
            raise ValueError(
                f"namespace {namespace} is not meshed: Linkerd balances in the client's proxy, "
                f"so annotate the namespace {INJECT_ANNOTATION}: enabled "
                "(cluster/manifests/linkerd/namespace.yaml)"
            )
        if (namespace, service) not in self._ips:
            raise ValueError(
                f"Service {namespace}/{service} is headless: Linkerd's proxy balances "
                "Services with a cluster IP"
            )
        return f"{self._ips[(namespace, service)]}:{port}"

    def stop(self) -> None:
        self.envoy.stop()

    def describe(self) -> str:
        """What is emulated, which pods are injected, and the Linkerd -> Envoy mapping."""
        view = self._view
        lines = [LABEL]
        if view is None:
            return "\n".join(lines)
        profiles = self._of_version(view, "ServiceProfile", PROFILE_API_VERSION)
        routes = self._of_version(view, "GRPCRoute", GATEWAY_API_VERSION)
        for namespace, service in sorted(self._ips):
            fqdn = profile_name(service, namespace)
            profile = next(
                (
                    p
                    for p in profiles
                    if (p["metadata"]["namespace"], p["metadata"]["name"]) == (namespace, fqdn)
                ),
                None,
            )
            attached = [] if profile is not None else self._routes_for(routes, namespace, service)
            pods = [
                d
                for d in view.of_kind("Deployment", namespace)
                if injected(d["spec"]["template"]) or self._meshed(view, namespace)
            ]
            lines.append(
                f"\nService {namespace}/{service}: client proxy at "
                f"{self._ips[(namespace, service)]}; "
                f"ServiceProfile: {'yes' if profile else 'no'}; "
                f"GRPCRoutes with retry annotations: {len(attached)}; "
                f"injected Deployments in the namespace: {len(pods)}"
            )
            lines.append(format_mapping(mapping(profile, attached)))
        return "\n".join(lines)

    @staticmethod
    def _routes_for(routes, namespace: str, service: str) -> list[Mapping[str, Any]]:
        return [
            r
            for r in routes
            if any(
                ref.get("kind") == "Service"
                and ref["name"] == service
                and (ref.get("namespace") or r["metadata"]["namespace"]) == namespace
                for ref in r["spec"].get("parentRefs") or []
            )
        ]

    @staticmethod
    def _meshed(view: ClusterView, namespace: str) -> bool:
        return injected(view.objects.get(("Namespace", "", namespace)))

    @staticmethod
    def _of_version(view: ClusterView, kind: str, api_version: str) -> list[Mapping[str, Any]]:
        return [obj for obj in view.of_kind(kind) if obj.get("apiVersion") == api_version]
