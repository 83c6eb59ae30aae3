"""The one `Cluster` interface that notebooks use, whatever the backend."""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grpclab import prometheus
from grpclab.load import LoadResult, LoadSpec

if TYPE_CHECKING:
    from google.protobuf.message import Message

    from grpclab.prometheus import Sample, Series
    from grpclab.xds import Nack

ManifestSource = str | Path | Mapping[str, Any] | list[Mapping[str, Any]]
BACKENDS = ("sandbox", "kind", "kubeconfig")
DEFAULT_NAMESPACE = "production"
NOT_MEASURED = "not measured on this backend"


@dataclass(frozen=True)
class Pod:
    """A pod as `kubectl get pods -o wide` would show it."""

    name: str
    namespace: str
    ip: str
    ready: bool
    phase: str  # Pending, Running, Succeeded, Failed, Terminating
    restarts: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Rollout:
    """Where a Deployment's rollout stands, as a backend reads it for `Cluster.wait_ready`.

    pods: its ready pods once the rollout is complete, else None. failure: an error that
    waiting longer cannot mend. report: the pods' state, for the error when time runs out.
    """

    ready: int
    desired: int
    pods: list[Pod] | None = None
    failure: Exception | None = None
    report: Callable[[], str] = str


@dataclass(frozen=True)
class Component:
    """What plays one component of the calls' path on this backend (`Cluster.component`).

    name: "kube-proxy", or an add-on's name as install_addon takes it ("istio", "linkerd",
    "ingress-nginx", "envoy-gateway").
    stand_in: "" when the real component carries the calls; otherwise what plays it here,
    in a few words ("Envoy tcp_proxy"). A stand-in reproduces how the real one picks pods
    and learns endpoints, not its memory or its speed.
    memory_mb: resident memory of the component's data-plane process(es) now; None when this
    backend does not measure it (memory_note then says so).
    """

    name: str
    stand_in: str = ""
    memory_mb: float | None = None
    memory_note: str = NOT_MEASURED


class Cluster(ABC):
    """What a notebook may ask of a cluster. Nothing here names a backend detail."""

    backend: str
    namespace: str

    @abstractmethod
    def apply(self, source: ManifestSource) -> list[str]:
        """Create or update every object in `source`; returns kubectl-style lines."""

    @abstractmethod
    def delete(self, source: ManifestSource) -> list[str]:
        """Delete every object in `source`; objects that are already gone are skipped."""

    @abstractmethod
    def pods(
        self, selector: Mapping[str, str] | None = None, namespace: str | None = None
    ) -> list[Pod]:
        """Pods in the namespace, optionally filtered by labels, sorted by name."""

    def wait_ready(
        self,
        deployment: str,
        namespace: str | None = None,
        timeout: float = 60.0,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> list[Pod]:
        """Block until the Deployment's rollout is complete; returns its ready pods."""
        namespace = namespace or self.namespace
        deadline = time.monotonic() + timeout
        last: tuple[int, int] | None = None
        for rollout in self._rollout(deployment, namespace):
            if on_progress is not None and (rollout.ready, rollout.desired) != last:
                on_progress(rollout.ready, rollout.desired)
            last = (rollout.ready, rollout.desired)
            if rollout.failure is not None:
                raise rollout.failure
            if rollout.pods is not None:
                return rollout.pods
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"deployment {namespace}/{deployment}: {rollout.ready}/{rollout.desired} "
                    f"ready after {timeout:.0f} s\n{rollout.report()}"
                )
        raise RuntimeError(f"deployment {namespace}/{deployment}: the rollout stopped reporting")

    @abstractmethod
    def _rollout(self, deployment: str, namespace: str) -> Iterator[Rollout]:
        """The rollout's state, read again each time the caller asks (after a short wait)."""

    @abstractmethod
    def scale(self, deployment: str, replicas: int, namespace: str | None = None) -> None:
        """Set the Deployment's replica count (does not wait)."""

    @abstractmethod
    def delete_pod(self, name: str, namespace: str | None = None) -> None:
        """Delete one pod; its Deployment replaces it."""

    def target(
        self,
        service: str,
        port: int | str = "grpc",
        namespace: str | None = None,
        via: str = "dns",
    ) -> str:
        """The gRPC target string that reaches `service` on this backend.

        via: "dns" (the Service's DNS name), "clusterip" (its virtual IP), "addresses"
        (`ipv4:ip:port,...`, the ready pods from its EndpointSlice at the time of the call,
        for clients that cannot use the cluster's DNS; it does not follow scale-ups), or a
        way a feature adds, such as a mesh sidecar.
        """
        return self._target(service, port, namespace or self.namespace, via)

    @abstractmethod
    def _target(self, service: str, port: int | str, namespace: str, via: str) -> str:
        """`target` in a namespace that is given."""

    @abstractmethod
    def run_load(
        self, spec: LoadSpec, on_progress: Callable[[LoadResult], None] | None = None
    ) -> LoadResult:
        """Drive RPCs as described by `spec` from inside the cluster; returns the result."""

    @abstractmethod
    def set_fault(self, pod: str, namespace: str | None = None, **fault: Any) -> dict[str, Any]:
        """Set one pod's fault knobs (added_latency_ms, error_rate, error_code, not_serving)."""

    @abstractmethod
    def crash_pod(self, pod: str, namespace: str | None = None) -> None:
        """End the pod's server at once, as a crash or the OOM killer does: no drain at all.

        Unlike delete_pod, nothing is graceful: open connections are cut, and the kubelet
        restarts the container in the same pod (its restart count goes up).
        """

    def freeze_pod(self, pod: str, namespace: str | None = None) -> None:
        """Stop every process of the pod's server container (SIGSTOP) until `thaw_pod`.

        A stand-in for a node that vanished: the process reads nothing and answers nothing,
        yet its kernel keeps the connections open, so a client gets no RST and no FIN. The
        kubelet still runs (unlike on a dead node): probes time out, so a readiness probe
        takes the pod out of its endpoints and a liveness probe restarts it.
        """
        raise NotImplementedError(f"freeze_pod: not available on the {self.backend} backend yet")

    def thaw_pod(self, pod: str, namespace: str | None = None) -> None:
        """Let the pod's frozen processes run again (SIGCONT); a no-op if it is not frozen."""
        raise NotImplementedError(f"thaw_pod: not available on the {self.backend} backend yet")

    @abstractmethod
    def local_address(
        self, pod: str, port: int | str = "grpc", namespace: str | None = None
    ) -> str:
        """A "host:port" from which this Python process reaches one pod's container port.

        For calls a notebook makes itself (a health Watch, one SayHello) rather than through
        run_load. The sandbox gives the pod's loopback address; a real cluster forwards a
        local port to the pod (kubectl port-forward), which lives until down().
        """

    @abstractmethod
    def local_target(self, target: str) -> str:
        """A target this Python process can dial for a Service target from `target()`.

        For checks a notebook makes itself (a TLS handshake with an ingress, say). The
        sandbox's targets are already local; on a real cluster a local port is forwarded
        to the Service (kubectl port-forward picks one of its pods), until down().
        """

    @abstractmethod
    def logs(self, pod: str, namespace: str | None = None, tail: int = 20) -> str:
        """The last `tail` lines that the pod's server printed, as `kubectl logs --tail`.

        KeyError when the pod is not there.
        """

    @abstractmethod
    def install_addon(self, name: str) -> str:
        """Install (once) the controller add-on `name` (an Ingress controller, a Gateway, a
        mesh); returns what the install said, its last line saying what now runs.

        On a real cluster this is the real controller (cluster/addons/<name>.sh); in the
        sandbox a stand-in, which says whether it is the real data plane or an emulation.
        """

    def describe_addon(self, name: str) -> str:
        """What the controller add-on `name` serves now, in words."""
        return f"{name}: the real controller on {self.backend}; inspect it with its own tools"

    @abstractmethod
    def mesh_config_dump(self) -> dict[str, Any]:
        """The Envoy config dump (/config_dump as JSON) of a meshed client's sidecar.

        What the mesh's control plane actually sent for via="mesh": the sandbox's sidecar
        Envoy, or on a real cluster the istio-proxy of a client pod in the namespace. Read
        clusters and routes out of it with grpclab.xds.dumps.
        """

    def xds_resources(self, type_url: str) -> dict[str, Message]:
        """What the xDS control plane serves the proxyless gRPC client that
        `target(via="xds")` set up: the resources of one type (grpclab.xds.LISTENER, ROUTE,
        CLUSTER, ENDPOINT), by name."""
        raise NotImplementedError(self._no_xds_control_plane("xds_resources"))

    def xds_nacks(self) -> list[Nack]:
        """Every update that proxyless client refused (NACKed), oldest first, with its reason."""
        raise NotImplementedError(self._no_xds_control_plane("xds_nacks"))

    def stop_xds(self) -> None:
        """Stop the xDS control plane; its clients keep serving from what they last got."""
        raise NotImplementedError(self._no_xds_control_plane("stop_xds"))

    def _no_xds_control_plane(self, method: str) -> str:
        return (
            f"{method}: the {self.backend} backend does not open its xDS control plane to "
            "grpclab (on a real cluster it is Istio's istiod: inspect it with `istioctl "
            "proxy-status` and `istioctl proxy-config`); notebook 07, which uses it, runs on "
            "the sandbox only"
        )

    def component(self, name: str) -> Component:
        """What plays `name` (kube-proxy or an add-on) here, and its memory if measured.

        A real cluster runs the real components; unless a backend measures their memory,
        the answer says it is not measured rather than guessing.
        """
        return Component(name)

    def prometheus_url(self) -> str:
        """The HTTP address of a Prometheus that scrapes every pod's `metrics` port."""
        raise NotImplementedError(
            f"the {self.backend} backend does not run Prometheus for you yet: install it with "
            "cluster/addons/prometheus.sh, then `kubectl -n grpclab-monitoring port-forward "
            "svc/prometheus 9090` and query http://127.0.0.1:9090 with grpclab.measure.monitoring"
        )

    def prometheus_query(self, promql: str, at: float | None = None) -> list[Sample]:
        """Evaluate PromQL at Unix time `at` (default: now) on this cluster's Prometheus."""
        return prometheus.query(self.prometheus_url(), promql, at)

    def prometheus_query_range(
        self, promql: str, start: float, end: float, step: float = 1.0
    ) -> list[Series]:
        """Evaluate PromQL every `step` seconds between two Unix times."""
        return prometheus.query_range(self.prometheus_url(), promql, start, end, step)

    @abstractmethod
    def describe(self) -> str:
        """One line that says which backend this is and where it runs."""

    @abstractmethod
    def down(self) -> None:
        """Stop everything this cluster object started. Safe to call twice."""

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.down()


def connect(backend: str | None = None, **options: Any) -> Cluster:
    """Return a Cluster for `backend`, or for $GRPCLAB_BACKEND (default: sandbox)."""
    chosen = backend or os.environ.get("GRPCLAB_BACKEND", "sandbox")
    if chosen == "sandbox":
        from grpclab.cluster.sandbox import Sandbox

        return Sandbox(**options)
    if chosen in ("kind", "kubeconfig"):
        from grpclab.cluster.kube import KubeCluster

        return KubeCluster(backend=chosen, **options)
    raise ValueError(f"GRPCLAB_BACKEND={chosen!r} is not one of {', '.join(BACKENDS)}")
