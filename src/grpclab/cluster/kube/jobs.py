"""Load as a Job: the Job that runs `python -m grpclab.load` in the demo image, and its run.

The Job's JSON lines come back through its log; its start is watched so that a Job that
cannot start says why within `start_timeout`. Also the mesh client, the other pod grpclab
runs beside the learner's.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from grpclab.cluster.kube.diagnostics import events
from grpclab.cluster.kube.errors import KubeError, api_exception, status_code
from grpclab.cluster.kube.notes import Waiting
from grpclab.cluster.kube.objects import FIELD_MANAGER
from grpclab.cluster.kube.targets import client_pod_metadata
from grpclab.load import LoadResult, LoadSpec, parse_json_lines

DEFAULT_IMAGE = "grpclab/demo-server:0.1.0"  # built and loaded into kind by cluster/kind-up.sh
LOAD_CONTAINER = "load"
# Where the Job writes the CA bundle it was handed (tls_ca_file names a file on *this* machine).
JOB_CA_PATH = "/tmp/grpclab-ca.pem"
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
# A meshed client, run just long enough to read what Istio sends clients in the namespace.
MESH_CLIENT = "grpclab-mesh-client"
ISTIO_PROXY_ADMIN = "http://127.0.0.1:15000"

log = logging.getLogger(__name__)


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
    if spec.rate is not None:
        args += ["--rate", repr(float(spec.rate))]
    config = spec.service_config_json()  # lb_policy, retry and hedging fields included
    if config is not None:
        args += ["--service-config", config]
    for key, value in spec.channel_options.items():
        args += ["--option", f"{key}={_option_value(key, value)}"]
    if spec.deadline_s is None:
        args += ["--no-deadline"]
    else:
        args += ["--deadline", repr(float(spec.deadline_s))]
    args += ["--method", spec.method]
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


@dataclasses.dataclass(frozen=True)
class LoadJobs:
    """Runs load Jobs in one namespace with the demo image, one Job per `run`."""

    core: Any  # kubernetes.client.CoreV1Api
    batch: Any  # kubernetes.client.BatchV1Api
    namespace: str
    image: str = DEFAULT_IMAGE
    start_timeout: float = JOB_START_TIMEOUT_S
    poll_interval: float = 0.5

    def run(
        self,
        spec: LoadSpec,
        timeout: float,
        on_progress: Callable[[LoadResult], None] | None = None,
    ) -> LoadResult:
        """Create the Job for `spec`, follow it to its result, and delete it."""
        import urllib3

        pem = Path(spec.tls_ca_file).read_text() if spec.tls_ca_file else None
        name = f"grpclab-load-{secrets.token_hex(4)}"
        manifest = load_job_manifest(
            spec,
            self.namespace,
            name,
            self.image,
            tls_ca_pem=pem,
            active_deadline_s=int(timeout),
        )
        deadline = time.monotonic() + timeout
        self.batch.create_namespaced_job(self.namespace, manifest)
        try:
            result = self._follow(name, deadline, on_progress)
        except BaseException:
            # The run's own error is the one to see; a failed clean-up only goes to the log
            # (ttlSecondsAfterFinished removes the Job anyway).
            try:
                self.delete(name)
            except (api_exception(), urllib3.exceptions.HTTPError):  # refused, or no answer
                log.warning("could not delete load Job %s/%s", self.namespace, name, exc_info=True)
            raise
        self.delete(name)
        return result

    def delete(self, name: str) -> None:
        try:
            self.batch.delete_namespaced_job(name, self.namespace, propagation_policy="Background")
        except api_exception() as error:
            if status_code(error) != 404:
                raise

    def _follow(
        self, name: str, deadline: float, on_progress: Callable[[LoadResult], None] | None
    ) -> LoadResult:
        from kubernetes import watch

        pod = self._wait_for_pod(name, deadline)
        final: LoadResult | None = None
        tail: list[str] = []
        # A log stream can drop (API server restart, idle proxy); follow again while the
        # container runs. Re-read lines repeat progress, which only redraws the same data.
        for _ in range(3):
            lines = watch.Watch().stream(
                self.core.read_namespaced_pod_log,
                name=pod,
                namespace=self.namespace,
                container=LOAD_CONTAINER,
                _request_timeout=max(1.0, deadline - time.monotonic()),
            )
            final, tail = follow_load_output(lines, on_progress)
            if final is not None or self._exit_code(pod) is not None:
                break
        if final is None:
            code = self._exit_code(pod)
            raise KubeError(
                f"load Job {self.namespace}/{name} ended without a result (exit code {code}); "
                "last log lines:\n" + "\n".join(tail)
            )
        return final

    def _wait_for_pod(self, job: str, deadline: float) -> str:
        """The Job's pod once its load container has started; KubeError when it cannot.

        Gives up after `start_timeout` (not the whole load timeout) with what the pod
        waited for and the Job's and pod's latest events.
        """
        start_deadline = min(deadline, time.monotonic() + self.start_timeout)
        waiting = Waiting(f"load Job {self.namespace}/{job}")
        while True:
            try:
                obj = self.batch.read_namespaced_job_status(job, self.namespace)
            except api_exception() as error:
                if status_code(error) != 404:
                    raise
                obj = None  # deleted under us; the pods say the rest
            pods = self.core.list_namespaced_pod(
                self.namespace, label_selector=f"job-name={job}"
            ).items
            state = job_start(obj, pods, self.image)
            if state.pod is not None:
                waiting.finish("load running")
                return state.pod
            if state.failure is not None:
                raise KubeError(f"load Job {self.namespace}/{job}: {state.failure}")
            if time.monotonic() > start_deadline:
                latest = events(self.core, [job, *(p.metadata.name for p in pods)], self.namespace)
                raise KubeError(
                    f"load Job {self.namespace}/{job}: its load container did not start in "
                    f"{self.start_timeout:.0f} s: {state.waiting}."
                    + (" Latest events:\n" + "\n".join(latest) if latest else "")
                    + "\n(If images are still being pulled, connect with a longer "
                    "start_timeout.)"
                )
            waiting.update(state.waiting)
            time.sleep(self.poll_interval)

    def _exit_code(self, pod: str) -> int | None:
        obj = self.core.read_namespaced_pod(pod, self.namespace)
        for status in (obj.status.container_statuses or []) if obj.status else []:
            if status.name == LOAD_CONTAINER and status.state and status.state.terminated:
                return status.state.terminated.exit_code
        return None
