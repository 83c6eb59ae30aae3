"""The embedded sandbox: Kubernetes objects in, real processes and data planes out.

Pods are demo-server processes on their own loopback IPs, kube-proxy is Envoy
tcp_proxy fed by grpclab's ADS server, and CoreDNS is grpclab's DNS server.
One controller thread plays the Deployment controller, the kubelet's prober and
the EndpointSlice controller.
"""

from __future__ import annotations

import atexit
import copy
import dataclasses
import hashlib
import json
import logging
import math
import os
import secrets
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, Any

import grpc

from grpclab.cluster import (
    DEFAULT_NAMESPACE,
    Cluster,
    Component,
    ManifestSource,
    Pod,
    Rollout,
)
from grpclab.cluster.containers import container_env, server_argv, server_flags
from grpclab.cluster.manifests import (
    check_sandbox_support,
    kubectl_ref,
    load_objects,
    override_namespace,
    refusal,
    source_label,
)
from grpclab.cluster.sandbox.addons import Addon, ClusterView, EndpointAddress
from grpclab.cluster.sandbox.addresses import AddressBlock, work_dir_of
from grpclab.cluster.sandbox.dns import CLUSTER_DOMAIN, ClusterDns
from grpclab.cluster.sandbox.envoy import EnvoyProxy, start_envoy
from grpclab.cluster.sandbox.pods import (
    DEFAULT_GRACE_SECONDS,
    LOCAL_ONLY,
    PodRuntime,
    due_probes,
    kill_container,
    probe_once,
    record_result,
    reset_for_start,
)
from grpclab.cluster.sandbox.processes import ProcessLauncher, python_module_argv
from grpclab.cluster.sandbox.topology import kube_proxy_endpoints
from grpclab.demo.server import POD_NETWORK_ENV
from grpclab.load import LoadResult, LoadSpec
from grpclab.paths import SRC
from grpclab.xds import LISTENER, Nack, XdsServer

if TYPE_CHECKING:
    from google.protobuf.message import Message

    from grpclab.cluster.sandbox.mesh import MeshAddon
from grpclab.xds.kube_proxy import NODE_ID as KUBE_PROXY_NODE
from grpclab.xds.kube_proxy import ServicePortEndpoints, kube_proxy_resources

# Start-up events at DEBUG (Envoy connected, a container started, a pod ready), each with
# its `start_event`: bench/bench_sandbox_start.py splits a start into its steps with them.
log = logging.getLogger(__name__)

Key = tuple[str, str, str]  # kind, namespace ("" for cluster-scoped), name
log = logging.getLogger(__name__)
CONTROL_INTERVAL_S = 0.05
# kubelet restarts a crashed container after a back-off that starts at 10 s;
# the sandbox starts at 0.5 s so that a drill in a notebook stays short.
RESTART_BACKOFF_S = 0.5


class SandboxDownError(RuntimeError):
    """The sandbox was shut down; every call after that gets this."""


class Sandbox(Cluster):
    """A Kubernetes-shaped cluster made of local processes. See DESIGN.md."""

    backend = "sandbox"

    def __init__(self, namespace: str | None = None) -> None:
        chosen = namespace or os.environ.get("GRPCLAB_NAMESPACE")
        self.namespace = chosen or DEFAULT_NAMESPACE
        # A namespace chosen for this cluster moves every object into it, as on the kube
        # backend, so one attendee's manifests never touch another's namespace.
        self._override_namespace = bool(chosen)
        self._lock = threading.RLock()
        self._publish_lock = threading.Lock()
        self._addon_lock = threading.Lock()
        self._wake = threading.Event()
        # Notified (under _lock) when a pod is created, turns ready or unready, or goes.
        self._pods_changed = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._objects: dict[Key, dict[str, Any]] = {}
        self._pods: dict[str, PodRuntime] = {}
        self._cluster_ips: dict[tuple[str, str], str] = {}
        self._unconfirmed: set[Key] = set()  # stored by an apply that may still be refused
        self._published: tuple[Any, ...] | None = None
        # The newest version of each resource type pushed to kube-proxy.
        self._pushed_versions: dict[str, int] = {}
        self._generation = 0  # bumped on every stored change, so addons see object edits
        self.addons: dict[str, Addon] = {}
        self._down = False
        self.block = AddressBlock()
        self.work_dir = work_dir_of(self.block.index)
        shutil.rmtree(self.work_dir, ignore_errors=True)
        self.work_dir.mkdir(parents=True)
        try:
            self.launcher = ProcessLauncher(self.work_dir)
            self._probe_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="grpclab-probe")
            self.dns = ClusterDns(self.block.node_ip)
            self.xds = XdsServer(self.block.node_ip)
            self.kube_proxy: EnvoyProxy = start_envoy(
                self.launcher,
                self.xds,
                "kube-proxy",
                KUBE_PROXY_NODE,
                self.block.node_ip,
                self.work_dir,
            )
            log.debug(
                "sandbox %d: kube-proxy (Envoy) connected",
                self.block.index,
                extra={"start_event": "envoy"},
            )
        except BaseException:
            self._teardown()
            raise
        self._controller = threading.Thread(
            target=self._control_loop, name=f"grpclab-sandbox-{self.block.index}", daemon=True
        )
        self._controller.start()
        atexit.register(self.down)

    # -- Cluster interface -------------------------------------------------------

    def describe(self) -> str:
        return (
            f"sandbox backend #{self.block.index}: pods are processes on "
            f"127.42.{self.block.index}.0/24, Services on 127.43.{self.block.index}.0/24; "
            f"kube-proxy is Envoy tcp_proxy, CoreDNS is grpclab's DNS at {self.dns.address}. "
            "For real Kubernetes set GRPCLAB_BACKEND=kind."
        )

    def apply(self, source: ManifestSource) -> list[str]:
        self._check_up()
        label = source_label(source)
        objects = load_objects(source, default_namespace=self.namespace)
        check_sandbox_support(objects, label)
        if self._override_namespace:
            objects = override_namespace(objects, self.namespace)
        with self._lock:
            self._check_against_state(objects, label)
            before = dict(self._objects), dict(self._cluster_ips)
            lines = [self._store(obj) for obj in objects]
            # No pods for these Deployments until kube-proxy has taken the Services too.
            keys = {_key(obj) for obj in objects}
            self._unconfirmed |= keys
        try:
            self._publish_services(wait=True)
        except BaseException:
            with self._lock:  # the data plane refused it: put the old state back
                taken = [ip for key, ip in self._cluster_ips.items() if key not in before[1]]
                self.block.put_back_service_ips(taken)
                self._objects, self._cluster_ips = before
                self._generation += 1
            self._publish_services(wait=False)
            raise
        finally:
            with self._lock:
                self._unconfirmed -= keys
        self._wake.set()
        return lines

    def delete(self, source: ManifestSource) -> list[str]:
        self._check_up()
        objects = load_objects(source, default_namespace=self.namespace)
        if self._override_namespace:
            objects = override_namespace(objects, self.namespace)
        lines = []
        with self._lock:
            for obj in objects:
                key = _key(obj)
                if key not in self._objects:
                    lines.append(f"{kubectl_ref(obj)} not found (skipped)")
                    continue
                if key[0] == "Namespace":
                    for other in [k for k in self._objects if k[1] == key[2]]:
                        self._forget(other)
                self._forget(key)
                lines.append(f"{kubectl_ref(obj)} deleted")
        self._publish_services(wait=True)
        self._wake.set()
        return lines

    def pods(
        self, selector: Mapping[str, str] | None = None, namespace: str | None = None
    ) -> list[Pod]:
        self._check_up()
        namespace = namespace or self.namespace
        with self._lock:
            return [
                _pod_view(p)
                for p in sorted(self._pods.values(), key=lambda p: p.name)
                if p.namespace == namespace and (not selector or _matches(selector, p.labels))
            ]

    def _rollout(self, deployment: str, namespace: str) -> Iterator[Rollout]:
        while True:
            self._check_up()
            with self._lock:
                spec = self._deployment(deployment, namespace)
                desired = spec["spec"].get("replicas", 1)
                current = _template_hash(spec)
                owned = [
                    p
                    for p in self._pods.values()
                    if p.owner == deployment and p.namespace == namespace
                ]
                fresh = [p for p in owned if p.template_hash == current and not p.terminating]
                stale = [p for p in owned if p.template_hash != current and not p.terminating]
                ready = [p for p in fresh if p.ready]
            if len(ready) == desired == len(fresh) and not stale:
                # Ready is not enough: return only once DNS and kube-proxy carry
                # these pods, so the caller's next RPC can reach every one of them.
                self._publish_services(wait=True)
                pods = [_pod_view(p) for p in sorted(ready, key=lambda p: p.name)]
                yield Rollout(len(ready), desired, pods=pods)
            yield Rollout(len(ready), desired, report=partial(self._pods_report, namespace, owned))
            with self._lock:  # until a pod changes (bounded: a change may come before this)
                self._pods_changed.wait(0.05)

    def scale(self, deployment: str, replicas: int, namespace: str | None = None) -> None:
        self._check_up()
        if not isinstance(replicas, int) or replicas < 0:
            raise ValueError(f"replicas must be a whole number >= 0, not {replicas!r}")
        with self._lock:
            spec = copy.deepcopy(self._deployment(deployment, namespace or self.namespace))
            spec["spec"]["replicas"] = replicas
            check_sandbox_support([spec], f"scale deployment/{deployment}")
            self._objects[_key(spec)] = spec
        self._wake.set()

    def delete_pod(self, name: str, namespace: str | None = None) -> None:
        self._check_up()
        with self._lock:
            pod = self._pods.get(name)
            if pod is None or pod.namespace != (namespace or self.namespace):
                raise KeyError(f'pod "{name}" not found in namespace {namespace or self.namespace}')
            self._terminate(pod)
        self._wake.set()

    def _target(self, service: str, port: int | str, namespace: str, via: str) -> str:
        self._check_up()
        with self._lock:
            obj = self._objects.get(("Service", namespace, service))
            if obj is None:
                raise KeyError(f'service "{service}" not found in namespace {namespace}')
            number = _service_port(obj, port)
            if via == "dns":
                return f"dns://{self.dns.address}/{service}.{namespace}.{CLUSTER_DOMAIN}:{number}"
            if via == "clusterip":
                ip = self._cluster_ips.get((namespace, service))
                if ip is None:
                    raise ValueError(
                        f"service {namespace}/{service} is headless: it has no cluster IP"
                    )
                return f"{ip}:{number}"
            if via == "addresses":
                return _ready_addresses(obj, number, self._view().endpoints[(namespace, service)])
            addons = list(self.addons.values())
        # Istio's sidecar, ztunnel and proxyless xDS join on first use: a sandbox that never
        # asks for them runs nothing extra.
        if via == "mesh":
            self._mesh_sidecar()
            addons = list(self.addons.values())
        elif via == "ambient":
            from grpclab.cluster.sandbox.catalog import addon_for_via

            addon_for_via(self, via)  # ztunnel runs on every node of an ambient cluster
            addons = list(self.addons.values())
        elif via == "xds" and via not in self.addons:
            from grpclab.cluster.sandbox.proxyless import ProxylessAddon

            self.add_addon(ProxylessAddon(self))
            addons = list(self.addons.values())
        for addon in addons:
            found = addon.target(service, number, namespace, via)
            if found is not None:
                return found
        owned = ", ".join(["dns", "clusterip", "addresses", *sorted(self.addons)])
        raise ValueError(f"via={via!r} is not a way to reach a Service here (known: {owned})")

    def run_load(
        self, spec: LoadSpec, on_progress: Callable[[LoadResult], None] | None = None
    ) -> LoadResult:
        from grpclab.load import run

        self._check_up()
        mesh = self.addons.get("mesh")
        admin = mesh.admin_for(spec.target) if mesh is not None else None
        if spec.proxy_admin is None and admin is not None:
            # The notebook's client is in the mesh: like a pod's app container, it can read
            # its sidecar's counters (an Istio Job's load reads 127.0.0.1:15000 the same way).
            spec = dataclasses.replace(spec, proxy_admin=admin)
        return run(spec, on_progress)

    def set_fault(self, pod: str, namespace: str | None = None, **fault: Any) -> dict[str, Any]:
        from google.protobuf.json_format import MessageToDict

        from grpclab.demo._generated import admin_pb2, admin_pb2_grpc

        self._check_up()
        with self._lock:
            runtime = self._pod_runtime(pod, namespace)
            address = f"{runtime.ip}:{runtime.grpc_port}"
        with grpc.insecure_channel(address, options=LOCAL_ONLY) as channel:
            reply = admin_pb2_grpc.AdminStub(channel).SetFault(admin_pb2.Fault(**fault), timeout=5)
        return MessageToDict(
            reply, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )

    def crash_pod(self, pod: str, namespace: str | None = None) -> None:
        """SIGKILL the pod's server process; the sandbox's kubelet restarts it in place."""
        self._check_up()
        with self._lock:
            runtime = self._pod_runtime(pod, namespace)
            if runtime.process is None:  # between a crash and its restart: nothing to kill
                raise KeyError(f'pod "{pod}" not found in namespace {runtime.namespace}')
            os.kill(runtime.process.pid, signal.SIGKILL)

    def freeze_pod(self, pod: str, namespace: str | None = None) -> None:
        """SIGSTOP the pod's process group: its sockets stay open, nothing answers on them."""
        self._signal_pod(pod, namespace, signal.SIGSTOP)

    def thaw_pod(self, pod: str, namespace: str | None = None) -> None:
        """SIGCONT the pod's process group."""
        self._signal_pod(pod, namespace, signal.SIGCONT)

    def _signal_pod(self, pod: str, namespace: str | None, sig: signal.Signals) -> None:
        self._check_up()
        with self._lock:
            runtime = self._pod_runtime(pod, namespace)
            try:
                if runtime.process is None:
                    raise ProcessLookupError
                self.launcher.signal_group(runtime.process, sig)
            except ProcessLookupError:  # between a crash and its restart: nothing runs
                raise KeyError(
                    f'pod "{pod}" has no running container in namespace {runtime.namespace}'
                ) from None

    def local_address(
        self, pod: str, port: int | str = "grpc", namespace: str | None = None
    ) -> str:
        """The pod's own loopback address: this process reaches it directly, no forward."""
        self._check_up()
        namespace = namespace or self.namespace
        with self._lock:
            runtime = self._pod_runtime(pod, namespace)
            address = _address(runtime)
            declared = runtime.container.get("ports", [])
        number = address.ports.get(str(port))
        if number is None and isinstance(port, int):
            number = port  # an undeclared port may still be open, as kubectl forwards it too
        if number is None:
            have = ", ".join(
                f"{p.get('name') or '(unnamed)'}={p['containerPort']}" for p in declared
            )
            raise KeyError(
                f"pod {namespace}/{pod} has no container port {port!r} (it has {have or 'none'})"
            )
        return f"{address.ip}:{number}"

    def local_target(self, target: str) -> str:
        """The target itself: every address the sandbox hands out is on this machine."""
        self._check_up()
        return target

    def mesh_config_dump(self) -> dict[str, Any]:
        """The /config_dump of the notebook client's sidecar Envoy (started on first use)."""
        self._check_up()
        return self._mesh_sidecar().config_dump()

    def _mesh_sidecar(self) -> MeshAddon:
        """Istio's stand-in, started once, whichever asks first: install_addon, target or dump."""
        from grpclab.cluster.sandbox.catalog import addon_for_via, installed

        return installed(self, addon_for_via(self, "mesh"))

    def xds_resources(self, type_url: str) -> dict[str, Message]:
        """What grpclab's xDS server serves the notebook's proxyless client, by name."""
        return self.xds.resources(self._proxyless_node(), type_url)

    def xds_nacks(self) -> list[Nack]:
        node = self._proxyless_node()
        return [nack for nack in self.xds.nacks if nack.node_id == node]

    def stop_xds(self) -> None:
        """Stop grpclab's xDS server: the proxyless client and kube-proxy's Envoy keep what
        they last got."""
        self._check_up()
        self.xds.stop()

    def _proxyless_node(self) -> str:
        self._check_up()
        addon = self.addons.get("xds")
        if addon is None:
            raise ValueError(
                'no proxyless xDS client here yet: call target(service, via="xds") first'
            )
        return addon.node_id

    def component(self, name: str) -> Component:
        """What plays `name` here (Envoy for kube-proxy, say) and its resident memory now."""
        from grpclab.cluster.sandbox.components import component

        self._check_up()
        return component(self, name)

    def prometheus_url(self) -> str:
        """The sandbox's Prometheus (started on first use), scraping every pod's metrics port."""
        from grpclab.cluster.sandbox.prometheus import PrometheusAddon

        self._check_up()
        with self._addon_lock:  # one Prometheus, however many cells ask at once
            addon = self.addons.get(PrometheusAddon.name)
            if addon is None:
                addon = PrometheusAddon(self.launcher, self.block.node_ip, self.work_dir)
                self.add_addon(addon)
        return addon.url

    def install_addon(self, name: str) -> str:
        """Start the stand-in for add-on `name` (once); one line says what it is."""
        from grpclab.cluster.sandbox.catalog import install

        self._check_up()
        return install(self, name)

    def describe_addon(self, name: str) -> str:
        """What the stand-in for `name` serves right now (routes, addresses, mappings)."""
        from grpclab.cluster.sandbox.catalog import describe

        self._check_up()
        return describe(self, name)

    def logs(self, pod: str, namespace: str | None = None, tail: int = 20) -> str:
        """The last lines the pod's server printed (every run of its container, in order)."""
        self._check_up()
        with self._lock:
            self._pod_runtime(pod, namespace)  # KeyError for a pod that is not there
        path = self.work_dir / f"{pod}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-tail:])

    def down(self) -> None:
        with self._lock:
            if self._down:
                return
            self._down = True
        atexit.unregister(self.down)
        self._stopping.set()
        self._wake.set()
        if self._controller.is_alive():
            self._controller.join(timeout=5)
        self._teardown()

    # -- state -------------------------------------------------------------------

    def _check_up(self) -> None:
        if self._down:
            raise SandboxDownError(
                "this sandbox was shut down (down() was called); "
                "run grpclab.connect() for a new one"
            )

    def _check_against_state(self, objects: list[dict], label: str) -> None:
        """The rules the API server enforces across objects, before anything is stored."""
        namespaces = {k[2] for k in self._objects if k[0] == "Namespace"} | {"default"}
        namespaces |= {o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"}
        for index, obj in enumerate(objects):
            namespace = obj["metadata"].get("namespace")
            if obj["kind"] != "Namespace" and namespace not in namespaces:
                reason = f'namespace "{namespace}" not found (apply a Namespace first)'
                raise refusal(obj, label, index, reason, ("metadata", "namespace"))
            old = self._objects.get(_key(obj))
            if old is None:
                continue
            if obj["kind"] == "Deployment" and old["spec"]["selector"] != obj["spec"]["selector"]:
                raise refusal(obj, label, index, "field is immutable", ("spec", "selector"))
            if obj["kind"] == "Service":
                _keep_cluster_ip(old, obj, label, index)

    def _store(self, obj: dict) -> str:
        key = _key(obj)
        old = self._objects.get(key)
        self._objects[key] = obj
        self._generation += 1
        if obj["kind"] == "Service" and not _headless(obj) and key[1:] not in self._cluster_ips:
            self._cluster_ips[key[1:]] = self.block.take_service_ip()
        if old is None:
            return f"{kubectl_ref(obj)} created"
        return f"{kubectl_ref(obj)} {'unchanged' if old == obj else 'configured'}"

    def _forget(self, key: Key) -> None:
        obj = self._objects.pop(key)
        self._generation += 1
        if obj["kind"] == "Service" and key[1:] in self._cluster_ips:
            self.block.give_back_service_ip(self._cluster_ips.pop(key[1:]))

    def _pod_runtime(self, pod: str, namespace: str | None) -> PodRuntime:
        """The pod's runtime (the caller holds the lock); KeyError when it is not there."""
        namespace = namespace or self.namespace
        runtime = self._pods.get(pod)
        if runtime is None or runtime.namespace != namespace:
            raise KeyError(f'pod "{pod}" not found in namespace {namespace}')
        return runtime

    def _deployment(self, name: str, namespace: str) -> dict:
        obj = self._objects.get(("Deployment", namespace, name))
        if obj is None:
            raise KeyError(f'deployment "{name}" not found in namespace {namespace}')
        return obj

    # -- controllers ---------------------------------------------------------------

    def _control_loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self._until_next_probe())
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                with self._lock:
                    self._reconcile_deployments()
                    self._run_kubelet()
                    self._pods_changed.notify_all()
                self._publish_services(wait=False)
            except Exception as error:  # keep the cluster alive; say what went wrong
                log.warning("grpclab sandbox controller: %r", error)

    def _until_next_probe(self) -> float:
        """Seconds until a probe is due, at most CONTROL_INTERVAL_S (a round also notices
        exited containers, by polling them)."""
        with self._lock:
            running = [
                pod
                for pod in self._pods.values()
                if pod.process is not None and pod.process.poll() is None
            ]  # an exited container runs no probes until it is restarted
            due = [probe.next_due for pod in running for probe in due_probes(pod, math.inf)]
        if not due:
            return CONTROL_INTERVAL_S
        return min(CONTROL_INTERVAL_S, max(0.0, min(due) - time.monotonic()))

    def _reconcile_deployments(self) -> None:
        deployments = {k: o for k, o in self._objects.items() if k[0] == "Deployment"}
        wanted = {(k[1], k[2]) for k in deployments}
        for pod in list(self._pods.values()):
            if (pod.namespace, pod.owner) not in wanted and not pod.terminating:
                self._terminate(pod)
        for key, obj in deployments.items():
            if key in self._unconfirmed:
                continue  # its apply may still be refused: no pods until it is confirmed
            _, namespace, name = key
            current = _template_hash(obj)
            replicas = obj["spec"].get("replicas", 1)
            owned = [
                p
                for p in self._pods.values()
                if p.owner == name and p.namespace == namespace and not p.terminating
            ]
            fresh = [p for p in owned if p.template_hash == current]
            stale = [p for p in owned if p.template_hash != current]
            max_surge, max_unavailable = rolling_update_limits(obj)
            # RollingUpdate: at most replicas + maxSurge pods at any time...
            room = replicas + max_surge - len(owned) if stale else replicas - len(fresh)
            for _ in range(min(replicas - len(fresh), room)):
                self._create_pod(obj, current)
            # Scale down the newest first, like the ReplicaSet controller does
            # when pods are otherwise equal; unready pods go before ready ones.
            extra = sorted(fresh, key=lambda p: (p.ready, -p.started_at))[
                : max(0, len(fresh) - replicas)
            ]
            for pod in extra:
                self._terminate(pod)
            # ...and at least replicas - maxUnavailable of them ready: an old pod goes
            # only when enough others are ready, one step at a time (unready ones first).
            spare = sum(p.ready for p in owned) - (replicas - max_unavailable)
            for pod in sorted(stale, key=lambda p: p.ready):
                if pod.ready and spare <= 0:
                    break
                spare -= pod.ready
                self._terminate(pod)

    def _create_pod(self, deployment: dict, template_hash: str) -> None:
        template = deployment["spec"]["template"]
        name = f"{deployment['metadata']['name']}-{template_hash[:10]}-{secrets.token_hex(3)[:5]}"
        pod = PodRuntime(
            name=name,
            namespace=deployment["metadata"]["namespace"],
            owner=deployment["metadata"]["name"],
            template_hash=template_hash,
            labels=dict(template["metadata"].get("labels", {})),
            ip=self.block.take_pod_ip(),
            container=template["spec"]["containers"][0],
            grace_seconds=template["spec"].get(
                "terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS
            ),
        )
        self._pods[name] = pod
        self._start_container(pod)

    def _start_container(self, pod: PodRuntime) -> None:
        """Run the container as the kubelet would: the image's argv with the manifest's
        command, args and env; the server listens where those say, whatever containerPort says."""
        reset_for_start(pod, time.monotonic())
        env = container_env(pod.container, pod.fields)
        flags = server_flags(server_argv(pod.container, env))
        if flags is None:  # check_sandbox_support refused it at apply
            raise ValueError(f"pod {pod.name}: the container does not run grpclab.demo.server")
        process_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"),
            "HOSTNAME": pod.name,
            "PYTHONUNBUFFERED": "1",
            **env,
            # A pod runs the same grpclab as the notebook, installed or not.
            "PYTHONPATH": str(SRC),
            # The pod's network namespace: its server's "every interface" is the pod's IP.
            POD_NETWORK_ENV: pod.ip,
        }
        argv = python_module_argv("grpclab.demo.server", *flags)
        pod.process = self.launcher.start(pod.name, argv, env=process_env)
        log.debug("pod %s: container started", pod.name, extra={"start_event": "container"})

    def _terminate(self, pod: PodRuntime) -> None:
        """Mark the pod Terminating (out of endpoints at once) and stop it in the background."""
        if pod.terminating:
            return
        pod.terminating = True
        pod.ready = False

        def stop() -> None:
            if pod.process is not None:
                kill_container(self.launcher, pod, pod.process)
            with self._lock:
                if self._pods.get(pod.name) is pod:
                    del self._pods[pod.name]
                    self.block.give_back_pod_ip(pod.ip)

        threading.Thread(target=stop, name=f"grpclab-stop-{pod.name}", daemon=True).start()

    def _run_kubelet(self) -> None:
        now = time.monotonic()
        for pod in list(self._pods.values()):
            if pod.terminating or pod.killing or pod.process is None:
                continue
            if pod.process.poll() is not None:
                # The container died: kubelet restarts it in the same pod.
                if pod.restart_due is None:
                    pod.ready = False
                    pod.restart_due = now + RESTART_BACKOFF_S
                elif now >= pod.restart_due:
                    pod.restarts += 1
                    self._start_container(pod)
                continue
            for probe in due_probes(pod, now):
                probe.in_flight = True
                self._probe_pool.submit(self._probe, pod, probe)

    def _probe(self, pod: PodRuntime, probe) -> None:
        failure = probe_once(pod, probe)
        with self._lock:
            if pod.terminating or self._down:
                return
            was_ready = pod.ready
            if record_result(pod, probe, failure, time.monotonic()) != "restart":
                if pod.ready != was_ready:
                    self._pods_changed.notify_all()
                if pod.ready and not was_ready:
                    log.debug("pod %s: ready", pod.name, extra={"start_event": "ready"})
                self._wake.set()
                return
            # Out of endpoints at once; the stop itself (up to the grace period) runs
            # without the lock, so the rest of the cluster keeps working meanwhile.
            pod.killing, pod.ready = True, False
            process = pod.process
        self._wake.set()
        kill_container(self.launcher, pod, process)
        with self._lock:
            pod.killing = False
            if not pod.terminating and not self._down and pod.process is process:
                pod.restarts += 1
                self._start_container(pod)
        self._wake.set()

    # -- EndpointSlices, DNS and kube-proxy ---------------------------------------------

    def _publish_services(self, wait: bool) -> None:
        """Push ready endpoints to DNS, kube-proxy and every addon (EndpointSlice's job)."""
        # One publisher at a time: two interleaved publishes could leave the
        # older state in place after the newer one.
        with self._publish_lock:
            with self._lock:
                view = self._view()
                records, proxied = _dns_records_and_proxied_ports(view)
                state = (records, proxied, self._generation, view.pods)
                already = state == self._published
                pushed = dict(self._pushed_versions)
                self._published = state
                addons = list(self.addons.values())
            if already:
                # Published by an earlier publish that may not have waited (the
                # controller's): a caller who waits still waits until kube-proxy took it.
                if wait and pushed:
                    self._wait_for_kube_proxy(pushed)
                return
            self.dns.publish(records)
            versions = self.xds.set_resources(KUBE_PROXY_NODE, kube_proxy_resources(proxied))
            self._pushed_versions.update(versions)
            for addon in addons:
                addon.sync(view)
            if wait and versions:
                self._wait_for_kube_proxy(versions)

    def _wait_for_kube_proxy(self, versions: Mapping[str, int]) -> None:
        nacks_before = len(self.xds.nacks)
        if not self.xds.wait_acked(KUBE_PROXY_NODE, versions, timeout=10):
            raise RuntimeError("kube-proxy (Envoy) did not confirm the new Services within 10 s")
        refused = [n for n in self.xds.nacks[nacks_before:] if n.type_url == LISTENER]
        if refused:
            self._published = None
            raise RuntimeError(f"kube-proxy (Envoy) refused a Service: {refused[-1].message}")

    def _view(self) -> ClusterView:
        running = [p for p in self._pods.values() if not p.terminating and p.phase == "Running"]
        endpoints = {}
        for (kind, namespace, name), obj in self._objects.items():
            if kind == "Service":
                selector = obj["spec"].get("selector") or {}
                endpoints[(namespace, name)] = tuple(
                    _address(p)
                    for p in sorted(running, key=lambda p: p.ip)
                    if p.namespace == namespace and p.ready and _matches(selector, p.labels)
                )
        return ClusterView(
            objects=dict(self._objects),
            cluster_ips=dict(self._cluster_ips),
            endpoints=endpoints,
            pods=tuple(_address(p) for p in sorted(running, key=lambda p: p.ip)),
        )

    def add_addon(self, addon: Addon) -> None:
        """Plug in a feature (mesh, gateway, Prometheus); it syncs at once and on every change."""
        with self._lock:
            self.addons[addon.name] = addon
            self._published = None
        self._publish_services(wait=False)

    def _pods_report(self, namespace: str, owned: list) -> str:
        """Pod by pod, as `kubectl describe` would: phase, readiness, failing probes, logs."""
        lines = []
        for pod in owned:
            lines.append(
                f"  {pod.name} {pod.ip} {pod.phase} ready={pod.ready} restarts={pod.restarts}"
            )
            # What `kubectl describe pod` shows in its events: the probe that keeps failing.
            for probe in pod.probes.values():
                if probe.failures:
                    lines.append(
                        f"    {probe.describe()} failed {probe.failures} time(s) in a row: "
                        f"{probe.last_failure}"
                    )
            try:
                lines.append(
                    "    " + self.logs(pod.name, namespace, tail=5).replace("\n", "\n    ")
                )
            except KeyError:
                pass
        return "\n".join(lines) or "  (no pods)"

    def _teardown(self) -> None:
        for addon in list(getattr(self, "addons", {}).values()):
            addon.stop()
        launcher = getattr(self, "launcher", None)
        if launcher is not None:
            launcher.stop_all(grace=2.0)
        for part in ("xds", "dns"):
            server = getattr(self, part, None)
            if server is not None:
                server.stop()
        pool = getattr(self, "_probe_pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        # The directory goes while the block is still held: once released, a sandbox
        # starting in another process may take the block and make its own work dir of the
        # same name, which a later rmtree would delete under it.
        shutil.rmtree(self.work_dir, ignore_errors=True)
        self.block.release()


def _dns_records_and_proxied_ports(
    view: ClusterView,
) -> tuple[dict[str, tuple[str, ...]], list[ServicePortEndpoints]]:
    records: dict[str, tuple[str, ...]] = {}
    proxied: list[ServicePortEndpoints] = []
    for service in view.of_kind("Service"):
        namespace, name = service["metadata"]["namespace"], service["metadata"]["name"]
        backends = view.endpoints[(namespace, name)]
        fqdn = f"{name}.{namespace}.{CLUSTER_DOMAIN}"
        if _headless(service):
            records[fqdn] = tuple(sorted(b.ip for b in backends))
            continue
        cluster_ip = view.cluster_ips[(namespace, name)]
        records[fqdn] = (cluster_ip,)
        # kube-proxy on the client's node: trafficDistribution's zone hints narrow it down.
        backends = kube_proxy_endpoints(service, backends)
        for port in service["spec"]["ports"]:
            endpoints = tuple(
                sorted(
                    (b.ip, b.target_port(port)) for b in backends if b.target_port(port) is not None
                )
            )
            proxied.append(
                ServicePortEndpoints(namespace, name, cluster_ip, port["port"], endpoints)
            )
    return records, proxied


def _address(pod: PodRuntime) -> EndpointAddress:
    ports = {}
    for port in pod.container.get("ports", []):
        ports[str(port["containerPort"])] = port["containerPort"]
        if port.get("name"):
            ports[port["name"]] = port["containerPort"]
    return EndpointAddress(pod.name, pod.ip, ports, dict(pod.labels))


def _key(obj: Mapping[str, Any]) -> Key:
    meta = obj["metadata"]
    return (
        obj["kind"],
        meta.get("namespace", "") if obj["kind"] != "Namespace" else "",
        meta["name"],
    )


def _headless(service: Mapping[str, Any]) -> bool:
    return service["spec"].get("clusterIP") == "None"


def _keep_cluster_ip(old: Mapping[str, Any], new: dict, label: str, index: int) -> None:
    """What the API server does with clusterIP when a Service is updated.

    An update that leaves clusterIP out keeps the live one, "None" included
    (patchAllocatedValues, kubernetes pkg/registry/core/service/storage/alloc.go), so a
    headless Service stays headless. One that names another value is refused: the first
    cluster IP never changes once set.
    """
    spec = new["spec"]
    if not spec.get("clusterIP") and not spec.get("clusterIPs"):
        if _headless(old):
            spec["clusterIP"] = "None"
        return
    wrote = "clusterIP" if spec.get("clusterIP") else "clusterIPs"
    value = spec.get("clusterIP") or spec["clusterIPs"][0]
    if _headless(old) != (value == "None"):
        before = "None" if _headless(old) else "its assigned cluster IP"
        raise refusal(
            new,
            label,
            index,
            f'spec.clusterIPs[0]: Invalid value: ["{value}"]: may not change once set '
            f"(it is {before})",
            ("spec", wrote) if wrote == "clusterIP" else ("spec", wrote, 0),
            "delete the Service, then apply it again, to make it headless or not",
        )


def _matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    # An empty selector selects nothing, as a Service without one gets no endpoints.
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def rolling_update_limits(deployment: Mapping[str, Any]) -> tuple[int, int]:
    """maxSurge and maxUnavailable as pod counts, rounded as Kubernetes does (25% each)."""
    replicas = deployment["spec"].get("replicas", 1)
    rolling = (deployment["spec"].get("strategy") or {}).get("rollingUpdate") or {}

    def count(value: int | str, round_up: bool) -> int:
        if isinstance(value, int):
            return value
        share = replicas * int(value.rstrip("%")) / 100
        return math.ceil(share) if round_up else math.floor(share)

    surge = count(rolling.get("maxSurge", "25%"), round_up=True)
    unavailable = count(rolling.get("maxUnavailable", "25%"), round_up=False)
    # Both 0 would never make progress; Kubernetes then allows one unavailable pod.
    return surge, unavailable if surge or unavailable else 1


def _template_hash(deployment: Mapping[str, Any]) -> str:
    text = json.dumps(deployment["spec"]["template"], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _service_port(service: Mapping[str, Any], port: int | str) -> int:
    for item in service["spec"]["ports"]:
        if port in (item.get("name"), item["port"]) or str(port) == str(item["port"]):
            return item["port"]
    names = ", ".join(f"{p.get('name', '')}={p['port']}" for p in service["spec"]["ports"])
    raise KeyError(f"service {service['metadata']['name']} has no port {port!r} (it has {names})")


def _ready_addresses(
    service: Mapping[str, Any], number: int, ready: Sequence[EndpointAddress]
) -> str:
    """`ipv4:ip:port,...`: the ready pods behind one Service port, as its EndpointSlice has them."""
    item = next(p for p in service["spec"]["ports"] if p["port"] == number)
    found = [f"{b.ip}:{b.target_port(item)}" for b in ready if b.target_port(item) is not None]
    if not found:
        meta = service["metadata"]
        raise ValueError(f"service {meta['namespace']}/{meta['name']} has no ready endpoints")
    return "ipv4:" + ",".join(found)


def _pod_view(pod: PodRuntime) -> Pod:
    return Pod(
        pod.name, pod.namespace, pod.ip, pod.ready, pod.phase, pod.restarts, dict(pod.labels)
    )
