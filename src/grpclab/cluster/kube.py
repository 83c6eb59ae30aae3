"""The Cluster interface on real Kubernetes: a kind cluster, or any kubeconfig context.

Objects go in by server-side apply through the official client. Load runs as a Job
from the demo image and its JSON lines are read back from the Job's log; fault knobs
are set by exec'ing a few lines of Python in the target pod. Only what the notebook's
own process must reach (one pod for a health Watch, Prometheus) goes through a
`kubectl port-forward` that the cluster object owns. Pure functions at the top build
everything that is sent; `KubeCluster` sends it.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from grpclab.cluster import DEFAULT_NAMESPACE, Cluster, ManifestSource, Pod
from grpclab.cluster.manifests import (
    ManifestError,
    kubectl_ref,
    load_objects,
    override_namespace,
    source_label,
)
from grpclab.load import PROXY_COUNTERS, LoadResult, LoadSpec, parse_json_lines
from grpclab.paths import REPO

DEFAULT_IMAGE = "grpclab/demo-server:0.1.0"  # built and loaded into kind by cluster/kind-up.sh
KIND_CLUSTER = "grpclab"
KIND_CONTEXT = f"kind-{KIND_CLUSTER}"
FIELD_MANAGER = "grpclab"
CLUSTER_DOMAIN = "svc.cluster.local"
GRPC_PORT = 50051
LOAD_CONTAINER = "load"
# Where the Job writes the CA bundle it was handed (tls_ca_file names a file on *this* machine).
JOB_CA_PATH = "/tmp/grpclab-ca.pem"
FAULT_FIELDS = ("added_latency_ms", "error_rate", "error_code", "not_serving")
# Sidecars a mesh injects next to the demo server; exec goes to the server's container.
PROXY_CONTAINERS = frozenset({"istio-proxy", "linkerd-proxy", "istio-init", "linkerd-init"})
IMAGE_PULL_ERRORS = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName"}
)
# Waiting reasons from which a container does not start without a change to the pod spec
# (the kubelet retries, but the same spec fails the same way).
CONTAINER_CREATE_ERRORS = frozenset(
    {"CreateContainerConfigError", "CreateContainerError", "RunContainerError", "CrashLoopBackOff"}
)
# How long a load Job may take to get its load container running (scheduling, image pulls,
# sidecar start) before the run is given up: a Job that cannot start says so in this time,
# not after the whole load timeout.
JOB_START_TIMEOUT_S = 90.0
# Pods the library itself runs next to the learner's: the load Job's and the mesh client's.
# `pods()` leaves them out, as the sandbox (where load runs in this process) has none.
LOAD_POD_LABEL = ("app.kubernetes.io/name", "grpclab-load")
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
# Lines the kube backend prints while it waits (add-on output, slow rollouts, Job starts)
# start with this, so that they are easy to tell from a cell's own output.
NOTE_PREFIX = "[kube] "
# Hints for kinds a cluster does not serve until an add-on brings their CRDs.
ADDON_FOR_GROUP = {
    "networking.istio.io": "istio",
    "security.istio.io": "istio",
    "gateway.networking.k8s.io": "gateway-api",
    "gateway.envoyproxy.io": "envoy-gateway",
    "policy.linkerd.io": "linkerd",
    "linkerd.io": "linkerd",
    "traefik.io": "traefik",
    "traefik.containo.us": "traefik",
    "monitoring.coreos.com": "prometheus",
}
# Where the add-on installers (cluster/addons/) put the Services that front the pods.
INGRESS_NGINX_SERVICE = ("ingress-nginx", "ingress-nginx-controller")
INGRESS_NGINX_CLASS = "nginx"
TRAEFIK_SERVICE = ("traefik", "traefik")
# The Traefik chart's entry points and the ports its Service gives them.
TRAEFIK_ENTRYPOINT_PORTS = {"websecure": 443, "web": 80}
ENVOY_GATEWAY_NAMESPACE = "envoy-gateway-system"
PROMETHEUS_SERVICE = ("grpclab-monitoring", "prometheus")
PROMETHEUS_PORT = 9090
# A meshed client, run just long enough to read what Istio sends clients in the namespace.
MESH_CLIENT = "grpclab-mesh-client"
ISTIO_PROXY_ADMIN = "http://127.0.0.1:15000"
FORWARD_TIMEOUT_S = 30.0
# The add-on each `via` needs, and the Deployment (namespace, name) its script waits for.
ADDON_FOR_VIA = {
    "mesh": ("istio", "istio-system", "istiod"),
    "xds": ("istio", "istio-system", "istiod"),
    "linkerd": ("linkerd", "linkerd", "linkerd-destination"),
    "ingress": ("ingress-nginx", "ingress-nginx", "ingress-nginx-controller"),
    "traefik": ("traefik", "traefik", "traefik"),
    "gateway": ("envoy-gateway", "envoy-gateway-system", "envoy-gateway"),
}


def addon_hint(addon: str) -> str:
    """The one install command every "needs an add-on" message names (the notebooks' own)."""
    return (
        f"install_addon(lab, {addon!r}) from grpclab.cluster.controllers "
        f"(it runs cluster/addons/{addon}.sh)"
    )


ADDONS = (
    "gateway-api",
    "istio",
    "linkerd",
    "ingress-nginx",
    "traefik",
    "envoy-gateway",
    "prometheus",
)


log = logging.getLogger(__name__)


class KubeError(RuntimeError):
    """The cluster refused or could not do what was asked; the message says what and where."""


def _api_exception() -> type[Exception]:
    """The kubernetes client's ApiException (imported late: the client takes seconds to load).

    The dynamic client's errors (NotFoundError, ForbiddenError, ...) are subclasses of it.
    """
    from kubernetes.client.exceptions import ApiException

    return ApiException


def _note(text: str) -> None:
    """A learner note: on stdout, so that it shows in the notebook cell as it happens."""
    print(f"{NOTE_PREFIX}{text}", flush=True)


class Waiting:
    """Says what a wait is waiting for, once it has lasted `after_s`; quiet for short waits.

    `update(state)` prints "<what>: <state> (<n> s)" when the state changes or `every_s`
    has passed since the last line; `finish(state)` prints a last line only if any was printed.
    """

    def __init__(
        self,
        what: str,
        after_s: float = 5.0,
        every_s: float = 15.0,
        say: Callable[[str], None] = _note,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what, self.after_s, self.every_s = what, after_s, every_s
        self._say, self._clock = say, clock
        self._start = clock()
        self._last_state: str | None = None
        self._last_said: float | None = None

    def elapsed(self) -> float:
        return self._clock() - self._start

    def update(self, state: str) -> None:
        now, elapsed = self._clock(), self.elapsed()
        if elapsed < self.after_s:
            self._last_state = state
            return
        changed = state != self._last_state or self._last_said is None
        if changed or now - (self._last_said or now) >= self.every_s:
            self._say(f"{self.what}: {state} ({elapsed:.0f} s)")
            self._last_said = now
        self._last_state = state

    def finish(self, state: str) -> None:
        if self._last_said is not None:
            self._say(f"{self.what}: {state} after {self.elapsed():.0f} s")


# -- pure functions: what is sent, and how replies are read ------------------------------


def resolve_namespace(namespace: str | None = None) -> str:
    """The namespace argument, else $GRPCLAB_NAMESPACE, else `production`."""
    return namespace or os.environ.get("GRPCLAB_NAMESPACE") or DEFAULT_NAMESPACE


def apply_outcome(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> str:
    """created / configured / unchanged, from the object before and after an apply."""
    if before is None:
        return "created"
    old = before.get("metadata", {}).get("resourceVersion")
    new = after.get("metadata", {}).get("resourceVersion")
    # A server-side apply that changes nothing does not write, so the version stays.
    return "unchanged" if old == new else "configured"


def pod_from_model(pod: Any) -> Pod:
    """A `Pod` from a kubernetes.client V1Pod: readiness from conditions, restarts summed."""
    status = pod.status
    conditions = (status.conditions if status else None) or []
    ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
    if pod.metadata.deletion_timestamp is not None:
        phase, ready = "Terminating", False
    else:
        phase = (status.phase if status else None) or "Pending"
    statuses = (status.container_statuses if status else None) or []
    return Pod(
        name=pod.metadata.name,
        namespace=pod.metadata.namespace,
        ip=(status.pod_ip if status else None) or "",
        ready=ready,
        phase=phase,
        restarts=sum(s.restart_count or 0 for s in statuses),
        labels=dict(pod.metadata.labels or {}),
    )


def rollout_status(deployment: Any) -> tuple[int, int, bool]:
    """(ready, desired, done) for a V1Deployment, judged as `kubectl rollout status` does."""
    spec_replicas = deployment.spec.replicas if deployment.spec.replicas is not None else 1
    status = deployment.status
    if status is None:
        return 0, spec_replicas, False
    updated = status.updated_replicas or 0
    available = status.available_replicas or 0
    total = status.replicas or 0
    observed = (status.observed_generation or 0) >= (deployment.metadata.generation or 0)
    ready = min(updated, available)
    done = observed and updated >= spec_replicas and total <= updated and available >= updated
    return ready, spec_replicas, done


def progress_deadline_exceeded(deployment: Any) -> str | None:
    """The Progressing condition's message when the rollout has given up, else None."""
    for condition in (deployment.status.conditions if deployment.status else None) or []:
        if condition.type == "Progressing" and condition.reason == "ProgressDeadlineExceeded":
            return condition.message or "progress deadline exceeded"
    return None


def _controlled_by(obj: Any, owner_uid: str | None) -> bool:
    refs = obj.metadata.owner_references or []
    return owner_uid is not None and any(ref.uid == owner_uid and ref.controller for ref in refs)


def current_replicaset(deployment: Any, replicasets: Iterable[Any]) -> Any | None:
    """The ReplicaSet of the Deployment's current revision, or None while it has none yet.

    A selector matches more than one Deployment's pods (notebook 08 runs two Deployments
    whose pods share `app: grpc-server`), and during a rollout the old ReplicaSet's pods
    match too. The Deployment controller writes the current ReplicaSet's revision into
    the Deployment's own `deployment.kubernetes.io/revision` annotation.
    """
    revision = (deployment.metadata.annotations or {}).get(REVISION_ANNOTATION)
    if revision is None:
        return None
    for replicaset in replicasets:
        if _controlled_by(replicaset, deployment.metadata.uid) and (
            (replicaset.metadata.annotations or {}).get(REVISION_ANNOTATION) == revision
        ):
            return replicaset
    return None


def replicaset_pods(replicaset: Any, pods: Iterable[Any]) -> list[Any]:
    """The pods among `pods` that `replicaset` controls."""
    return [pod for pod in pods if _controlled_by(pod, replicaset.metadata.uid)]


def is_tool_pod(labels: Mapping[str, str]) -> bool:
    """A pod grpclab runs beside the learner's (a load Job's, the mesh client)."""
    key, value = LOAD_POD_LABEL
    return labels.get(key) == value or labels.get("app") == MESH_CLIENT


@dataclasses.dataclass(frozen=True)
class JobStart:
    """Where a load Job's start stands: its running pod, a failure, or what it waits for."""

    pod: str | None = None  # the pod whose load container runs (or has run)
    failure: str | None = None  # it cannot start; the reason, in the cluster's words
    waiting: str = "no pod yet"  # what it waits for meanwhile


def job_start(job: Any, pods: Sequence[Any], image: str) -> JobStart:
    """Read a load Job and its pods: started, failed to start, or still waiting (and on what).

    Failures are the states that do not pass by waiting: the Job's Failed condition
    (deadline, backoff limit), a pod that failed before its load container ran, the demo
    image that cannot be pulled, and container-create errors (a missing Secret or ConfigMap,
    a bad command). An unschedulable pod or one whose containers are being created is
    waiting; the caller's start timeout ends that.
    """
    for condition in (job.status.conditions if job is not None and job.status else None) or []:
        if condition.type == "Failed" and condition.status == "True":
            return JobStart(failure=f"the Job failed ({condition.reason}: {condition.message})")
    waiting = "no pod yet (the Job controller has not created it)"
    for pod in pods:
        status = pod.status
        statuses = [
            *((status.init_container_statuses if status else None) or []),
            *((status.container_statuses if status else None) or []),
        ]
        for item in statuses:
            state = item.state
            if item.name == LOAD_CONTAINER and state and (state.running or state.terminated):
                return JobStart(pod=pod.metadata.name)
            reason = state.waiting.reason if state and state.waiting else None
            message = (state.waiting.message or "") if state and state.waiting else ""
            if reason in IMAGE_PULL_ERRORS and (item.name == LOAD_CONTAINER or "Never" in reason):
                # The demo image is never in a registry: kind-up.sh loads it into the nodes,
                # so a pull of it fails for good. A sidecar's image (istio/proxyv2, ...) comes
                # from a registry that may fail for a moment; the kubelet retries it, and the
                # start timeout ends the wait.
                return JobStart(
                    failure=f"container {item.name}: image {item.image or image} cannot be "
                    f"pulled ({reason}: {message}). On kind, `make kind-up` builds the demo "
                    "image and loads it into the nodes."
                )
            if reason in CONTAINER_CREATE_ERRORS:
                return JobStart(failure=f"container {item.name} cannot start ({reason}: {message})")
        phase = status.phase if status else None
        if phase == "Failed":
            why = (status.reason or "") + (f": {status.message}" if status.message else "")
            return JobStart(failure=f"pod {pod.metadata.name} failed before the load ran ({why})")
        scheduled = next(
            (c for c in (status.conditions if status else None) or [] if c.type == "PodScheduled"),
            None,
        )
        if scheduled is not None and scheduled.status == "False":
            waiting = f"pod {pod.metadata.name} unschedulable: {scheduled.message}"
        else:
            reasons = [
                f"{item.name} {item.state.waiting.reason}"
                for item in statuses
                if item.state and item.state.waiting and item.state.waiting.reason
            ]
            waiting = f"pod {pod.metadata.name} {phase or 'Pending'}" + (
                f" ({', '.join(reasons)})" if reasons else ""
            )
    return JobStart(waiting=waiting)


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


def service_port(service: Any, port: int | str) -> int:
    """The port number of a V1Service's port given by name or number; KeyError when absent."""
    ports = service.spec.ports or []
    for item in ports:
        if port == item.name or str(port) == str(item.port):
            return int(item.port)
    have = ", ".join(f"{p.name or '(unnamed)'}={p.port}" for p in ports) or "no ports"
    raise KeyError(f"service {service.metadata.name} has no port {port!r} (it has {have})")


def ready_addresses(slices: list[dict[str, Any]], service: Any, number: int) -> str:
    """`ipv4:ip:port,...`: the ready pods of one Service port, from EndpointSlices (as dicts)."""
    port_name = next(p.name or "" for p in service.spec.ports if int(p.port) == number)
    found = []
    for item in slices:
        labels = item["metadata"].get("labels") or {}
        if labels.get("kubernetes.io/service-name") != service.metadata.name:
            continue
        if item.get("addressType") != "IPv4":
            continue
        ports = [p["port"] for p in item.get("ports") or [] if (p.get("name") or "") == port_name]
        for endpoint in item.get("endpoints") or []:
            # A missing `ready` condition means ready (the EndpointSlice API's rule).
            if ports and (endpoint.get("conditions") or {}).get("ready") is not False:
                found += [f"{address}:{ports[0]}" for address in endpoint["addresses"]]
    if not found:
        meta = service.metadata
        raise ValueError(f"service {meta.namespace}/{meta.name} has no ready endpoints")
    return "ipv4:" + ",".join(sorted(set(found)))


def is_headless(service: Any) -> bool:
    return service.spec.cluster_ip == "None"


def service_target(
    service: str, namespace: str, port: int, via: Literal["dns", "clusterip"] = "dns"
) -> str:
    """The in-cluster gRPC target: `dns:///name.ns.svc.cluster.local:port` or `name...:port`.

    Both resolve through cluster DNS; "dns" says so explicitly so that a headless
    Service's pod IPs reach the client's balancer, and "clusterip" is the plain name
    that resolves to the one cluster IP, as most applications write it.
    """
    host = f"{service}.{namespace}.{CLUSTER_DOMAIN}:{port}"
    if via == "dns":
        return f"dns:///{host}"
    if via == "clusterip":
        return host
    raise ValueError(f'via must be "dns" or "clusterip", not {via!r}')


VIAS = ("dns", "clusterip", "mesh", "linkerd", "xds", "ingress", "traefik", "gateway", "addresses")


def check_via(via: str) -> str:
    """`via` itself when it is one of VIAS; ValueError naming the known ones otherwise."""
    if via not in VIAS:
        raise ValueError(f"via must be one of {', '.join(VIAS)}, not {via!r}")
    return via


class KubeTarget(str):
    """A target string that remembers which `via` made it.

    The load Job's pod must be set up for the way it reaches the Service: an Istio sidecar
    for "mesh", Istio's gRPC agent (an xDS bootstrap) for "xds", a Linkerd proxy for
    "linkerd", and no proxy at all otherwise. A plain str target gets no proxy.
    """

    via: str

    def __new__(cls, value: str, via: str) -> KubeTarget:
        made = super().__new__(cls, value)
        made.via = check_via(via)
        return made


def client_pod_metadata(via: str) -> tuple[dict[str, str], dict[str, str]]:
    """(labels, annotations) that put the load Job's pod in, or out of, a mesh for `via`.

    Every pod opts in or out explicitly: a namespace labelled for injection (notebooks 04
    and 05 label `production`) would otherwise give every client a proxy, and a "ClusterIP"
    run would silently be balanced per request by the client's sidecar.
    """
    check_via(via)
    labels = {"sidecar.istio.io/inject": "true" if via in ("mesh", "xds") else "false"}
    annotations = {"linkerd.io/inject": "enabled" if via == "linkerd" else "disabled"}
    if via in ("mesh", "xds"):
        # The client's first call must wait for the proxy (or the agent's bootstrap file),
        # and Istio keeps only a few Envoy stats unless told which others to keep.
        annotations["proxy.istio.io/config"] = json.dumps(
            {
                "holdApplicationUntilProxyStarts": True,
                "proxyStatsMatcher": {"inclusionRegexps": list(PROXY_COUNTERS.values())},
            }
        )
    if via == "xds":
        # Istio's proxyless gRPC: the agent writes an xDS bootstrap and sets
        # GRPC_XDS_BOOTSTRAP in the pod's containers; there is no Envoy in the path.
        annotations["inject.istio.io/templates"] = "grpc-agent"
    if via == "linkerd":
        # A proxy that exits with the Job's container, so the Job can complete.
        annotations["config.alpha.linkerd.io/proxy-enable-native-sidecar"] = "true"
    return labels, annotations


def _routes_to(backend_refs: Iterable[Mapping[str, Any]], service: str) -> bool:
    return any(ref.get("name") == service for ref in backend_refs)


def ingress_port(ingresses: Iterable[Mapping[str, Any]], service: str, namespace: str) -> int:
    """The ingress-nginx Service port that reaches `service`: 443 when its host has TLS."""
    for ingress in ingresses:
        spec = ingress.get("spec") or {}
        if spec.get("ingressClassName") != INGRESS_NGINX_CLASS:
            continue
        tls_hosts = {host for item in spec.get("tls") or [] for host in item.get("hosts") or []}
        for rule in spec.get("rules") or []:
            paths = (rule.get("http") or {}).get("paths") or []
            backends = [(p.get("backend") or {}).get("service") or {} for p in paths]
            if _routes_to(backends, service):
                # ssl-redirect sends a TLS host's plain-text calls away: use HTTPS for it.
                return 443 if rule.get("host") in tls_hosts else 80
    raise ValueError(
        f"no Ingress of class {INGRESS_NGINX_CLASS} in namespace {namespace} sends traffic to "
        f"Service {service} (apply one, e.g. cluster/manifests/ingress/ingress-nginx.yaml)"
    )


def traefik_port(routes: Iterable[Mapping[str, Any]], service: str, namespace: str) -> int:
    """The Traefik Service port of the entry point whose IngressRoute reaches `service`."""
    for route in routes:
        spec = route.get("spec") or {}
        if not any(_routes_to(r.get("services") or [], service) for r in spec.get("routes") or []):
            continue
        for entry_point in spec.get("entryPoints") or ["web"]:
            if entry_point in TRAEFIK_ENTRYPOINT_PORTS:
                return TRAEFIK_ENTRYPOINT_PORTS[entry_point]
        raise ValueError(
            f"IngressRoute {namespace}/{route['metadata']['name']}: spec.entryPoints "
            f"{spec.get('entryPoints')} names none that the Traefik chart serves "
            f"({', '.join(TRAEFIK_ENTRYPOINT_PORTS)})"
        )
    raise ValueError(
        f"no IngressRoute in namespace {namespace} sends traffic to Service {service} "
        "(apply one, e.g. cluster/manifests/ingress/traefik-ingressroute.yaml)"
    )


def gateway_listener(
    routes: Iterable[Mapping[str, Any]],
    gateways: Iterable[Mapping[str, Any]],
    service: str,
    namespace: str,
) -> tuple[str, int]:
    """(Gateway name, listener port) of the first route whose backendRefs reach `service`."""
    by_name = {g["metadata"]["name"]: g for g in gateways}
    for route in routes:
        spec = route.get("spec") or {}
        if not any(
            _routes_to(r.get("backendRefs") or [], service) for r in spec.get("rules") or []
        ):
            continue
        for parent in spec.get("parentRefs") or []:
            if parent.get("namespace", namespace) != namespace:
                continue  # grpclab's Gateways live in the attendee's namespace
            gateway = by_name.get(parent.get("name"))
            if gateway is None:
                continue
            listeners = gateway.get("spec", {}).get("listeners") or []
            wanted = parent.get("sectionName")
            for listener in listeners:
                if wanted in (None, listener.get("name")):
                    return gateway["metadata"]["name"], int(listener["port"])
        raise ValueError(
            f"{route['kind']} {namespace}/{route['metadata']['name']} reaches Service {service}, "
            f"but none of its parentRefs names a Gateway in namespace {namespace} with a "
            "matching listener"
        )
    raise ValueError(
        f"no GRPCRoute or HTTPRoute in namespace {namespace} sends traffic to Service {service} "
        "(apply one, e.g. cluster/manifests/ingress/grpcroute.yaml)"
    )


def port_forward_command(
    resource: str, port: int, namespace: str, context: str | None, kubeconfig: str | None = None
) -> list[str]:
    """kubectl argv that forwards a free loopback port to `resource` (pod/x or svc/x)."""
    argv = ["kubectl"]
    if kubeconfig:
        argv += ["--kubeconfig", kubeconfig]
    if context:
        argv += ["--context", context]
    return [*argv, "-n", namespace, "port-forward", "--address", "127.0.0.1", resource, f":{port}"]


def forwarded_address(line: str) -> str | None:
    """ "127.0.0.1:PORT" from kubectl's "Forwarding from 127.0.0.1:PORT -> N" line, else None."""
    prefix = "Forwarding from 127.0.0.1:"
    if not line.startswith(prefix):
        return None
    port = line[len(prefix) :].split(" ", 1)[0]
    return f"127.0.0.1:{port}" if port.isdigit() else None


def start_port_forward(
    argv: list[str], timeout: float = FORWARD_TIMEOUT_S
) -> tuple[subprocess.Popen[str], str]:
    """Run a `kubectl port-forward` argv; (its process, "127.0.0.1:PORT") once it forwards.

    KubeError with kubectl's own message when it exits or stays silent instead.
    """
    if shutil.which(argv[0]) is None:
        raise KubeError(
            f"{argv[0]} is not installed; it forwards a local port into the cluster. "
            "Install it: https://kubernetes.io/docs/tasks/tools/"
        )
    process = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        # One pipe, always read: kubectl writes an error line to stderr for every failed
        # connection, and a full pipe nobody reads would stall the forward.
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a Ctrl-C in the notebook must not end the forward
    )
    tail: collections.deque[str] = collections.deque(maxlen=20)
    found: dict[str, str] = {}
    settled = threading.Event()

    def pump() -> None:
        # kubectl prints a line per connection for as long as it runs; keep reading (and
        # keep only the last few lines) so that it never blocks on a full pipe.
        for line in process.stdout or []:
            tail.append(line.strip())
            if "address" not in found and (address := forwarded_address(line.strip())):
                found["address"] = address
                settled.set()
        settled.set()  # kubectl exited

    threading.Thread(target=pump, name="grpclab-port-forward", daemon=True).start()
    settled.wait(timeout)
    address = found.get("address")
    if address is None:
        _stop_process(process)
        # kubectl repeats its client-side retries first; its last line is the verdict.
        error = [line for line in tail if line and forwarded_address(line) is None]
        command = " ".join(a for a in argv if a != "--address" and a != "127.0.0.1")
        raise KubeError(
            f"{command} failed: {error[-1] if error else f'no forwarding line in {timeout:.0f} s'}"
        )
    return process, address


def service_of_target(target: str) -> tuple[str, str, int]:
    """(namespace, Service, port) of an in-cluster DNS target such as `target()` returns."""
    host = target.removeprefix("dns:///")
    name, _, port = host.rpartition(":")
    suffix = f".{CLUSTER_DOMAIN}"
    parts = name.removesuffix(suffix).split(".")
    if "://" in host or not name.endswith(suffix) or len(parts) != 2 or not port.isdigit():
        raise ValueError(
            f"{target!r} does not name a Service (service.namespace.{CLUSTER_DOMAIN}:port); "
            "only such targets can be forwarded to this machine"
        )
    return parts[1], parts[0], int(port)


def mesh_client_manifest(namespace: str, image: str = DEFAULT_IMAGE) -> dict[str, Any]:
    """A one-replica Deployment that idles in the mesh while its sidecar's config is read."""
    labels = {"app": MESH_CLIENT, "app.kubernetes.io/part-of": "grpclab"}
    pod_labels, annotations = client_pod_metadata("mesh")
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": MESH_CLIENT, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": MESH_CLIENT}},
            "template": {
                "metadata": {"labels": {**labels, **pod_labels}, "annotations": annotations},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [
                        {
                            "name": "idle",
                            "image": image,
                            "imagePullPolicy": "IfNotPresent",
                            "command": ["python", "-c", "import time; time.sleep(10**9)"],
                            "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
                        }
                    ],
                },
            },
        },
    }


def _option_value(key: str, value: Any) -> str:
    # The CLI reads a value back as an int when it parses as one, else as text.
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int | str):
        return str(value)
    raise ValueError(
        f"LoadSpec.channel_options[{key!r}]: gRPC channel options are int or str, "
        f"got {type(value).__name__}"
    )


def load_cli_args(spec: LoadSpec) -> list[str]:
    """The `python -m grpclab.load` arguments that reproduce `spec`, with JSON progress."""
    spec.validate()
    args = [str(spec.target)]  # a KubeTarget's via goes into the pod's metadata, not argv
    if spec.rpcs is not None:
        args += ["--rpcs", str(spec.rpcs)]
    else:
        args += ["--duration", repr(float(spec.duration_s))]
    args += ["--concurrency", str(spec.concurrency), "--channels", str(spec.channels)]
    if spec.service_config is not None:
        args += ["--service-config", spec.service_config_json()]
    elif spec.lb_policy is not None:
        args += ["--lb-policy", spec.lb_policy]
    for key, value in spec.channel_options.items():
        args += ["--option", f"{key}={_option_value(key, value)}"]
    args += ["--deadline", repr(float(spec.deadline_s)), "--method", spec.method]
    args += ["--interval", repr(float(spec.interval_s))]
    if spec.tls_ca_file is not None:
        args += ["--tls-ca", spec.tls_ca_file]
    if spec.tls_server_name is not None:
        args += ["--tls-server-name", spec.tls_server_name]
    if spec.proxy_admin is not None:
        args += ["--proxy-admin", spec.proxy_admin]
    if spec.stream_messages is not None:
        args += ["--stream-messages", str(spec.stream_messages)]
    if spec.stream_duration_s is not None:
        args += ["--stream-duration", repr(float(spec.stream_duration_s))]
    if spec.stream_interval_s:
        args += ["--stream-interval", repr(float(spec.stream_interval_s))]
    return [*args, "--json", "--progress-json"]


def load_job_manifest(
    spec: LoadSpec,
    namespace: str,
    name: str,
    image: str = DEFAULT_IMAGE,
    tls_ca_pem: str | None = None,
    active_deadline_s: int = 900,
) -> dict[str, Any]:
    """The batch/v1 Job that runs the load CLI for `spec` once, inside the cluster."""
    via = getattr(spec.target, "via", "dns")
    if via == "mesh" and spec.proxy_admin is None:
        # The pod's own istio-proxy: its admin API listens on the pod's loopback.
        spec = dataclasses.replace(spec, proxy_admin=ISTIO_PROXY_ADMIN)
    args = load_cli_args(spec)
    command = ["python", "-m", "grpclab.load"]
    env: list[dict[str, str]] = []
    if spec.tls_ca_file is not None:
        if tls_ca_pem is None:
            raise ValueError(
                f"LoadSpec.tls_ca_file={spec.tls_ca_file!r} is a file on this machine; "
                "pass its PEM text as tls_ca_pem so the Job can carry it"
            )
        args[args.index("--tls-ca") + 1] = JOB_CA_PATH
        env.append({"name": "GRPCLAB_TLS_CA_PEM", "value": tls_ca_pem})
        # The image has no copy of the CA: write it from the env, then run the CLI as usual.
        command = [
            "sh",
            "-c",
            f'printf "%s" "$GRPCLAB_TLS_CA_PEM" > {JOB_CA_PATH} '
            '&& exec python -m grpclab.load "$@"',
            "grpclab-load",
        ]
    pod_labels, annotations = client_pod_metadata(via)
    labels = {
        "app.kubernetes.io/name": "grpclab-load",
        "app.kubernetes.io/part-of": "grpclab",
        "app.kubernetes.io/managed-by": FIELD_MANAGER,
    }
    container: dict[str, Any] = {
        "name": LOAD_CONTAINER,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "args": args,
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
        # Meets the "restricted" Pod Security Standard, which shared clusters often enforce.
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if env:
        container["env"] = env
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "backoffLimit": 0,  # a failed run is reported, not retried behind the learner's back
            "ttlSecondsAfterFinished": 300,  # the cluster cleans up even if this process dies
            "activeDeadlineSeconds": active_deadline_s,
            "template": {
                "metadata": {"labels": {**labels, **pod_labels}, "annotations": annotations},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "containers": [container],
                },
            },
        },
    }


def parse_load_line(line: str) -> tuple[str, LoadResult] | None:
    """("progress" | "result", LoadResult) for one protocol line of the load CLI, else None."""
    progress, final = parse_json_lines([line])
    if final is not None:
        return "result", final
    if progress:
        return "progress", progress[-1]
    return None


def follow_load_output(
    lines: Iterable[str], on_progress: Callable[[LoadResult], None] | None = None
) -> tuple[LoadResult | None, list[str]]:
    """Feed progress snapshots to `on_progress`; returns the final result and the last lines."""
    final: LoadResult | None = None
    tail: list[str] = []
    for line in lines:
        tail = [*tail[-19:], line]
        parsed = parse_load_line(line)
        if parsed is None:
            continue
        kind, result = parsed
        if kind == "result":
            final = result
        if on_progress is not None:
            on_progress(result)
    return final, tail


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


def api_error_message(error: Exception) -> str:
    """The API server's own message from an ApiException body, else the exception text."""
    body = getattr(error, "body", None)
    if body:
        try:
            data = json.loads(body)
            return str(data.get("message") or body)
        except (ValueError, AttributeError):
            return str(body)
    return str(getattr(error, "reason", None) or error)


def _status(error: Exception) -> int | None:
    return getattr(error, "status", None)


# -- add-ons --------------------------------------------------------------------------


def addons_dir() -> Path:
    """cluster/addons of this checkout (found from the package, else from the working dir)."""
    candidates = [REPO, Path.cwd(), *Path.cwd().parents]
    for base in candidates:
        if (base / "cluster" / "addons").is_dir():
            return base / "cluster" / "addons"
    raise FileNotFoundError(
        "cluster/addons not found: run from a grpclab checkout (the scripts are not packaged)"
    )


def run_streamed(
    argv: list[str],
    what: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 900.0,
    say: Callable[[str], None] = _note,
    quiet_s: float = 15.0,
) -> tuple[int, str]:
    """Run `argv`, passing each line of its output to `say` as it comes; (exit code, output).

    stdout and stderr are one stream, so the lines keep their order. When the command is
    silent for `quiet_s` (a `kubectl wait`, a Helm install), `say` hears that it still
    runs and for how long. At `timeout` the command's process group is ended (it runs in
    a session of its own, so helm or istioctl under it stop too) and KubeError is raised.
    """
    process = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        bufsize=1,
        env=None if env is None else dict(env),
        start_new_session=True,
    )
    lines: list[str] = []
    arrived = threading.Condition()

    def pump() -> None:
        for line in process.stdout or []:
            with arrived:
                lines.append(line.rstrip("\n"))
                arrived.notify()
        with arrived:
            arrived.notify()

    reader = threading.Thread(target=pump, name="grpclab-streamed", daemon=True)
    reader.start()
    start = time.monotonic()
    said, last_line_at = 0, start
    while True:
        with arrived:
            if len(lines) == said:
                arrived.wait(timeout=min(1.0, quiet_s / 2))
            fresh = lines[said:]
        for line in fresh:
            say(f"{what}: {line}")
        said += len(fresh)
        now = time.monotonic()
        if fresh:
            last_line_at = now
        elif now - last_line_at >= quiet_s:
            say(f"{what}: still running ({now - start:.0f} s)")
            last_line_at = now
        if process.poll() is not None and not reader.is_alive():
            break
        if now - start > timeout:
            _stop_group(process)
            raise KubeError(
                f"{what} did not finish in {timeout:.0f} s; its last lines:\n"
                + "\n".join(lines[-20:])
            )
    reader.join()
    with arrived:
        for line in lines[said:]:
            say(f"{what}: {line}")
    return process.wait(), "\n".join(lines).strip()


def install_addon(
    name: str,
    context: str | None = None,
    timeout: float = 900.0,
    say: Callable[[str], None] = _note,
) -> str:
    """Run cluster/addons/<name>.sh (idempotent, pinned version); returns what it printed.

    Its lines show as they come (`say`, stdout by default): an Istio or Linkerd install
    takes minutes, and a silent cell looks hung.
    """
    if name not in ADDONS:
        raise ValueError(f"unknown add-on {name!r}; known: {', '.join(ADDONS)}")
    script = addons_dir() / f"{name}.sh"
    env = dict(os.environ)
    if context:
        env["GRPCLAB_KUBE_CONTEXT"] = context
    code, output = run_streamed(["bash", str(script)], f"add-on {name}", env, timeout, say)
    if code != 0:
        raise KubeError(f"add-on {name} failed (exit {code}):\n{output}")
    return output


# -- the cluster ---------------------------------------------------------------------


class KubeCluster(Cluster):
    """A real cluster through the official client: kind's `kind-grpclab`, or any context.

    `down()` deletes nothing: the cluster and what was applied outlive the notebook
    (`make kind-down` removes the kind cluster; delete() removes applied objects).
    """

    def __init__(
        self,
        backend: Literal["kind", "kubeconfig"] = "kind",
        namespace: str | None = None,
        context: str | None = None,
        image: str = DEFAULT_IMAGE,
        kubeconfig: str | None = None,
        load_timeout: float = 600.0,
        poll_interval: float = 0.5,
        start_timeout: float = JOB_START_TIMEOUT_S,
    ) -> None:
        from kubernetes import client, config

        if backend not in ("kind", "kubeconfig"):
            raise ValueError(f'backend must be "kind" or "kubeconfig", not {backend!r}')
        self.backend = backend
        self.namespace = resolve_namespace(namespace)
        self.image = image
        self._kubeconfig = kubeconfig
        self.load_timeout = load_timeout
        self.poll_interval = poll_interval
        self.start_timeout = start_timeout
        if backend == "kind" and context is None:
            context = KIND_CONTEXT
        try:
            if context is None and kubeconfig is None and _in_cluster():
                configuration = client.Configuration()
                config.load_incluster_config(client_configuration=configuration)
                self._api = client.ApiClient(configuration)
                self.context = "in-cluster"
            else:
                self._api = config.new_client_from_config(config_file=kubeconfig, context=context)
                self.context = context or config.list_kube_config_contexts(kubeconfig)[1]["name"]
        except config.ConfigException as error:
            hint = (
                "run `make kind-up` first"
                if backend == "kind"
                else "check `kubectl config get-contexts`"
            )
            raise KubeError(
                f"no usable kubeconfig context {context or '(current)'}: {error}; {hint}"
            ) from None
        self._core = client.CoreV1Api(self._api)
        self._apps = client.AppsV1Api(self._api)
        self._batch = client.BatchV1Api(self._api)
        self._dynamic_client: Any = None
        self._forwards: dict[tuple[str, str, int], tuple[subprocess.Popen[str], str]] = {}
        try:
            client.VersionApi(self._api).get_code(_request_timeout=10)
        except Exception as error:  # urllib3 and API errors alike: say where and what to do
            host = self._api.configuration.host
            self._api.close()
            raise KubeError(
                f"cannot reach the API server of context {self.context} at {host}: {error}. "
                + ("Is the kind cluster up? `make kind-up`" if backend == "kind" else "")
            ) from None

    # -- Cluster interface ---------------------------------------------------------

    def describe(self) -> str:
        return (
            f"{self.backend} backend: Kubernetes context {self.context}, namespace "
            f"{self.namespace}; pods are real pods, kube-proxy and CoreDNS are the real ones."
        )

    def apply(self, source: ManifestSource) -> list[str]:
        label = source_label(source)
        planned = self._plan(source, label)
        # Dry-run everything first so that a rejected object leaves nothing half-applied.
        # Objects in a namespace this batch creates cannot be dry-run before it exists.
        missing = {
            obj["metadata"]["name"]
            for resource, obj in planned
            if obj["kind"] == "Namespace" and self._get(resource, obj, label) is None
        }
        for resource, obj in planned:
            if obj.get("metadata", {}).get("namespace") in missing:
                continue
            self._server_side_apply(resource, obj, label, dry_run=True)
        lines = []
        for resource, obj in planned:
            before = self._get(resource, obj, label)
            after = self._server_side_apply(resource, obj, label, dry_run=False)
            if after is None:  # a Namespace we may use but not change
                lines.append(f"{kubectl_ref(obj)} unchanged (exists; not ours to change)")
                continue
            lines.append(f"{kubectl_ref(obj)} {apply_outcome(before, after)}")
        return lines

    def delete(self, source: ManifestSource) -> list[str]:
        label = source_label(source)
        planned = self._plan(source, label)
        lines = []
        # Reverse order: what depends on a namespace goes before the namespace.
        for resource, obj in reversed(planned):
            name, namespace = obj["metadata"]["name"], obj["metadata"].get("namespace")
            try:
                resource.delete(name=name, namespace=namespace, propagation_policy="Background")
            except _api_exception() as error:
                if _status(error) == 404:
                    lines.append(f"{kubectl_ref(obj)} not found (skipped)")
                    continue
                if _status(error) == 403 and obj["kind"] == "Namespace":
                    lines.append(f"{kubectl_ref(obj)} kept (no permission to delete it)")
                    continue
                raise KubeError(
                    f"{label}: {kubectl_ref(obj)}: {api_error_message(error)}"
                ) from None
            lines.append(f"{kubectl_ref(obj)} deleted")
        return list(reversed(lines))

    def pods(
        self, selector: Mapping[str, str] | None = None, namespace: str | None = None
    ) -> list[Pod]:
        label_selector = ",".join(f"{k}={v}" for k, v in (selector or {}).items()) or None
        items = self._core.list_namespaced_pod(
            namespace or self.namespace, label_selector=label_selector
        ).items
        pods = (pod_from_model(p) for p in items)
        # The load Job's pod lingers a moment after a run: it is grpclab's, not the learner's,
        # and the sandbox (which runs load in this process) has no such pod either.
        asked_for_tools = is_tool_pod(dict(selector or {}))
        return sorted(
            (p for p in pods if asked_for_tools or not is_tool_pod(p.labels)), key=lambda p: p.name
        )

    def wait_ready(
        self,
        deployment: str,
        namespace: str | None = None,
        timeout: float = 60.0,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> list[Pod]:
        namespace = namespace or self.namespace
        deadline = time.monotonic() + timeout
        last: tuple[int, int] | None = None
        waiting = Waiting(f"deployment {namespace}/{deployment}")
        while True:
            obj = self._read_deployment(deployment, namespace)
            ready, desired, done = rollout_status(obj)
            if on_progress is not None and (ready, desired) != last:
                on_progress(ready, desired)
            last = (ready, desired)
            stuck = progress_deadline_exceeded(obj)
            if stuck:
                raise KubeError(
                    f"deployment {namespace}/{deployment}: {stuck}\n" + self._report(obj)
                )
            if done:
                live = self._current_pods(obj)
                # The pod list can trail the Deployment status by a moment; wait until it agrees.
                if live is not None and len(live) == desired:
                    waiting.finish(f"{desired}/{desired} ready")
                    return live
            waiting.update(f"{ready}/{desired} ready")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"deployment {namespace}/{deployment}: {ready}/{desired} ready after "
                    f"{timeout:.0f} s\n" + self._report(obj)
                )
            time.sleep(self.poll_interval)

    def scale(self, deployment: str, replicas: int, namespace: str | None = None) -> None:
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise ValueError(f"replicas must be a whole number >= 0, not {replicas!r}")
        namespace = namespace or self.namespace
        try:
            self._apps.patch_namespaced_deployment_scale(
                deployment, namespace, {"spec": {"replicas": replicas}}
            )
        except _api_exception() as error:
            if _status(error) == 404:
                raise KeyError(
                    f'deployment "{deployment}" not found in namespace {namespace}'
                ) from None
            raise

    def delete_pod(self, name: str, namespace: str | None = None) -> None:
        namespace = namespace or self.namespace
        try:
            self._core.delete_namespaced_pod(name, namespace)
        except _api_exception() as error:
            if _status(error) == 404:
                raise KeyError(f'pod "{name}" not found in namespace {namespace}') from None
            raise

    def target(
        self,
        service: str,
        port: int | str = "grpc",
        namespace: str | None = None,
        via: str = "dns",
    ) -> str:
        """An in-cluster target for the load Job; see KubeTarget for what `via` changes.

        "dns"/"clusterip": the Service's name, through the client's balancer or the cluster IP.
        "addresses": `ipv4:` with the pod IPs of its ready EndpointSlice endpoints, for now.
        "mesh"/"linkerd": the Service's name, with the client's Istio or Linkerd proxy.
        "xds": `xds:///name...` for proxyless gRPC with Istio's gRPC agent.
        "ingress"/"traefik"/"gateway": the controller's Service that routes to `service`.
        """
        namespace = namespace or self.namespace
        check_via(via)
        try:
            obj = self._core.read_namespaced_service(service, namespace)
        except _api_exception() as error:
            if _status(error) == 404:
                raise KeyError(f'service "{service}" not found in namespace {namespace}') from None
            raise
        number = service_port(obj, port)
        if via in ADDON_FOR_VIA:
            addon, addon_namespace, deployment = ADDON_FOR_VIA[via]
            if not self._deployment_exists(deployment, addon_namespace):
                # Said now, not after a load Job has started without its proxy or agent.
                raise KubeError(
                    f"via={via!r} needs the {addon} add-on, and this cluster has no "
                    f"deployment {addon_namespace}/{deployment}: {addon_hint(addon)}"
                )
        if via == "addresses":
            slices = self._list("discovery.k8s.io/v1", "EndpointSlice", namespace)
            return KubeTarget(ready_addresses(slices, obj, number), via)
        if via in ("dns", "clusterip"):
            if via == "clusterip" and is_headless(obj):
                raise ValueError(f"service {namespace}/{service} is headless: it has no cluster IP")
            return KubeTarget(service_target(service, namespace, number, via), via)
        host = service_target(service, namespace, number, "clusterip")  # the plain DNS name
        if via in ("mesh", "linkerd"):
            return KubeTarget(host, via)
        if via == "xds":
            return KubeTarget(f"xds:///{host}", via)
        if via == "ingress":
            ingresses = self._list("networking.k8s.io/v1", "Ingress", namespace)
            front_namespace, front_name = INGRESS_NGINX_SERVICE
            front_port = ingress_port(ingresses, service, namespace)
        elif via == "traefik":
            routes = self._list("traefik.io/v1alpha1", "IngressRoute", namespace)
            front_namespace, front_name = TRAEFIK_SERVICE
            front_port = traefik_port(routes, service, namespace)
        else:
            routes = [
                *self._list("gateway.networking.k8s.io/v1", "GRPCRoute", namespace),
                *self._list("gateway.networking.k8s.io/v1", "HTTPRoute", namespace),
            ]
            gateways = self._list("gateway.networking.k8s.io/v1", "Gateway", namespace)
            gateway, front_port = gateway_listener(routes, gateways, service, namespace)
            front_namespace = ENVOY_GATEWAY_NAMESPACE
            front_name = self._envoy_gateway_service(gateway, namespace)
        return KubeTarget(service_target(front_name, front_namespace, front_port, "dns"), via)

    def run_load(
        self, spec: LoadSpec, on_progress: Callable[[LoadResult], None] | None = None
    ) -> LoadResult:
        pem = Path(spec.tls_ca_file).read_text() if spec.tls_ca_file else None
        name = f"grpclab-load-{secrets.token_hex(4)}"
        manifest = load_job_manifest(
            spec,
            self.namespace,
            name,
            self.image,
            tls_ca_pem=pem,
            active_deadline_s=int(self.load_timeout),
        )
        deadline = time.monotonic() + self.load_timeout
        self._batch.create_namespaced_job(self.namespace, manifest)
        try:
            result = self._follow_job(name, deadline, on_progress)
        except BaseException:
            # The run's own error is the one to see; a failed clean-up only goes to the log
            # (ttlSecondsAfterFinished removes the Job anyway).
            try:
                self._delete_job(name)
            except Exception:
                log.warning("could not delete load Job %s/%s", self.namespace, name, exc_info=True)
            raise
        self._delete_job(name)
        return result

    def _delete_job(self, name: str) -> None:
        try:
            self._batch.delete_namespaced_job(name, self.namespace, propagation_policy="Background")
        except _api_exception() as error:
            if _status(error) != 404:
                raise

    def set_fault(self, pod: str, namespace: str | None = None, **fault: Any) -> dict[str, Any]:
        out = self._admin_exec(
            pod, namespace, lambda at: fault_exec_command(at, fault), "set_fault"
        )
        return json.loads(out.strip().splitlines()[-1])

    def crash_pod(self, pod: str, namespace: str | None = None) -> None:
        namespace = namespace or self.namespace
        before = self._read_pod(pod, namespace)
        try:
            self._admin_exec(pod, namespace, crash_exec_command, "crash_pod")
        except KubeError:
            # The server exits 50 ms after its reply, and the runtime then kills what else
            # runs in the container, the exec'd client among them: its exit code can be the
            # kill's. What counts is whether the server went down.
            # The kubelet reports the exit within a second or two.
            deadline = time.monotonic() + 10
            while not crashed_since(before, self._read_pod(pod, namespace)):
                if time.monotonic() > deadline:
                    raise
                time.sleep(self.poll_interval)

    def install_addon(self, name: str) -> str:
        """Install a pinned add-on into this cluster's context (see cluster/addons/)."""
        return install_addon(name, None if self.context == "in-cluster" else self.context)

    def logs(self, pod: str, namespace: str | None = None, tail: int = 20) -> str:
        """The last lines of the pod's server container log (`kubectl logs --tail`)."""
        namespace = namespace or self.namespace
        obj = self._read_pod(pod, namespace)
        try:
            text = self._core.read_namespaced_pod_log(
                pod, namespace, container=server_containers(obj)[0].name, tail_lines=tail
            )
        except Exception as error:
            if _status(error) is None:
                raise
            raise KubeError(f"logs of pod {namespace}/{pod}: {api_error_message(error)}") from None
        return text.rstrip("\n")

    def local_address(
        self, pod: str, port: int | str = "grpc", namespace: str | None = None
    ) -> str:
        namespace = namespace or self.namespace
        obj = self._read_pod(pod, namespace)
        return self._forward(f"pod/{pod}", container_port(obj, port), namespace)

    def local_target(self, target: str) -> str:
        namespace, service, port = service_of_target(target)
        return self._forward(f"svc/{service}", port, namespace)

    def prometheus_url(self) -> str:
        """Prometheus from cluster/addons/prometheus.sh (installed on first use), forwarded."""
        namespace, name = PROMETHEUS_SERVICE
        if not self._deployment_exists(name, namespace):
            self.install_addon("prometheus")
        return "http://" + self._forward(f"svc/{name}", PROMETHEUS_PORT, namespace)

    def mesh_config_dump(self) -> dict[str, Any]:
        """The Envoy config dump of the istio-proxy of a meshed client in the namespace.

        Runs grpclab-mesh-client (an idle pod with a sidecar) for the time it takes;
        `pilot-agent request` is how istioctl itself reads a sidecar's admin endpoint.
        """
        if not self._deployment_exists("istiod", "istio-system"):
            raise KubeError(
                "mesh_config_dump: Istio is not installed in this cluster; first "
                + addon_hint("istio")
            )
        client = mesh_client_manifest(self.namespace, self.image)
        self.apply(client)
        try:
            pod = self.wait_ready(MESH_CLIENT, timeout=180)[0].name
            out = self._exec(
                pod, "istio-proxy", ["pilot-agent", "request", "GET", "config_dump"], self.namespace
            )
        finally:
            # Gone again at once: later cells that list or fault every pod see servers only.
            self.delete(client)
        return json.loads(out)

    def down(self) -> None:
        # Nothing is deleted: the cluster outlives the notebook. The client closes and the
        # port-forwards this object started stop.
        forwards, self._forwards = getattr(self, "_forwards", {}), {}
        for process, _ in forwards.values():
            _stop_process(process)
        api = getattr(self, "_api", None)
        if api is not None:
            self._api = None
            api.close()

    # -- helpers -------------------------------------------------------------------

    def _list(self, api_version: str, kind: str, namespace: str) -> list[dict[str, Any]]:
        """Objects of a kind in the namespace; none when the cluster does not serve the kind."""
        from kubernetes.dynamic.exceptions import ResourceNotFoundError

        try:
            resource = self._dynamic.resources.get(api_version=api_version, kind=kind)
        except ResourceNotFoundError:
            return []
        return [item.to_dict() for item in resource.get(namespace=namespace).items]

    def _envoy_gateway_service(self, gateway: str, namespace: str) -> str:
        """The Service Envoy Gateway made for a Gateway (its name has a generated suffix)."""
        selector = (
            f"gateway.envoyproxy.io/owning-gateway-name={gateway},"
            f"gateway.envoyproxy.io/owning-gateway-namespace={namespace}"
        )
        found = self._core.list_namespaced_service(
            ENVOY_GATEWAY_NAMESPACE, label_selector=selector
        ).items
        if not found:
            raise ValueError(
                f"Envoy Gateway has no Service for Gateway {namespace}/{gateway} in "
                f"{ENVOY_GATEWAY_NAMESPACE}: is the envoy-gateway add-on installed, and is the "
                "Gateway Programmed (kubectl get gateway)?"
            )
        return found[0].metadata.name

    def _read_pod(self, name: str, namespace: str) -> Any:
        try:
            return self._core.read_namespaced_pod(name, namespace)
        except _api_exception() as error:
            if _status(error) == 404:
                raise KeyError(f'pod "{name}" not found in namespace {namespace}') from None
            raise

    def _deployment_exists(self, name: str, namespace: str) -> bool:
        """Whether an add-on's Deployment is there. A 403 is not an answer: it is raised."""
        try:
            self._apps.read_namespaced_deployment(name, namespace)
        except _api_exception() as error:
            if _status(error) == 404:
                return False
            if _status(error) == 403:
                raise KubeError(
                    f"cannot tell whether deployment {namespace}/{name} exists: your "
                    f"credentials may not read deployments in {namespace} (403: "
                    f"{api_error_message(error)}). Ask the cluster's admin whether the add-on "
                    "is installed."
                ) from None
            raise
        return True

    def _forward(self, resource: str, port: int, namespace: str) -> str:
        """A loopback address forwarded to `resource`'s port by a kubectl this object owns."""
        key = (namespace, resource, port)
        running = self._forwards.get(key)
        if running is not None and running[0].poll() is None:
            return running[1]
        context = None if self.context == "in-cluster" else self.context
        argv = port_forward_command(resource, port, namespace, context, self._kubeconfig)
        self._forwards[key] = start_port_forward(argv)
        return self._forwards[key][1]

    def _admin_exec(
        self,
        pod: str,
        namespace: str | None,
        command_for: Callable[[str], list[str]],
        action: str,
    ) -> str:
        """Run `command_for(server address)` in the pod's server container; its stdout."""
        namespace = namespace or self.namespace
        obj = self._read_pod(pod, namespace)
        command = command_for(server_address(obj))
        try:
            return self._exec(pod, server_containers(obj)[0].name, command, namespace)
        except KubeError as error:
            raise KubeError(f"{action} on pod {namespace}/{pod}: {error}") from None

    def _exec(self, pod: str, container: str, command: list[str], namespace: str) -> str:
        """stdout of `command` run in one container of a pod; KubeError with stderr on failure."""
        from kubernetes.stream import stream

        session = stream(
            self._core.connect_get_namespaced_pod_exec,
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

    @property
    def _dynamic(self) -> Any:
        from kubernetes.dynamic import DynamicClient

        if self._dynamic_client is None:
            self._dynamic_client = DynamicClient(self._api)
        return self._dynamic_client

    def _resource(self, obj: Mapping[str, Any], label: str) -> Any:
        from kubernetes.dynamic.exceptions import ResourceNotFoundError

        api_version, kind = obj["apiVersion"], obj["kind"]
        for attempt in range(2):
            try:
                return self._dynamic.resources.get(api_version=api_version, kind=kind)
            except ResourceNotFoundError:
                if attempt == 0:  # CRDs installed since discovery was cached
                    self._dynamic.resources.invalidate_cache()
        group = api_version.split("/")[0] if "/" in api_version else ""
        addon = ADDON_FOR_GROUP.get(group)
        hint = f"; install it with {addon_hint(addon)}" if addon else ""
        raise KubeError(
            f"{label}: {kubectl_ref(obj)}: this cluster does not serve {kind} ({api_version}){hint}"
        )

    def _plan(self, source: ManifestSource, label: str) -> list[tuple[Any, dict[str, Any]]]:
        objects = load_objects(source, default_namespace=self.namespace)
        resources = {(o["apiVersion"], o["kind"]): self._resource(o, label) for o in objects}
        moved = override_namespace(
            objects,
            self.namespace,
            lambda api_version, kind: resources[(api_version, kind)].namespaced,
        )
        return [(resources[(o["apiVersion"], o["kind"])], o) for o in moved]

    def _get(self, resource: Any, obj: Mapping[str, Any], label: str) -> dict[str, Any] | None:
        """The live object `obj` names, None when there is none (404).

        403 on a Namespace means it exists but is the instructor's (one namespace per
        attendee): {} stands for "exists, not readable". Any other 403 is raised.
        """
        name, namespace = obj["metadata"]["name"], obj["metadata"].get("namespace")
        try:
            return resource.get(name=name, namespace=namespace).to_dict()
        except _api_exception() as error:
            if _status(error) == 404:
                return None
            if _status(error) == 403 and obj["kind"] == "Namespace":
                return {}
            if _status(error) == 403:
                raise KubeError(
                    f"{label}: {kubectl_ref(obj)}: no permission to read it (403): "
                    + api_error_message(error)
                ) from None
            raise

    def _server_side_apply(
        self, resource: Any, obj: dict[str, Any], label: str, dry_run: bool
    ) -> dict[str, Any] | None:
        try:
            applied = resource.server_side_apply(
                body=obj,
                name=obj["metadata"]["name"],
                namespace=obj["metadata"].get("namespace"),
                field_manager=FIELD_MANAGER,
                force_conflicts=True,
                dry_run="All" if dry_run else None,
            )
        except _api_exception() as error:
            if _status(error) == 403 and obj["kind"] == "Namespace":
                # One namespace per attendee: the instructor made it; we may only use it.
                return None
            if _status(error) == 422:  # Invalid: the manifest's fault; the message names the field
                raise ManifestError(
                    label, api_error_message(error), object=kubectl_ref(obj)
                ) from None
            raise KubeError(
                f"{label}: {kubectl_ref(obj)}: the API server refused it: "
                + api_error_message(error)
            ) from None
        return applied.to_dict()

    def _read_deployment(self, name: str, namespace: str) -> Any:
        try:
            return self._apps.read_namespaced_deployment(name, namespace)
        except _api_exception() as error:
            if _status(error) == 404:
                raise KeyError(f'deployment "{name}" not found in namespace {namespace}') from None
            raise

    def _current_pods(self, deployment: Any) -> list[Pod] | None:
        """Ready, running pods of the Deployment's current ReplicaSet; None before it has one.

        Not every pod its selector matches: another Deployment's, or an old ReplicaSet's
        pod that is still terminating, would be counted too.
        """
        namespace = deployment.metadata.namespace
        selector = ",".join(
            f"{k}={v}" for k, v in (deployment.spec.selector.match_labels or {}).items()
        )
        replicasets = self._apps.list_namespaced_replica_set(
            namespace, label_selector=selector
        ).items
        current = current_replicaset(deployment, replicasets)
        if current is None:
            return None
        items = self._core.list_namespaced_pod(namespace, label_selector=selector).items
        pods = (pod_from_model(p) for p in replicaset_pods(current, items))
        return sorted((p for p in pods if p.ready and p.phase == "Running"), key=lambda p: p.name)

    def _report(self, deployment: Any) -> str:
        """Pod by pod: phase, readiness and why a container waits (ImagePullBackOff...)."""
        namespace = deployment.metadata.namespace
        selector = ",".join(
            f"{k}={v}" for k, v in (deployment.spec.selector.match_labels or {}).items()
        )
        lines = []
        for pod in self._core.list_namespaced_pod(namespace, label_selector=selector).items:
            view = pod_from_model(pod)
            why = "; ".join(_waiting_reasons(pod))
            lines.append(
                f"  {view.name} {view.phase} ready={view.ready} restarts={view.restarts} {why}"
            )
            if not view.ready:  # which probe, and the kubelet's last word on it
                lines += [f"    {probe}" for probe in _probes(pod)]
                events = self._events([view.name], namespace=namespace, reason="Unhealthy")
                lines += [f"  {event}" for event in events]
        return "\n".join(lines) or "  (no pods)"

    def _follow_job(
        self, name: str, deadline: float, on_progress: Callable[[LoadResult], None] | None
    ) -> LoadResult:
        from kubernetes import watch

        pod = self._wait_for_job_pod(name, deadline)
        final: LoadResult | None = None
        tail: list[str] = []
        # A log stream can drop (API server restart, idle proxy); follow again while the
        # container runs. Re-read lines repeat progress, which only redraws the same data.
        for _ in range(3):
            lines = watch.Watch().stream(
                self._core.read_namespaced_pod_log,
                name=pod,
                namespace=self.namespace,
                container=LOAD_CONTAINER,
                _request_timeout=max(1.0, deadline - time.monotonic()),
            )
            final, tail = follow_load_output(lines, on_progress)
            if final is not None or self._load_exit_code(pod) is not None:
                break
        if final is None:
            code = self._load_exit_code(pod)
            raise KubeError(
                f"load Job {self.namespace}/{name} ended without a result (exit code {code}); "
                "last log lines:\n" + "\n".join(tail)
            )
        return final

    def _wait_for_job_pod(self, job: str, deadline: float) -> str:
        """The Job's pod once its load container has started; KubeError when it cannot.

        Gives up after `start_timeout` (not the whole load timeout) with what the pod
        waited for and the Job's and pod's latest events.
        """
        start_deadline = min(deadline, time.monotonic() + self.start_timeout)
        waiting = Waiting(f"load Job {self.namespace}/{job}")
        while True:
            try:
                obj = self._batch.read_namespaced_job_status(job, self.namespace)
            except _api_exception() as error:
                if _status(error) != 404:
                    raise
                obj = None  # deleted under us; the pods say the rest
            pods = self._core.list_namespaced_pod(
                self.namespace, label_selector=f"job-name={job}"
            ).items
            state = job_start(obj, pods, self.image)
            if state.pod is not None:
                waiting.finish("load running")
                return state.pod
            if state.failure is not None:
                raise KubeError(f"load Job {self.namespace}/{job}: {state.failure}")
            if time.monotonic() > start_deadline:
                events = self._events([job, *(p.metadata.name for p in pods)])
                raise KubeError(
                    f"load Job {self.namespace}/{job}: its load container did not start in "
                    f"{self.start_timeout:.0f} s: {state.waiting}."
                    + (" Latest events:\n" + "\n".join(events) if events else "")
                    + "\n(If images are still being pulled, connect with a longer "
                    "start_timeout.)"
                )
            waiting.update(state.waiting)
            time.sleep(self.poll_interval)

    def _events(
        self,
        names: Iterable[str],
        last: int = 8,
        namespace: str | None = None,
        reason: str | None = None,
    ) -> list[str]:
        """The latest events about the named objects in the namespace, as kubectl shows them."""
        wanted = set(names)
        try:
            items = self._core.list_namespaced_event(namespace or self.namespace).items
        except _api_exception():
            return []  # no permission to read events: the timeout message stands alone
        mine = [
            e
            for e in items
            if e.involved_object and e.involved_object.name in wanted and reason in (None, e.reason)
        ]
        mine.sort(key=lambda e: str(e.last_timestamp or e.event_time or ""))
        return [
            f"  {e.involved_object.kind}/{e.involved_object.name}: {e.reason}: {e.message}"
            + (f" (x{e.count})" if (e.count or 0) > 1 else "")
            for e in mine[-last:]
        ]

    def _load_exit_code(self, pod: str) -> int | None:
        obj = self._core.read_namespaced_pod(pod, self.namespace)
        for status in (obj.status.container_statuses or []) if obj.status else []:
            if status.name == LOAD_CONTAINER and status.state and status.state.terminated:
                return status.state.terminated.exit_code
        return None


def _probes(pod: Any) -> list[str]:
    """The pod's probes as `kubectl describe` sums them up: which container, kind, where."""
    found = []
    for container in pod.spec.containers if pod.spec else []:
        for which in ("startup", "readiness", "liveness"):
            probe = getattr(container, f"{which}_probe", None)
            if probe is None:
                continue
            if probe.grpc is not None:
                how = f"grpc :{probe.grpc.port}" + (
                    f" service={probe.grpc.service}" if probe.grpc.service else ""
                )
            elif probe.http_get is not None:
                how = f"http-get :{probe.http_get.port}{probe.http_get.path or '/'}"
            elif probe.tcp_socket is not None:
                how = f"tcp-socket :{probe.tcp_socket.port}"
            elif probe._exec is not None:
                how = f"exec {probe._exec.command}"
            else:
                how = "(no handler)"
            found.append(f"{container.name}: {which} probe {how}")
    return found


def _waiting_reasons(pod: Any) -> list[str]:
    reasons = []
    for status in (pod.status.container_statuses or []) if pod.status else []:
        waiting = status.state.waiting if status.state else None
        if waiting and waiting.reason:
            reasons.append(f"{status.name}: {waiting.reason} {waiting.message or ''}".strip())
    for condition in (pod.status.conditions or []) if pod.status else []:
        if condition.type == "PodScheduled" and condition.status == "False":
            reasons.append(f"unschedulable: {condition.message}")
    return reasons


def _in_cluster() -> bool:
    return (
        bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
        and Path("/var/run/secrets/kubernetes.io/serviceaccount/token").exists()
    )


def container_port(pod: Any, port: int | str) -> int:
    """The number of a V1Pod's container port given by name or number; KeyError when absent."""
    declared = [
        (item.name, item.container_port) for c in pod.spec.containers for item in c.ports or []
    ]
    for name, number in declared:
        if port == name or str(port) == str(number):
            return int(number)
    if isinstance(port, int):
        return port  # an undeclared port may still be open; kubectl forwards it
    have = ", ".join(f"{name or '(unnamed)'}={number}" for name, number in declared) or "none"
    raise KeyError(f"pod {pod.metadata.name} has no container port {port!r} (it has {have})")


def _stop_group(process: subprocess.Popen[str]) -> None:
    """End a child this module started in a session of its own, with what it started."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)  # the group this module created for it
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
        except ProcessLookupError:
            process.wait(timeout=5)


def _stop_process(process: subprocess.Popen[str]) -> None:
    """End a child this module started, by its PID, and reap it."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
