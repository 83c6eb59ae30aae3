"""Pods of the sandbox: one demo-server process each, plus kubelet-style probes."""

from __future__ import annotations

import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from subprocess import Popen, TimeoutExpired
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from grpclab.cluster.containers import (
    MINIMUM_GRACE_SECONDS,
    listening_ports,
    prestop_sleep_seconds,
)

if TYPE_CHECKING:
    from grpclab.cluster.sandbox.processes import ProcessLauncher

# Kubernetes' defaults for a probe's unset fields.
PROBE_DEFAULTS = {
    "initialDelaySeconds": 0,
    "periodSeconds": 10,
    "timeoutSeconds": 1,
    "successThreshold": 1,
    "failureThreshold": 3,
}
DEFAULT_GRACE_SECONDS = 30
# Channel options for the sandbox's own calls to pods: a private subchannel pool, so
# the prober's connection is never shared with (and counted as) the learner's client
# traffic, and no HTTP proxy, which a laptop's $http_proxy would otherwise put
# between a kubelet and its pods.
LOCAL_ONLY = [("grpc.use_local_subchannel_pool", 1), ("grpc.enable_http_proxy", 0)]


@dataclass
class ProbeState:
    """One probe of one container: its settings and its run of results."""

    kind: str  # readiness, liveness, startup
    spec: Mapping[str, Any]
    next_due: float = 0.0
    successes: int = 0
    failures: int = 0
    in_flight: bool = False
    last_failure: str = ""  # the latest failure, worded as kubelet's probe events word it

    def setting(self, name: str) -> float:
        return self.spec.get(name, PROBE_DEFAULTS[name])

    def describe(self) -> str:
        """ "readiness probe (grpc port 9090)", as a rollout report names it."""
        handler = "grpc" if "grpc" in self.spec else "tcpSocket"
        return f"{self.kind} probe ({handler} port {self.spec[handler]['port']})"


@dataclass
class PodRuntime:
    """What the sandbox knows of one pod; the process is its only container."""

    name: str
    namespace: str
    owner: str  # the Deployment's name
    template_hash: str
    labels: dict[str, str]
    ip: str
    container: Mapping[str, Any]
    grace_seconds: float
    process: Popen | None = None
    started_at: float = 0.0
    restarts: int = 0
    ready: bool = False
    started: bool = False  # the startup probe passed (or there is none)
    terminating: bool = False
    killing: bool = False  # a failed liveness or startup probe is stopping the container
    restart_due: float | None = None
    probes: dict[str, ProbeState] = field(default_factory=dict)

    def container_port(self, ref: int | str) -> int | None:
        """Resolve a port number or a containerPort name, as kubelet does."""
        if isinstance(ref, int):
            return ref
        if isinstance(ref, str) and ref.isdigit():
            return int(ref)
        for port in self.container.get("ports", []):
            if port.get("name") == ref:
                return port["containerPort"]
        return None

    @property
    def fields(self) -> dict[str, str]:
        """The Downward API fields the sandbox fills in (manifests.SANDBOX_FIELD_REFS)."""
        return {
            "metadata.name": self.name,
            "metadata.namespace": self.namespace,
            "status.podIP": self.ip,
        }

    @property
    def grpc_port(self) -> int:
        """Where the server listens, from its own flags, env and defaults (not containerPort)."""
        ports = listening_ports(self.container, self.fields)
        if ports is None:  # apply refuses such a container; a pod never has one
            raise ValueError(f"pod {self.name} does not run the demo server")
        return ports["grpc"]

    @property
    def phase(self) -> str:
        if self.terminating:
            return "Terminating"
        if self.process is not None and self.process.poll() is None:
            return "Running"
        return "Pending"


def new_probes(container: Mapping[str, Any], now: float) -> dict[str, ProbeState]:
    probes = {}
    for kind in ("startup", "readiness", "liveness"):
        spec = container.get(f"{kind}Probe")
        if spec:
            probe = ProbeState(kind, spec)
            probe.next_due = now + probe.setting("initialDelaySeconds")
            probes[kind] = probe
    return probes


def probe_once(pod: PodRuntime, probe: ProbeState) -> str | None:
    """Run one probe as kubelet would; None when it succeeds, else why it failed."""
    timeout = probe.setting("timeoutSeconds")
    if "grpc" in probe.spec:
        spec = probe.spec["grpc"]
        address = f"{pod.ip}:{spec['port']}"
        # A new connection for every probe, closed after it, as kubelet's gRPC prober dials
        # (kubernetes pkg/probe/grpc). A kept channel would sit in its reconnect back-off
        # (about 1 s) after the first probe of a starting server, and fail the next probe
        # even once the server listens.
        try:
            with grpc.insecure_channel(address, options=LOCAL_ONLY) as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=spec.get("service", "")),
                    timeout=timeout,
                )
        except grpc.RpcError as error:
            code = error.code() if isinstance(error, grpc.Call) else None
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                return f'timeout: failed to connect service "{address}" within {timeout:g}s'
            name = code.name if code is not None else "error"
            return f"error: health rpc probe failed: {name}"
        if reply.status == health_pb2.HealthCheckResponse.SERVING:
            return None
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        return f'service unhealthy (responded with "{status}")'
    if "tcpSocket" in probe.spec:
        port = pod.container_port(probe.spec["tcpSocket"]["port"])
        try:
            with socket.create_connection((pod.ip, port), timeout=timeout):
                return None
        except OSError as error:
            return f"dial tcp {pod.ip}:{port}: connect: {error.strerror or error}"
    raise ValueError(f"unsupported probe on pod {pod.name}: {sorted(probe.spec)}")


def due_probes(pod: PodRuntime, now: float) -> list[ProbeState]:
    """The probes kubelet would run now: startup until it passes, then the other two."""
    if pod.terminating or pod.killing or pod.process is None:
        return []
    # A startup probe that has passed never runs again (a later NOT_SERVING must not
    # count against its failureThreshold); the other two wait until it has passed.
    kinds = ("readiness", "liveness") if pod.started else ("startup",)
    return [
        probe
        for probe in pod.probes.values()
        if probe.kind in kinds and not probe.in_flight and now >= probe.next_due
    ]


def record_result(
    pod: PodRuntime, probe: ProbeState, failure: str | None, now: float
) -> str | None:
    """Apply one probe result (`probe_once`'s); returns "restart" when kubelet would restart
    the container."""
    probe.in_flight = False
    if pod.probes.get(probe.kind) is not probe or pod.killing:
        return None  # a result about a container that has since been restarted
    probe.next_due = now + probe.setting("periodSeconds")
    ok = failure is None
    if failure is not None:
        probe.last_failure = failure
    if ok:
        probe.successes += 1
        probe.failures = 0
    else:
        probe.failures += 1
        probe.successes = 0
    if probe.kind == "startup":
        if ok:
            pod.started = True
        elif probe.failures >= probe.setting("failureThreshold"):
            return "restart"
    elif probe.kind == "readiness":
        if ok and probe.successes >= probe.setting("successThreshold"):
            pod.ready = True
        elif not ok and probe.failures >= probe.setting("failureThreshold"):
            pod.ready = False
    elif probe.kind == "liveness" and probe.failures >= probe.setting("failureThreshold"):
        return "restart"
    return None


def reset_for_start(pod: PodRuntime, now: float) -> None:
    pod.started_at = now
    pod.probes = new_probes(pod.container, now)
    pod.started = "startup" not in pod.probes
    # With no readiness probe, Kubernetes calls a running container ready.
    pod.ready = "readiness" not in pod.probes
    pod.restart_due = None


def kill_container(launcher: ProcessLauncher, pod: PodRuntime, process: Popen) -> int | None:
    """Stop the pod's container as the kubelet's killContainer does; returns its exit code.

    The preStop hook runs first, bounded by terminationGracePeriodSeconds (a hook still
    running then is abandoned); the whole seconds it took come off the grace period, which
    never drops below MINIMUM_GRACE_SECONDS; then SIGTERM, and SIGKILL when that is up.
    With a grace period of 0 the hook does not run. The caller has already taken the pod
    out of the endpoints (a terminating pod is not ready), as the endpoints controller does
    while the kubelet runs the hook. The sandbox sleeps where the hook would: the sleep
    action is the kubelet's own timer, and an exec hook ends early when the container has
    exited (an exec into it fails then).
    """
    grace = pod.grace_seconds
    hook_s = prestop_sleep_seconds(pod.container)  # apply refused any other hook
    if hook_s is not None and grace > 0:
        started = time.monotonic()
        if "exec" in pod.container["lifecycle"]["preStop"]:
            try:
                process.wait(timeout=min(hook_s, grace))
            except TimeoutExpired:
                pass
        else:
            time.sleep(min(hook_s, grace))
        grace -= int(time.monotonic() - started)  # executePreStopHook returns whole seconds
    return launcher.stop(process, grace=max(grace, MINIMUM_GRACE_SECONDS))
