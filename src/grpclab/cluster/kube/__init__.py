"""KubeCluster, the Cluster interface on real Kubernetes: cluster, jobs (load Jobs), port_forward,
addons, admin (exec in a pod), targets, objects and diagnostics (replies), errors, notes.
May import grpclab.cluster, its containers and manifests (never sandbox), load, paths, notes.
"""

from __future__ import annotations

from grpclab.cluster.kube.addons import (
    ADDON_FOR_GROUP,
    ADDON_FOR_VIA,
    ADDONS,
    addon_hint,
    install_addon,
    run_streamed,
)
from grpclab.cluster.kube.admin import (
    ADMIN_SCRIPT,
    crash_exec_command,
    crashed_since,
    fault_exec_command,
    server_address,
    server_containers,
)
from grpclab.cluster.kube.cluster import KIND_CLUSTER, KIND_CONTEXT, KubeCluster, resolve_namespace
from grpclab.cluster.kube.errors import KubeError, api_error_message, api_exception
from grpclab.cluster.kube.jobs import (
    DEFAULT_IMAGE,
    JOB_CA_PATH,
    LOAD_CONTAINER,
    MESH_CLIENT,
    JobStart,
    LoadJobs,
    follow_load_output,
    job_start,
    load_cli_args,
    load_job_manifest,
    mesh_client_manifest,
)
from grpclab.cluster.kube.notes import NOTE_PREFIX, Waiting
from grpclab.cluster.kube.objects import (
    apply_outcome,
    container_port,
    is_headless,
    pod_from_model,
    progress_deadline_exceeded,
    rollout_status,
    service_port,
)
from grpclab.cluster.kube.port_forward import (
    forwarded_address,
    port_forward_command,
    start_port_forward,
    stop_process,
)
from grpclab.cluster.kube.targets import (
    VIAS,
    KubeTarget,
    client_pod_metadata,
    gateway_listener,
    ingress_port,
    ready_addresses,
    service_of_target,
    service_target,
    traefik_port,
)

__all__ = [
    "ADDONS",
    "ADDON_FOR_GROUP",
    "ADDON_FOR_VIA",
    "ADMIN_SCRIPT",
    "DEFAULT_IMAGE",
    "JOB_CA_PATH",
    "KIND_CLUSTER",
    "KIND_CONTEXT",
    "LOAD_CONTAINER",
    "MESH_CLIENT",
    "NOTE_PREFIX",
    "VIAS",
    "JobStart",
    "KubeCluster",
    "KubeError",
    "KubeTarget",
    "LoadJobs",
    "Waiting",
    "addon_hint",
    "api_error_message",
    "api_exception",
    "apply_outcome",
    "client_pod_metadata",
    "container_port",
    "crash_exec_command",
    "crashed_since",
    "fault_exec_command",
    "follow_load_output",
    "forwarded_address",
    "gateway_listener",
    "ingress_port",
    "install_addon",
    "is_headless",
    "job_start",
    "load_cli_args",
    "load_job_manifest",
    "mesh_client_manifest",
    "pod_from_model",
    "port_forward_command",
    "progress_deadline_exceeded",
    "ready_addresses",
    "resolve_namespace",
    "rollout_status",
    "run_streamed",
    "server_address",
    "server_containers",
    "service_of_target",
    "service_port",
    "service_target",
    "start_port_forward",
    "stop_process",
    "traefik_port",
]
