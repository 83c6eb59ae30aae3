"""KubeCluster: the Cluster interface on real Kubernetes (a kind cluster, or any context).

Objects go in by server-side apply through the official client; load runs as a Job
(jobs.py), fault knobs through the server's Admin API in its pod (admin.py), and only
what this process must reach goes through a port-forward (port_forward.py).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any, Literal

from grpclab.cluster import DEFAULT_NAMESPACE, Cluster, ManifestSource, Pod, Rollout
from grpclab.cluster.kube.addons import (
    ADDON_FOR_GROUP,
    ADDON_FOR_VIA,
    PROMETHEUS_PORT,
    PROMETHEUS_SERVICE,
    addon_hint,
    install_addon,
)
from grpclab.cluster.kube.admin import (
    crash_exec_command,
    crashed_since,
    exec_in_pod,
    fault_exec_command,
    server_address,
    server_containers,
)
from grpclab.cluster.kube.diagnostics import deployment_report
from grpclab.cluster.kube.errors import (
    KubeError,
    api_error_message,
    api_exception,
    missing_as_key_error,
    status_code,
)
from grpclab.cluster.kube.jobs import (
    DEFAULT_IMAGE,
    JOB_START_TIMEOUT_S,
    MESH_CLIENT,
    LoadJobs,
    is_tool_pod,
    mesh_client_manifest,
)
from grpclab.cluster.kube.notes import Waiting
from grpclab.cluster.kube.objects import (
    FIELD_MANAGER,
    apply_outcome,
    container_port,
    current_replicaset,
    is_headless,
    pod_from_model,
    progress_deadline_exceeded,
    replicaset_pods,
    rollout_status,
    service_port,
)
from grpclab.cluster.kube.port_forward import PortForwards
from grpclab.cluster.kube.targets import (
    KubeTarget,
    check_via,
    front_target,
    ready_addresses,
    service_of_target,
    service_target,
)
from grpclab.cluster.manifests import (
    ManifestError,
    kubectl_ref,
    load_objects,
    override_namespace,
    source_label,
)
from grpclab.load import LoadResult, LoadSpec

KIND_CLUSTER = "grpclab"
KIND_CONTEXT = f"kind-{KIND_CLUSTER}"


def resolve_namespace(namespace: str | None = None) -> str:
    """The namespace argument, else $GRPCLAB_NAMESPACE, else `production`."""
    return namespace or os.environ.get("GRPCLAB_NAMESPACE") or DEFAULT_NAMESPACE


def in_cluster() -> bool:
    return (
        bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
        and Path("/var/run/secrets/kubernetes.io/serviceaccount/token").exists()
    )


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
        import urllib3
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
            if context is None and kubeconfig is None and in_cluster():
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
        self._forwards = PortForwards(
            None if self.context == "in-cluster" else self.context, kubeconfig
        )
        try:
            client.VersionApi(self._api).get_code(_request_timeout=10)
        except api_exception() as error:  # it answered, with a refusal
            host = self._api.configuration.host
            self._api.close()
            code, message = status_code(error), api_error_message(error)
            if code in (401, 403):
                raise KubeError(
                    f"the API server of context {self.context} at {host} refused these "
                    f"credentials ({code}: {message}); check the user of that context "
                    "(`kubectl config view --minify`)"
                ) from None
            raise KubeError(
                f"the API server of context {self.context} at {host} failed ({code}: {message})"
            ) from None
        except urllib3.exceptions.HTTPError as error:  # no answer: refused, timed out, TLS
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
            except api_exception() as error:
                if status_code(error) == 404:
                    lines.append(f"{kubectl_ref(obj)} not found (skipped)")
                    continue
                if status_code(error) == 403 and obj["kind"] == "Namespace":
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

    def _rollout(self, deployment: str, namespace: str) -> Iterator[Rollout]:
        waiting = Waiting(f"deployment {namespace}/{deployment}")
        while True:
            obj = self._read_deployment(deployment, namespace)
            ready, desired, done = rollout_status(obj)
            stuck = progress_deadline_exceeded(obj)
            if stuck:
                report = deployment_report(self._core, obj)
                error = KubeError(f"deployment {namespace}/{deployment}: {stuck}\n{report}")
                yield Rollout(ready, desired, failure=error)
            # The pod list can trail the Deployment status by a moment; wait until it agrees.
            live = self._current_pods(obj) if done else None
            if live is not None and len(live) == desired:
                waiting.finish(f"{desired}/{desired} ready")
                yield Rollout(ready, desired, pods=live)
            waiting.update(f"{ready}/{desired} ready")
            yield Rollout(ready, desired, report=partial(deployment_report, self._core, obj))
            time.sleep(self.poll_interval)

    def scale(self, deployment: str, replicas: int, namespace: str | None = None) -> None:
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise ValueError(f"replicas must be a whole number >= 0, not {replicas!r}")
        namespace = namespace or self.namespace
        with missing_as_key_error("deployment", deployment, namespace):
            self._apps.patch_namespaced_deployment_scale(
                deployment, namespace, {"spec": {"replicas": replicas}}
            )

    def delete_pod(self, name: str, namespace: str | None = None) -> None:
        namespace = namespace or self.namespace
        with missing_as_key_error("pod", name, namespace):
            self._core.delete_namespaced_pod(name, namespace)

    def _target(self, service: str, port: int | str, namespace: str, via: str) -> str:
        """An in-cluster target for the load Job; see KubeTarget for what `via` changes.

        "dns"/"clusterip": the Service's name, through the client's balancer or the cluster IP.
        "addresses": `ipv4:` with the pod IPs of its ready EndpointSlice endpoints, for now.
        "mesh"/"linkerd": the Service's name, with the client's Istio or Linkerd proxy.
        "ambient": the Service's name, the client's pod enrolled in ztunnel.
        "xds": `xds:///name...` for proxyless gRPC with Istio's gRPC agent.
        "ingress"/"traefik"/"gateway": the controller's Service that routes to `service`.
        """
        check_via(via)
        with missing_as_key_error("service", service, namespace):
            obj = self._core.read_namespaced_service(service, namespace)
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
        if via == "ambient":
            self._check_ztunnel()
            self._check_ambient_namespace(namespace)
            self._wait_for_waypoint(obj, namespace)
        if via in ("mesh", "linkerd", "ambient"):
            return KubeTarget(host, via)
        if via == "xds":
            return KubeTarget(f"xds:///{host}", via)
        objects = partial(self._list, namespace=namespace)
        return front_target(via, service, namespace, objects, self._core)

    def run_load(
        self, spec: LoadSpec, on_progress: Callable[[LoadResult], None] | None = None
    ) -> LoadResult:
        jobs = LoadJobs(
            self._core,
            self._batch,
            self.namespace,
            self.image,
            start_timeout=self.start_timeout,
            poll_interval=self.poll_interval,
        )
        return jobs.run(spec, self.load_timeout, on_progress)

    def set_fault(self, pod: str, namespace: str | None = None, **fault: Any) -> dict[str, Any]:
        out = self._admin_exec(
            pod, namespace, lambda at: fault_exec_command(at, fault), "set_fault"
        )
        return json.loads(out.strip().splitlines()[-1])

    def freeze_pod(self, pod: str, namespace: str | None = None) -> None:
        raise NotImplementedError(freeze_refusal(pod, namespace or self.namespace))

    def thaw_pod(self, pod: str, namespace: str | None = None) -> None:
        raise NotImplementedError(freeze_refusal(pod, namespace or self.namespace))

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
        except api_exception() as error:
            raise KubeError(f"logs of pod {namespace}/{pod}: {api_error_message(error)}") from None
        return text.rstrip("\n")

    def local_address(
        self, pod: str, port: int | str = "grpc", namespace: str | None = None
    ) -> str:
        namespace = namespace or self.namespace
        obj = self._read_pod(pod, namespace)
        return self._forwards.address(f"pod/{pod}", container_port(obj, port), namespace)

    def local_target(self, target: str) -> str:
        namespace, service, port = service_of_target(target)
        return self._forwards.address(f"svc/{service}", port, namespace)

    def prometheus_url(self) -> str:
        """Prometheus from cluster/addons/prometheus.sh (installed on first use), forwarded."""
        namespace, name = PROMETHEUS_SERVICE
        if not self._deployment_exists(name, namespace):
            self.install_addon("prometheus")
        return "http://" + self._forwards.address(f"svc/{name}", PROMETHEUS_PORT, namespace)

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
            out = exec_in_pod(
                self._core,
                pod,
                "istio-proxy",
                ["pilot-agent", "request", "GET", "config_dump"],
                self.namespace,
            )
        finally:
            # Gone again at once: later cells that list or fault every pod see servers only.
            self.delete(client)
        return json.loads(out)

    def down(self) -> None:
        # Nothing is deleted: the cluster outlives the notebook. The client closes and the
        # port-forwards this object started stop.
        forwards = getattr(self, "_forwards", None)
        if forwards is not None:
            forwards.stop()
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

    def _read_pod(self, name: str, namespace: str) -> Any:
        with missing_as_key_error("pod", name, namespace):
            return self._core.read_namespaced_pod(name, namespace)

    def _wait_for_waypoint(self, service: Any, namespace: str, timeout: float = 180.0) -> None:
        """Return once the waypoint a Service is bound to has a ready pod, as the sandbox's
        target returns once its waypoint listens: istiod deploys one per Gateway, same name."""
        labels = service.metadata.labels or {}
        name = labels.get("istio.io/use-waypoint")
        if name is None:
            name = (self._core.read_namespace(namespace).metadata.labels or {}).get(
                "istio.io/use-waypoint"
            )
        if name in (None, "", "none"):
            return
        deadline = time.monotonic() + timeout
        while True:
            try:
                status = self._apps.read_namespaced_deployment(name, namespace).status
                if status.ready_replicas:
                    return
            except api_exception() as error:
                if status_code(error) != 404:
                    raise
            if time.monotonic() > deadline:
                raise KubeError(
                    f"service {namespace}/{service.metadata.name} is bound to waypoint {name}, "
                    f"and deployment {namespace}/{name} has no ready pod after {timeout:.0f} s: "
                    f"is the Gateway applied (cluster/manifests/ambient/waypoint.yaml) and "
                    f"Programmed (kubectl -n {namespace} get gateway {name})?"
                )
            time.sleep(1.0)

    def _check_ztunnel(self) -> None:
        """istiod alone is not ambient: a sidecar profile's istiod has no ztunnel, and a pod
        labelled for ambient would then call the Service directly, unmeshed, unnoticed."""
        try:
            self._apps.read_namespaced_daemon_set("ztunnel", "istio-system")
        except api_exception() as error:
            if status_code(error) != 404:
                raise
            raise KubeError(
                "via='ambient' needs Istio's ambient profile, and this cluster's istiod has "
                "no ztunnel DaemonSet in istio-system (a sidecar profile, as istio.sh "
                "installs): use a cluster of its own for ambient, then "
                + addon_hint("istio-ambient")
            ) from None

    def _check_ambient_namespace(self, namespace: str) -> None:
        """The sandbox's rule, here too: ztunnel carries the client only in a labelled namespace."""
        labels = self._core.read_namespace(namespace).metadata.labels or {}
        if labels.get("istio.io/dataplane-mode") != "ambient":
            raise ValueError(
                f"namespace {namespace} is not in the ambient mesh: label it "
                "istio.io/dataplane-mode=ambient (apply cluster/manifests/ambient/"
                "namespace.yaml), as Istio needs before ztunnel carries its pods' traffic"
            )

    def _deployment_exists(self, name: str, namespace: str) -> bool:
        """Whether an add-on's Deployment is there. A 403 is not an answer: it is raised."""
        try:
            self._apps.read_namespaced_deployment(name, namespace)
        except api_exception() as error:
            if status_code(error) == 404:
                return False
            if status_code(error) == 403:
                raise KubeError(
                    f"cannot tell whether deployment {namespace}/{name} exists: your "
                    f"credentials may not read deployments in {namespace} (403: "
                    f"{api_error_message(error)}). Ask the cluster's admin whether the add-on "
                    "is installed."
                ) from None
            raise
        return True

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
            return exec_in_pod(self._core, pod, server_containers(obj)[0].name, command, namespace)
        except KubeError as error:
            raise KubeError(f"{action} on pod {namespace}/{pod}: {error}") from None

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
        except api_exception() as error:
            if status_code(error) == 404:
                return None
            if status_code(error) == 403 and obj["kind"] == "Namespace":
                return {}
            if status_code(error) == 403:
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
        except api_exception() as error:
            if status_code(error) == 403 and obj["kind"] == "Namespace":
                # One namespace per attendee: the instructor made it; we may only use it.
                return None
            if status_code(error) == 422:
                # Invalid: the manifest's fault; the message names the field.
                raise ManifestError(
                    label, api_error_message(error), object=kubectl_ref(obj)
                ) from None
            raise KubeError(
                f"{label}: {kubectl_ref(obj)}: the API server refused it: "
                + api_error_message(error)
            ) from None
        return applied.to_dict()

    def _read_deployment(self, name: str, namespace: str) -> Any:
        with missing_as_key_error("deployment", name, namespace):
            return self._apps.read_namespaced_deployment(name, namespace)

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


def freeze_refusal(pod: str, namespace: str) -> str:
    """Why the kube backend does not freeze pods, and how to do it by hand (kind-review.md)."""
    return (
        f"freeze_pod/thaw_pod of {namespace}/{pod}: not done on a real cluster. SIGSTOP must "
        "come from outside the container: from inside (kubectl exec) the server is its PID "
        "namespace's init, and the kernel drops signals it has no handler for, SIGSTOP "
        "always. By hand, on a node you may debug: `kubectl debug node/NODE -it "
        "--image=busybox --profile=sysadmin`, find the server by its container ID in "
        "/proc/*/cgroup, `kill -STOP PID` (later `kill -CONT PID`); on kind, `docker pause` "
        "of a worker node freezes a whole node instead. Notebook 12 runs on the sandbox; "
        "see docs/kind-review.md, 'Freezing a pod'"
    )
