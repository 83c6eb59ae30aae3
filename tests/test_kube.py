"""The kube backend, offline: what it would send and how it reads replies, with no API server.

Manifests go through the real schema check, the Job's argv through the real load CLI against
a real demo server, the fault exec's argv likewise, pods and rollouts through the official
client's model classes, and the shell scripts run for real up to where they need a cluster.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from kubernetes.client import (
    V1Container,
    V1ContainerPort,
    V1ContainerState,
    V1ContainerStateRunning,
    V1ContainerStatus,
    V1Deployment,
    V1DeploymentCondition,
    V1DeploymentSpec,
    V1DeploymentStatus,
    V1LabelSelector,
    V1ObjectMeta,
    V1Pod,
    V1PodCondition,
    V1PodSpec,
    V1PodStatus,
    V1PodTemplateSpec,
    V1Service,
    V1ServicePort,
    V1ServiceSpec,
)
from support import CLUSTER, REPO, parse_ready

import grpclab
from grpclab.cluster import kube
from grpclab.cluster.manifests import (
    KUBERNETES_VERSION,
    kubectl_ref,
    load_objects,
    override_namespace,
)
from grpclab.load import PROXY_COUNTERS, LoadResult, LoadSpec, run
from grpclab.load.runner import build_parser, spec_from_args

# -- manifests and the files around them --------------------------------------------------


# kind.yaml configures kind itself; it is not a Kubernetes object. The GatewayClass is
# cluster-scoped add-on set-up that only kubectl applies (envoy-gateway.sh); grpclab's own
# apply does not take GatewayClasses, and test_the_envoy_gateway_class_... checks it.
NOT_FOR_APPLY = {"kind.yaml", "envoy-gateway-class.yaml"}


def manifest_files() -> list[Path]:
    return sorted(p for p in CLUSTER.rglob("*.yaml") if p.name not in NOT_FOR_APPLY)


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(CLUSTER)))
def test_every_manifest_under_cluster_passes_the_kubernetes_schema(path):
    objects = load_objects(path)
    assert objects, f"{path} has no objects"


def test_the_manifest_check_covers_the_addons_own_yaml():
    assert CLUSTER / "addons" / "prometheus.yaml" in manifest_files()
    assert CLUSTER / "kind.yaml" not in manifest_files()


def test_kind_config_pins_a_node_image_of_the_validated_kubernetes_version():
    config = yaml.safe_load((CLUSTER / "kind.yaml").read_text())
    assert config["kind"] == "Cluster" and config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert config["name"] == kube.KIND_CLUSTER
    assert [n["role"] for n in config["nodes"]] == ["control-plane", "worker", "worker", "worker"]
    pinned = re.compile(r"kindest/node:v(\d+\.\d+)\.\d+@sha256:[0-9a-f]{64}")
    for node in config["nodes"]:
        match = pinned.fullmatch(node["image"])
        assert match, f"{node['role']} image {node['image']!r} is not pinned by digest"
        assert match.group(1) == KUBERNETES_VERSION


def kind_version_in_kind_up() -> str:
    return re.search(r"^KIND_VERSION=(\S+)", (CLUSTER / "kind-up.sh").read_text(), re.M).group(1)


def workflow() -> dict:
    return yaml.safe_load((REPO / ".github" / "workflows" / "kind.yml").read_text())


def workflow_steps() -> list[dict]:
    return [step for job in workflow()["jobs"].values() for step in job["steps"]]


def test_the_workflow_runs_the_readme_commands_on_kind():
    runs = "\n".join(step["run"] for step in workflow_steps() if "run" in step)
    assert "make kind-up" in runs.splitlines()
    assert "make test-contract" in runs
    assert "pytest tests/test_notebooks.py -k" in runs
    # YAML 1.1 reads the bare key `on` as True.
    triggers = workflow().get("on", workflow().get(True))
    assert {"push", "pull_request", "workflow_dispatch"} <= set(triggers)


def test_the_workflow_runs_every_notebook_once_in_a_matrix_of_jobs():
    job = workflow()["jobs"]["kind"]
    groups = [entry.get("notebooks") for entry in job["strategy"]["matrix"]["include"]]
    assert None in groups  # the contract suite's own job
    named = [stem.strip() for group in groups if group for stem in group.split(" or ")]
    stems = sorted(
        p.stem
        for p in (REPO / "notebooks").glob("[0-9][0-9]-*.ipynb")
        # A notebook's metadata may limit it to some backends (tests/test_notebooks.py).
        if "kind"
        in json.loads(p.read_text())["metadata"].get("grpclab", {}).get("backends", ["kind"])
    )
    assert sorted(named) == stems, "each notebook that runs on kind in exactly one matrix group"
    assert job["strategy"]["fail-fast"] is False


def test_the_workflow_collects_diagnostics_on_failure_timeout_and_cancel():
    job = workflow()["jobs"]["kind"]
    suite = next(step for step in job["steps"] if step.get("name", "").startswith("Tests on kind"))
    # A hung suite fails at its own limit, leaving the job time for the diagnostics.
    assert suite["timeout-minutes"] + 10 <= job["timeout-minutes"]
    collect, upload = job["steps"][-2:]
    assert "kind-diagnostics.sh" in collect["run"]
    assert upload["uses"].startswith("actions/upload-artifact@")
    for step in (collect, upload):
        assert step["if"] == "failure() || cancelled()"
    script = (CLUSTER / "kind-diagnostics.sh").read_text()
    for command in ("get events -A", "describe pod", "logs", "kind export logs"):
        assert command in script, command


def test_the_workflow_checks_that_coredns_does_not_cache_cluster_local():
    runs = "\n".join(step["run"] for step in workflow_steps() if "run" in step)
    assert "disable success cluster.local" in runs and "disable denial cluster.local" in runs
    assert "coredns-no-cluster-cache.sh" in (CLUSTER / "kind-up.sh").read_text()


def test_the_workflow_pins_its_actions_and_the_kind_release_of_the_node_image():
    uses = [step["uses"] for step in workflow_steps() if "uses" in step]
    assert uses and all(re.search(r"@v\d+(\.\d+\.\d+)?$", u) for u in uses), uses
    kind_action = next(
        s for s in workflow_steps() if s.get("uses", "").startswith("helm/kind-action@")
    )
    assert re.search(r"@v\d+\.\d+\.\d+$", kind_action["uses"])
    assert kind_action["with"]["version"] == kind_version_in_kind_up()
    assert kind_action["with"]["install_only"] is True  # the cluster comes from `make kind-up`


def test_every_make_target_the_workflow_calls_exists():
    makefile = (REPO / "Makefile").read_text()
    runs = " ".join(step["run"] for step in workflow_steps() if "run" in step)
    for target in re.findall(r"\bmake ([\w-]+)", runs):
        assert re.search(rf"^{re.escape(target)}:", makefile, re.M), f"Makefile has no {target}"


def test_the_image_name_is_the_same_in_the_code_the_scripts_and_the_manifests():
    assert (
        f'IMAGE="${{GRPCLAB_IMAGE:-{kube.DEFAULT_IMAGE}}}"' in (CLUSTER / "kind-up.sh").read_text()
    )
    deployments = [
        o
        for p in (CLUSTER / "manifests").rglob("*.yaml")
        for o in load_objects(p)
        if o["kind"] == "Deployment"
    ]
    assert deployments
    for deployment in deployments:
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            assert container["image"] == kube.DEFAULT_IMAGE


def dockerfile() -> str:
    return (CLUSTER / "Dockerfile").read_text()


def test_the_dockerfile_builds_a_non_root_image_that_runs_the_server():
    text = dockerfile()
    assert re.search(r"^FROM python:3\.11-slim$", text, re.M)
    assert 'ENTRYPOINT ["python", "-m", "grpclab.demo.server"]' in text  # args are its flags
    assert re.search(r"^EXPOSE 50051 9090$", text, re.M)
    user = re.search(r"^USER (\S+)$", text, re.M).group(1)
    assert user.isdigit() and int(user) > 0  # numeric, so runAsNonRoot can check it
    for needed in ("pyproject.toml", "uv.lock", "protos", "src"):
        assert re.search(rf"^COPY .*\b{re.escape(needed)}\b", text, re.M), needed
    uv_pin = re.search(r"^ARG UV_VERSION=(\S+)$", text, re.M).group(1)
    workflow_uv = next(s for s in workflow_steps() if s.get("uses", "").startswith("astral-sh/"))
    assert workflow_uv["with"]["version"] == uv_pin


# Loaded here but not needed in the image: grpc imports grpc_tools only if it is installed,
# setuptools' .pth file loads _distutils_hack into every interpreter, and `google` is a
# namespace whose __init__ one of several distributions happens to ship.
NOT_NEEDED_IN_THE_IMAGE = frozenset({"grpc_tools", "grpc.tools", "_distutils_hack", "google"})


def _distribution(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_image_installs_every_package_the_server_load_cli_and_fault_exec_import():
    listed = re.search(r'^ARG RUNTIME_PACKAGES="([^"]+)"$', dockerfile(), re.M).group(1).split()
    fault_imports = [
        line for line in kube.ADMIN_SCRIPT.splitlines() if line.startswith(("import", "from"))
    ]
    # Import what runs in the image, in a fresh interpreter, and find the distribution that
    # installed each loaded module's file (a top-level name like `google` has several).
    probe = "\n".join(
        [
            "import importlib.metadata as md, json, os, sys",
            "import grpclab.demo.server, grpclab.load",
            *fault_imports,
            "owner = {}",
            "for dist in md.distributions():",
            "    name = dist.metadata['Name']",
            "    owner.update(dict.fromkeys(map(str, dist.files or []), name))",
            "roots = [os.path.realpath(p) for p in sys.path if p and os.path.isdir(p)]",
            "found = set()",
            "for name, module in list(sys.modules.items()):",
            "    path = getattr(module, '__file__', None)",
            f"    if not path or name in {sorted(NOT_NEEDED_IN_THE_IMAGE)!r}:",
            "        continue",
            "    path = os.path.realpath(path)",
            "    for root in roots:",
            "        if path.startswith(root + os.sep):",
            "            found.add(owner.get(os.path.relpath(path, root)))",
            "found -= {None, 'grpclab'}",
            "print(json.dumps(sorted(found)))",
        ]
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    imported = {_distribution(d) for d in json.loads(done.stdout)}
    # Dependencies of the listed packages come with them; only direct imports must be listed.
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    requires = {
        _distribution(p["name"]): {_distribution(d["name"]) for d in p.get("dependencies", [])}
        for p in lock["package"]
    }
    reachable = {_distribution(n) for n in listed}
    frontier = list(reachable)
    while frontier:
        for dep in requires.get(frontier.pop(), ()):
            if dep not in reachable:
                reachable.add(dep)
                frontier.append(dep)
    assert imported <= reachable, f"missing from RUNTIME_PACKAGES: {sorted(imported - reachable)}"


# -- namespace override -------------------------------------------------------------------


def test_the_namespace_override_moves_every_namespaced_object_and_renames_the_namespace():
    objects = load_objects(CLUSTER / "manifests" / "base") + load_objects(
        CLUSTER / "addons" / "prometheus.yaml"
    )
    moved = override_namespace(objects, "alice")
    namespaces = [o for o in moved if o["kind"] == "Namespace"]
    assert len(namespaces) == 1 and namespaces[0]["metadata"]["name"] == "alice"
    # Labels of both Namespace objects survive the merge.
    assert namespaces[0]["metadata"]["labels"]["app.kubernetes.io/part-of"] == "grpclab"
    for obj in moved:
        if obj["kind"] in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
            assert "namespace" not in obj["metadata"], kubectl_ref(obj)
        else:
            assert obj["metadata"]["namespace"] == "alice", kubectl_ref(obj)
    assert len(moved) == len(objects) - 1  # two Namespace objects became one
    # The input is left as it was.
    assert {o["metadata"].get("namespace") for o in objects} >= {"production", "grpclab-monitoring"}


def test_the_namespace_override_moves_the_service_names_inside_mesh_rules():
    objects = [
        *load_objects(CLUSTER / "manifests" / "istio" / "virtualservice.yaml"),
        *load_objects(CLUSTER / "manifests" / "istio" / "destinationrule.yaml"),
        *load_objects(CLUSTER / "manifests" / "linkerd" / "service-profile.yaml"),
    ]
    text = json.dumps(objects)
    assert "grpc-server.production.svc.cluster.local" in text
    moved = json.dumps(override_namespace(objects, "alice"))
    assert "production" not in moved
    assert moved.count("grpc-server.alice.svc.cluster.local") == text.count(
        "grpc-server.production.svc.cluster.local"
    )
    # Moving nowhere changes nothing.
    assert override_namespace(objects, "production") == objects


def test_the_namespace_override_merges_namespace_labels_and_follows_discovery():
    objects = [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "production", "labels": {"a": "1"}},
        },
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "mesh", "labels": {"istio-injection": "enabled"}},
        },
        {
            "apiVersion": "example.com/v1",
            "kind": "Widget",
            "metadata": {"name": "w", "namespace": "x"},
        },
    ]
    moved = override_namespace(objects, "bob", is_namespaced=lambda api_version, kind: False)
    assert moved[0]["metadata"] == {
        "name": "bob",
        "labels": {"a": "1", "istio-injection": "enabled"},
    }
    assert moved[1] == {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}


def test_the_namespace_comes_from_the_argument_then_the_environment_then_production(monkeypatch):
    monkeypatch.delenv("GRPCLAB_NAMESPACE", raising=False)
    assert kube.resolve_namespace() == "production"
    monkeypatch.setenv("GRPCLAB_NAMESPACE", "carol")
    assert kube.resolve_namespace() == "carol"
    assert kube.resolve_namespace("dave") == "dave"


def test_kubectl_style_names_and_apply_outcomes():
    assert (
        kubectl_ref({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "g"}})
        == "deployment.apps/g"
    )
    assert (
        kubectl_ref({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}})
        == "service/s"
    )
    assert kube.apply_outcome(None, {"metadata": {"resourceVersion": "7"}}) == "created"
    assert (
        kube.apply_outcome(
            {"metadata": {"resourceVersion": "7"}}, {"metadata": {"resourceVersion": "7"}}
        )
        == "unchanged"
    )
    assert (
        kube.apply_outcome(
            {"metadata": {"resourceVersion": "7"}}, {"metadata": {"resourceVersion": "9"}}
        )
        == "configured"
    )


# -- pods, rollouts and services from the client's own models --------------------------------


def make_pod(
    name: str,
    ready: bool = True,
    restarts=(0,),
    ip: str | None = "10.244.1.5",
    deleting: bool = False,
) -> V1Pod:
    return V1Pod(
        metadata=V1ObjectMeta(
            name=name,
            namespace="production",
            labels={"app": "grpc-server"},
            deletion_timestamp=datetime(2025, 1, 1, tzinfo=UTC) if deleting else None,
        ),
        spec=V1PodSpec(
            containers=[
                V1Container(name="istio-proxy", image="istio/proxyv2"),
                V1Container(
                    name="grpc-server",
                    image=kube.DEFAULT_IMAGE,
                    ports=[V1ContainerPort(container_port=50052, name="grpc")],
                ),
            ]
        ),
        status=V1PodStatus(
            phase="Running",
            pod_ip=ip,
            conditions=[
                V1PodCondition(type="PodScheduled", status="True"),
                V1PodCondition(type="Ready", status="True" if ready else "False"),
            ],
            container_statuses=[
                V1ContainerStatus(
                    name=f"c{i}",
                    image="x",
                    image_id="",
                    ready=ready,
                    restart_count=count,
                    state=V1ContainerState(running=V1ContainerStateRunning()),
                )
                for i, count in enumerate(restarts)
            ],
        ),
    )


def test_pod_readiness_comes_from_the_ready_condition_and_restarts_are_summed():
    pod = kube.pod_from_model(make_pod("a", ready=True, restarts=(2, 1)))
    assert pod == grpclab.Pod(
        "a", "production", "10.244.1.5", True, "Running", 3, {"app": "grpc-server"}
    )
    assert kube.pod_from_model(make_pod("b", ready=False)).ready is False


def test_a_pod_being_deleted_is_terminating_and_not_ready():
    pod = kube.pod_from_model(make_pod("c", ready=True, deleting=True))
    assert pod.phase == "Terminating" and pod.ready is False


def test_a_pod_without_status_is_pending_with_no_address():
    pod = kube.pod_from_model(V1Pod(metadata=V1ObjectMeta(name="d", namespace="p")))
    assert (pod.phase, pod.ready, pod.ip, pod.restarts) == ("Pending", False, "", 0)


def test_the_fault_exec_goes_to_the_server_container_where_its_server_listens():
    pod = make_pod("e", ip="10.244.2.9")
    # Its containerPort "grpc" says 50052, but that only declares: no flag or env moves the
    # server from its default (tests/test_containers.py has the cases that do).
    assert kube.server_address(pod) == "10.244.2.9:50051"
    assert [c.name for c in kube.server_containers(pod)] == ["grpc-server"]


def make_deployment(
    replicas=3, generation=2, observed=2, updated=3, available=3, total=3, conditions=None
) -> V1Deployment:
    return V1Deployment(
        metadata=V1ObjectMeta(name="grpc-server", namespace="production", generation=generation),
        spec=V1DeploymentSpec(
            replicas=replicas,
            selector=V1LabelSelector(match_labels={"app": "grpc-server"}),
            template=V1PodTemplateSpec(),
        ),
        status=V1DeploymentStatus(
            observed_generation=observed,
            updated_replicas=updated,
            available_replicas=available,
            replicas=total,
            conditions=conditions,
        ),
    )


@pytest.mark.parametrize(
    ("deployment", "expected"),
    [
        (make_deployment(), (3, 3, True)),
        (make_deployment(observed=1), (3, 3, False)),  # the controller has not seen the change
        (make_deployment(updated=2, available=3), (2, 3, False)),  # still rolling
        (make_deployment(total=4), (3, 3, False)),  # an old pod is still counted
        (make_deployment(available=2), (2, 3, False)),  # a new pod is not ready yet
        (
            make_deployment(replicas=None, updated=1, available=1, total=1),
            (1, 1, True),
        ),  # default 1
        (make_deployment(replicas=4, updated=4, available=4, total=4), (4, 4, True)),
    ],
)
def test_rollout_status_follows_kubectl_rollout_status(deployment, expected):
    assert kube.rollout_status(deployment) == expected


def test_a_rollout_past_its_progress_deadline_is_reported():
    stuck = V1DeploymentCondition(
        type="Progressing",
        status="False",
        reason="ProgressDeadlineExceeded",
        message='ReplicaSet "grpc-server-1" has timed out progressing.',
    )
    assert "timed out" in kube.progress_deadline_exceeded(make_deployment(conditions=[stuck]))
    assert kube.progress_deadline_exceeded(make_deployment()) is None


def make_service(name: str, headless: bool) -> V1Service:
    return V1Service(
        metadata=V1ObjectMeta(name=name, namespace="production"),
        spec=V1ServiceSpec(
            cluster_ip="None" if headless else "10.96.0.20",
            ports=[
                V1ServicePort(name="grpc", port=50051),
                V1ServicePort(name="metrics", port=9090),
            ],
        ),
    )


def test_targets_are_in_cluster_dns_names_with_the_resolved_port():
    service = make_service("grpc-server-headless", headless=True)
    for port in ("grpc", 50051, "50051"):
        assert kube.service_port(service, port) == 50051
    assert kube.service_port(service, "metrics") == 9090
    assert kube.is_headless(service) and not kube.is_headless(make_service("grpc-server", False))
    assert kube.service_target("grpc-server-headless", "production", 50051, "dns") == (
        "dns:///grpc-server-headless.production.svc.cluster.local:50051"
    )
    assert kube.service_target("grpc-server", "alice", 50051, "clusterip") == (
        "grpc-server.alice.svc.cluster.local:50051"
    )
    with pytest.raises(ValueError, match="via"):
        kube.service_target("grpc-server", "production", 50051, "nodeport")


def endpoint_slice(service: str, endpoints: list[tuple[str, bool | None]]) -> dict:
    """An EndpointSlice as the dynamic client returns it; ready None leaves the condition out."""
    return {
        "metadata": {"labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "grpc", "port": 50051}, {"name": "metrics", "port": 9090}],
        "endpoints": [
            {"addresses": [ip], "conditions": {} if ready is None else {"ready": ready}}
            for ip, ready in endpoints
        ],
    }


def test_the_addresses_target_lists_the_ready_endpoints_of_that_service_and_port():
    service = make_service("grpc-server", headless=False)
    slices = [
        endpoint_slice("grpc-server", [("10.244.0.7", True), ("10.244.0.5", None)]),
        endpoint_slice("grpc-server", [("10.244.0.9", False)]),  # not ready: left out
        endpoint_slice("other", [("10.244.0.8", True)]),
    ]
    assert kube.ready_addresses(slices, service, 50051) == (
        "ipv4:10.244.0.5:50051,10.244.0.7:50051"
    )
    assert kube.ready_addresses(slices, service, 9090) == "ipv4:10.244.0.5:9090,10.244.0.7:9090"
    with pytest.raises(ValueError, match="no ready endpoints"):
        kube.ready_addresses(slices[1:2], service, 50051)


def test_an_unknown_port_names_the_ports_the_service_has():
    with pytest.raises(KeyError, match=r"no port 'http' \(it has grpc=50051, metrics=9090\)"):
        kube.service_port(make_service("grpc-server", False), "http")


# -- the load Job ----------------------------------------------------------------------------

SPECS = [
    LoadSpec("dns:///grpc-server.production.svc.cluster.local:50051"),
    LoadSpec(
        "grpc-server-headless:50051",
        rpcs=None,
        duration_s=2.5,
        lb_policy="round_robin",
        interval_s=0.25,
        rate=150,
    ),
    LoadSpec(
        "dns:///x:1",
        rpcs=17,
        concurrency=4,
        channels=2,
        method="GetUser",
        deadline_s=1.5,
        service_config={"loadBalancingConfig": [{"round_robin": {}}]},
        channel_options={
            "grpc.use_local_subchannel_pool": True,
            "grpc.lb_policy_name": "pick_first",
            "grpc.max_receive_message_length": 1024,
        },
    ),
    LoadSpec(
        "ingress:443",
        service_config='{"loadBalancingConfig": [{"pick_first": {}}]}',
        tls_ca_file="/tmp/ca.pem",
        tls_server_name="grpc.example",
    ),
    LoadSpec(
        "grpc-server.production.svc.cluster.local:50051", proxy_admin="http://127.0.0.1:15000"
    ),
    LoadSpec(
        "dns:///grpc-server-headless.production.svc.cluster.local:50051",
        lb_policy="round_robin",
        retry_policy={
            "maxAttempts": 3,
            "initialBackoff": "0.1s",
            "maxBackoff": "1s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        },
        retry_throttling={"maxTokens": 10, "tokenRatio": 0.1},
        deadline_s=None,
    ),
    # Stream mode (notebook 13): the stream fields travel as their own flags.
    LoadSpec(
        "dns:///grpc-server-headless.production.svc.cluster.local:50051",
        duration_s=6.0,
        concurrency=4,
        channels=2,
        method="SayHelloStream",
        lb_policy="round_robin",
        stream_duration_s=2.5,
        stream_interval_s=0.05,
        deadline_s=None,
    ),
    LoadSpec(
        "grpc-server.production.svc.cluster.local:50051",
        rpcs=40,
        concurrency=2,
        method="SayHelloStream",
        stream_messages=20,
    ),
]


def _normalised(spec: LoadSpec) -> dict:
    data = spec.to_dict()
    # What goes on the channel: lb_policy and the retry fields are part of the service config.
    data["service_config"] = spec.service_config_json()
    for name in ("lb_policy", "retry_policy", "hedging_policy", "retry_throttling"):
        del data[name]
    data["channel_options"] = {
        k: int(v) if isinstance(v, bool) else v for k, v in spec.channel_options.items()
    }
    return data


@pytest.mark.parametrize("spec", SPECS, ids=range(len(SPECS)))
def test_the_job_arguments_parse_back_to_the_same_spec_with_the_real_load_cli(spec):
    args = kube.load_cli_args(spec)
    assert args[-2:] == ["--json", "--progress-json"]
    parsed = build_parser().parse_args(args)
    assert parsed.json and parsed.progress_json
    assert _normalised(spec_from_args(parsed)) == _normalised(spec)


def test_job_arguments_refuse_what_the_cli_cannot_carry():
    with pytest.raises(ValueError, match="rpcs and duration_s"):
        kube.load_cli_args(LoadSpec("x:1", rpcs=10, duration_s=1.0))
    with pytest.raises(ValueError, match=r"channel_options\['grpc.x'\]"):
        kube.load_cli_args(LoadSpec("x:1", channel_options={"grpc.x": 0.5}))


def test_the_load_job_is_a_valid_job_that_runs_the_cli_once_and_cleans_up():
    spec = SPECS[1]
    job = kube.load_job_manifest(
        spec, "alice", "grpclab-load-0a1b2c3d", "grpclab/demo-server:0.1.0"
    )
    kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)
    assert load_objects(job)[0]["metadata"] == job["metadata"]
    assert job["metadata"] | {"labels": None} == {
        "name": "grpclab-load-0a1b2c3d",
        "namespace": "alice",
        "labels": None,
    }
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["ttlSecondsAfterFinished"] > 0
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    assert container["name"] == kube.LOAD_CONTAINER
    assert container["image"] == "grpclab/demo-server:0.1.0"
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["command"] == ["python", "-m", "grpclab.load"]
    assert container["args"] == kube.load_cli_args(spec)
    assert "--duration" in container["args"]
    # lb_policy travels in the service config, as the client's own code would set it.
    config = container["args"][container["args"].index("--service-config") + 1]
    assert json.loads(config) == {"loadBalancingConfig": [{"round_robin": {}}]}


def test_a_tls_load_job_carries_the_ca_bundle_and_points_the_cli_at_its_copy():
    spec = SPECS[3]
    job = kube.load_job_manifest(
        spec, "production", "grpclab-load-tls", tls_ca_pem="-----BEGIN CERTIFICATE-----\nx\n"
    )
    kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["args"][container["args"].index("--tls-ca") + 1] == kube.JOB_CA_PATH
    assert container["env"] == [
        {"name": "GRPCLAB_TLS_CA_PEM", "value": "-----BEGIN CERTIFICATE-----\nx\n"}
    ]
    assert container["command"][:2] == ["sh", "-c"] and kube.JOB_CA_PATH in container["command"][2]
    with pytest.raises(ValueError, match="tls_ca_pem"):
        kube.load_job_manifest(spec, "production", "grpclab-load-tls")


@contextlib.contextmanager
def running_demo_server(folder: Path, pod_name: str) -> Iterator[subprocess.Popen[str]]:
    """A real demo server on a free loopback port; `.address` holds where it listens."""
    log = folder / f"{pod_name}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "grpclab.demo.server",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--metrics-port",
                "0",
                "--pod-name",
                pod_name,
            ],
            stdout=subprocess.PIPE,
            stderr=out,
            text=True,
        )
    try:
        for line in proc.stdout:
            ready = parse_ready(line)
            if ready:
                proc.address = f"127.0.0.1:{ready.port}"  # type: ignore[attr-defined]
                yield proc
                break
        else:
            pytest.fail(f"demo server did not start: {log.read_text()}")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory) -> Iterator[str]:
    """A real demo server on loopback, shared by the module; yields its address."""
    with running_demo_server(tmp_path_factory.mktemp("server"), "kube-test-pod") as proc:
        yield proc.address


@pytest.mark.parametrize("method", ["SayHello", "SayHelloStream"])
def test_the_job_command_runs_the_real_cli_and_its_log_parses_into_the_result(demo_server, method):
    stream = {"stream_duration_s": 0.5} if method == "SayHelloStream" else {}
    spec = LoadSpec(
        demo_server,
        rpcs=None,
        duration_s=1.5,
        interval_s=0.25,
        concurrency=4,
        method=method,
        **stream,
    )
    container = kube.load_job_manifest(spec, "production", "grpclab-load-local")["spec"][
        "template"
    ]["spec"]["containers"][0]
    argv = [
        sys.executable if part == "python" else part for part in container["command"]
    ] + container["args"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=_loopback_env())
    assert done.returncode == 0, done.stderr
    # The pod log may carry lines that are not protocol (gRPC warnings); they are skipped.
    lines = [
        "WARNING: All log messages before absl::InitializeLog() is called",
        *done.stdout.splitlines(),
    ]
    seen: list[LoadResult] = []
    final, tail = kube.follow_load_output(lines, seen.append)
    assert final is not None and final.done
    assert set(final.per_pod) == {"kube-test-pod"} and final.ok > 0 and final.failed == 0
    assert any(not s.done for s in seen) and seen[-1] == final
    assert tail[-1] == lines[-1]
    # Notebook 13 reads each stream's pods from the final result: they come back through the
    # log; the 0.5 s streams of a 1.5 s run end several times on each of the 4 workers.
    if stream:
        assert len(final.streams) >= 8
        assert all(record["pods"] for record in final.streams)
    else:
        assert final.streams == []


def test_a_log_without_a_result_gives_none_and_the_last_lines():
    final, tail = kube.follow_load_output([f"line {i}" for i in range(30)])
    assert final is None and tail == [f"line {i}" for i in range(10, 30)]


def _loopback_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    return env


def test_the_fault_exec_command_sets_the_knobs_of_a_real_server(demo_server):
    argv = kube.fault_exec_command(
        demo_server, {"error_rate": 0.25, "added_latency_ms": 3}, python=sys.executable
    )
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=_loopback_env())
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "added_latency_ms": 3,
        "error_rate": 0.25,
        "error_code": 0,
        "not_serving": False,
    }
    cleared = subprocess.run(
        kube.fault_exec_command(demo_server, {}, python=sys.executable),
        capture_output=True,
        text=True,
        timeout=30,
        env=_loopback_env(),
    )
    assert json.loads(cleared.stdout)["error_rate"] == 0
    with pytest.raises(ValueError, match="unknown fault field.*latency"):
        kube.fault_exec_command(demo_server, {"latency": 5})


def test_the_crash_exec_command_ends_a_real_server_without_a_drain(tmp_path):
    with running_demo_server(tmp_path, "crash-test-pod") as server:
        argv = kube.crash_exec_command(server.address, python=sys.executable)
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=_loopback_env())
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {}
        assert server.wait(timeout=5) == 137  # as a container killed by SIGKILL reports


# -- connecting, and the scripts up to where they need a cluster ---------------------------------


def unreachable_kubeconfig(tmp_path: Path, context: str) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": context,
                "clusters": [{"name": "nowhere", "cluster": {"server": "https://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": context, "context": {"cluster": "nowhere", "user": "u"}}],
            }
        )
    )
    return path


def test_connect_kind_without_the_kind_context_says_to_run_kind_up(tmp_path):
    config = unreachable_kubeconfig(tmp_path, "some-other-context")
    with pytest.raises(kube.KubeError, match="kind-grpclab.*make kind-up"):
        grpclab.connect("kind", kubeconfig=str(config))


def test_connect_to_an_api_server_that_does_not_answer_names_it(tmp_path):
    config = unreachable_kubeconfig(tmp_path, "kind-grpclab")
    with pytest.raises(
        kube.KubeError,
        match=r"cannot reach the API server of context kind-grpclab at https://127.0.0.1:9",
    ):
        grpclab.connect("kind", kubeconfig=str(config))
    with pytest.raises(kube.KubeError, match="cannot reach"):
        grpclab.connect("kubeconfig", kubeconfig=str(config), namespace="alice")


def bin_without(tmp_path: Path, *missing: str) -> str:
    """A PATH with the basic tools and, when installed, kubectl and docker, minus `missing`."""
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("bash", "basename", "dirname", "sed", "grep", "cat", "head", "kubectl", "docker"):
        found = shutil.which(tool)
        if found and tool not in missing:
            (tools / tool).symlink_to(found)
    return str(tools)


@pytest.mark.parametrize("addon", kube.ADDONS)
def test_each_addon_says_how_to_get_kubectl_when_it_is_missing(addon, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", bin_without(tmp_path, "kubectl"))
    with pytest.raises(
        kube.KubeError, match="'kubectl' is not installed. Install kubectl: https://"
    ):
        kube.install_addon(addon)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="needs the kubectl binary")
def test_an_addon_with_no_cluster_to_talk_to_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", bin_without(tmp_path))
    monkeypatch.setenv("KUBECONFIG", str(unreachable_kubeconfig(tmp_path, "kind-grpclab")))
    with pytest.raises(
        kube.KubeError, match="cannot reach the cluster of context 'kind-grpclab'.*make kind-up"
    ):
        kube.install_addon("prometheus", context="kind-grpclab")


def test_each_addon_script_pins_a_version():
    for addon in kube.ADDONS:
        text = (CLUSTER / "addons" / f"{addon}.sh").read_text()
        pinned = re.search(
            r"^(CHART_)?VERSION=v?\d+\.\d+\.\d+$|^VERSION=edge-\d+\.\d+\.\d+$", text, re.M
        )
        if addon == "prometheus":
            pinned = re.search(
                r"image: prom/prometheus:v\d+\.\d+\.\d+$",
                (CLUSTER / "addons" / "prometheus.yaml").read_text(),
                re.M,
            )
        assert pinned, f"{addon} pins no version"


def test_an_unknown_addon_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="unknown add-on 'consul'; known: gateway-api, istio"):
        kube.install_addon("consul")


def test_kind_up_says_how_to_get_docker_when_it_is_missing(tmp_path):
    env = {"PATH": bin_without(tmp_path, "docker"), "HOME": str(tmp_path)}
    done = subprocess.run(
        ["bash", str(CLUSTER / "kind-up.sh")], capture_output=True, text=True, env=env, timeout=30
    )
    assert done.returncode == 1
    assert "'docker' is not installed. Install Docker" in done.stderr


def test_kind_down_is_a_no_op_without_kind(tmp_path):
    env = {"PATH": bin_without(tmp_path), "HOME": str(tmp_path)}
    done = subprocess.run(
        ["bash", str(CLUSTER / "kind-down.sh")], capture_output=True, text=True, env=env, timeout=30
    )
    assert done.returncode == 0 and "kind is not installed" in done.stdout


def test_the_scripts_pass_shellcheck():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed")
    scripts = sorted(CLUSTER.rglob("*.sh"))
    done = subprocess.run(
        ["shellcheck", "-x", *map(str, scripts)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout


# -- how the load Job's client reaches a Service, for every `via` ---------------------------


@pytest.mark.parametrize(
    ("via", "istio", "linkerd", "template"),
    [
        ("dns", "false", "disabled", None),
        ("clusterip", "false", "disabled", None),
        ("ingress", "false", "disabled", None),
        ("mesh", "true", "disabled", None),
        ("xds", "true", "disabled", "grpc-agent"),
        ("linkerd", "false", "enabled", None),
        ("ambient", "false", "disabled", None),
    ],
)
def test_the_load_jobs_pod_opts_in_or_out_of_each_mesh_for_its_via(via, istio, linkerd, template):
    target = kube.KubeTarget("grpc-server.production.svc.cluster.local:50051", via)
    job = kube.load_job_manifest(LoadSpec(target), "production", "grpclab-load-via")
    kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)
    metadata = job["spec"]["template"]["metadata"]
    assert metadata["labels"]["sidecar.istio.io/inject"] == istio
    assert metadata["annotations"]["linkerd.io/inject"] == linkerd
    assert metadata["annotations"].get("inject.istio.io/templates") == template
    # Istio ambient: in or out of ztunnel by the pod's own label, whatever the namespace says.
    ambient = "ambient" if via == "ambient" else "none"
    assert metadata["labels"]["istio.io/dataplane-mode"] == ambient
    # The Job's selector labels stay; the via adds to them.
    assert metadata["labels"]["app.kubernetes.io/name"] == "grpclab-load"
    # argv carries the plain target string, whatever carried the via.
    assert json.dumps(job)  # serialisable as the API client will send it
    assert job["spec"]["template"]["spec"]["containers"][0]["args"][0] == str(target)


def test_a_mesh_job_reads_its_own_sidecars_counters_and_asks_istio_to_keep_them():
    target = kube.KubeTarget("grpc-server.production.svc.cluster.local:50051", "mesh")
    job = kube.load_job_manifest(LoadSpec(target), "production", "grpclab-load-mesh")
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--proxy-admin") + 1] == "http://127.0.0.1:15000"
    config = json.loads(job["spec"]["template"]["metadata"]["annotations"]["proxy.istio.io/config"])
    kept = config["proxyStatsMatcher"]["inclusionRegexps"]
    assert sorted(kept) == sorted(PROXY_COUNTERS.values())
    plain = kube.load_job_manifest(LoadSpec("grpc-server:50051"), "production", "grpclab-load-x")
    assert "--proxy-admin" not in plain["spec"]["template"]["spec"]["containers"][0]["args"]


def test_a_sidecar_whose_admin_does_not_answer_fails_the_run_by_name():
    spec = LoadSpec("127.0.0.1:9", rpcs=1, proxy_admin="http://127.0.0.1:9")
    with pytest.raises(
        RuntimeError,
        match=r"LoadSpec.proxy_admin: cannot read the sidecar's stats at http://127\.0\.0\.1:9/stats",
    ):
        run(spec)


def test_a_plain_string_target_gets_no_proxy_even_in_an_injected_namespace():
    job = kube.load_job_manifest(LoadSpec("grpc-server:50051"), "production", "grpclab-load-x")
    metadata = job["spec"]["template"]["metadata"]
    assert metadata["labels"]["sidecar.istio.io/inject"] == "false"
    assert metadata["annotations"]["linkerd.io/inject"] == "disabled"


def test_an_unknown_via_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match=r"one of dns, clusterip, mesh.*not 'nodeport'"):
        kube.KubeTarget("x:1", "nodeport")
    with pytest.raises(ValueError, match="not 'sidecar'"):
        kube.client_pod_metadata("sidecar")


def test_the_via_survives_the_spec_copies_that_drills_make():
    import dataclasses

    spec = LoadSpec(kube.KubeTarget("xds:///grpc-server.production.svc.cluster.local:50051", "xds"))
    copied = dataclasses.replace(spec, rpcs=10)
    assert copied.target.via == "xds"


INGRESS_MANIFESTS = CLUSTER / "manifests" / "ingress"


def ingress_objects(name: str) -> list[dict]:
    return load_objects(INGRESS_MANIFESTS / name)


def test_the_ingress_nginx_front_door_is_its_https_port_for_the_repos_tls_ingress():
    ingresses = ingress_objects("ingress-nginx.yaml")
    assert kube.ingress_port(ingresses, "grpc-server", "production") == 443
    plain = json.loads(json.dumps(ingresses))
    del plain[0]["spec"]["tls"]
    assert kube.ingress_port(plain, "grpc-server", "production") == 80
    with pytest.raises(ValueError, match="no Ingress of class nginx .* Service grpc-server-v2"):
        kube.ingress_port(ingresses, "grpc-server-v2", "production")
    other_class = json.loads(json.dumps(ingresses))
    other_class[0]["spec"]["ingressClassName"] = "traefik"
    with pytest.raises(ValueError, match="no Ingress of class nginx"):
        kube.ingress_port(other_class, "grpc-server", "production")


def test_the_traefik_front_door_follows_the_ingressroutes_entry_point():
    routes = [
        o for o in ingress_objects("traefik-ingressroute.yaml") if o["kind"] == "IngressRoute"
    ]
    assert kube.traefik_port(routes, "grpc-server", "production") == 443
    routes[0]["spec"]["entryPoints"] = ["grpc-custom"]
    with pytest.raises(ValueError, match=r"spec.entryPoints \['grpc-custom'\] names none"):
        kube.traefik_port(routes, "grpc-server", "production")
    with pytest.raises(ValueError, match="no IngressRoute .* Service grpc-server-v2"):
        kube.traefik_port([], "grpc-server-v2", "production")


def test_the_gateway_front_door_is_the_listener_of_the_routes_parent_gateway():
    routes = ingress_objects("grpcroute.yaml")
    gateways = ingress_objects("gateway.yaml")
    for service in ("grpc-server", "grpc-server-v2"):
        assert kube.gateway_listener(routes, gateways, service, "production") == (
            "grpc-gateway",
            443,
        )
    with pytest.raises(ValueError, match="none of its parentRefs names a Gateway"):
        kube.gateway_listener(routes, [], "grpc-server", "production")
    with pytest.raises(ValueError, match="no GRPCRoute or HTTPRoute .* Service other"):
        kube.gateway_listener(routes, gateways, "other", "production")


def test_each_front_door_target_is_its_controllers_service_at_the_routed_port():
    from types import SimpleNamespace

    from grpclab.cluster.kube.targets import front_target

    objects = ingress_objects("ingress-nginx.yaml") + ingress_objects("traefik-ingressroute.yaml")
    objects += ingress_objects("grpcroute.yaml") + ingress_objects("gateway.yaml")

    def listed(api_version: str, kind: str) -> list[dict]:
        return [o for o in objects if (o["apiVersion"], o["kind"]) == (api_version, kind)]

    class Core:  # Envoy Gateway's generated Service for the Gateway, found by its labels
        def list_namespaced_service(self, namespace: str, label_selector: str):
            assert "owning-gateway-name=grpc-gateway" in label_selector, label_selector
            named = SimpleNamespace(metadata=SimpleNamespace(name="envoy-production-gw-1a2b"))
            return SimpleNamespace(items=[named])

    found = {
        via: front_target(via, "grpc-server", "production", listed, Core())
        for via in ("ingress", "traefik", "gateway")
    }
    assert found == {
        "ingress": "dns:///ingress-nginx-controller.ingress-nginx.svc.cluster.local:443",
        "traefik": "dns:///traefik.traefik.svc.cluster.local:443",
        "gateway": "dns:///envoy-production-gw-1a2b.envoy-gateway-system.svc.cluster.local:443",
    }
    assert [target.via for target in found.values()] == list(found)


def test_port_forward_argv_and_kubectls_forwarding_line():
    assert kube.port_forward_command(
        "svc/prometheus", 9090, "grpclab-monitoring", "kind-grpclab"
    ) == [
        "kubectl",
        "--context",
        "kind-grpclab",
        "-n",
        "grpclab-monitoring",
        "port-forward",
        "--address",
        "127.0.0.1",
        "svc/prometheus",
        ":9090",
    ]
    assert kube.port_forward_command("pod/a", 50051, "alice", None, "/tmp/kc")[:3] == [
        "kubectl",
        "--kubeconfig",
        "/tmp/kc",
    ]
    assert kube.forwarded_address("Forwarding from 127.0.0.1:41873 -> 9090") == "127.0.0.1:41873"
    assert kube.forwarded_address("Forwarding from [::1]:41873 -> 9090") is None
    assert kube.forwarded_address("Handling connection for 41873") is None


def test_a_port_forward_that_cannot_reach_the_cluster_fails_with_kubectls_own_message(tmp_path):
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed (.ci/run installs it)")
    # A kubeconfig whose API server is a closed loopback port: the real kubectl must fail.
    config = unreachable_kubeconfig(tmp_path, "dead")
    argv = kube.port_forward_command("pod/grpc-server-0", 50051, "production", "dead", str(config))
    with pytest.raises(
        kube.KubeError,
        match=r"port-forward pod/grpc-server-0 :50051 failed: .*127\.0\.0\.1:9 was refused",
    ):
        kube.start_port_forward(argv, timeout=30)


def test_a_missing_kubectl_is_named_with_where_to_get_it():
    with pytest.raises(kube.KubeError, match="kubectl-not-here is not installed.*kubernetes.io"):
        kube.start_port_forward(["kubectl-not-here", "-n", "x", "port-forward", "pod/a", ":1"])


def test_the_mesh_client_is_a_valid_idle_deployment_with_a_sidecar():
    deployment = kube.mesh_client_manifest("alice")
    kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    template = deployment["spec"]["template"]
    assert template["metadata"]["labels"]["sidecar.istio.io/inject"] == "true"
    assert (
        deployment["spec"]["selector"]["matchLabels"].items()
        <= template["metadata"]["labels"].items()
    )
    assert deployment["metadata"]["namespace"] == "alice"


def test_a_pods_container_port_is_found_by_name_or_number():
    pod = make_pod("a")
    assert kube.container_port(pod, "grpc") == 50052
    assert kube.container_port(pod, 50052) == 50052
    assert kube.container_port(pod, 8080) == 8080  # undeclared but numeric: forwarded as asked
    with pytest.raises(KeyError, match=r"no container port 'metrics' \(it has grpc=50052\)"):
        kube.container_port(pod, "metrics")


def test_only_service_dns_targets_can_be_forwarded_to_this_machine():
    assert kube.service_of_target(
        "dns:///ingress-nginx-controller.ingress-nginx.svc.cluster.local:443"
    ) == ("ingress-nginx", "ingress-nginx-controller", 443)
    assert kube.service_of_target("grpc-server.alice.svc.cluster.local:50051") == (
        "alice",
        "grpc-server",
        50051,
    )
    for target in (
        "xds:///grpc-server.production.svc.cluster.local:50051",
        "10.96.0.20:50051",
        "grpc-server:50051",
        "a.b.c.svc.cluster.local:1",
        "grpc-server.production.svc.cluster.local:grpc",
    ):
        with pytest.raises(ValueError, match="does not name a Service"):
            kube.service_of_target(target)


def test_the_kind_prometheus_scrapes_as_often_as_the_sandboxs():
    # Notebook 09's rate windows were measured against the sandbox's interval.
    from grpclab.cluster.sandbox.prometheus import SCRAPE_INTERVAL

    (config_map,) = [
        o for o in load_objects(CLUSTER / "addons" / "prometheus.yaml") if o["kind"] == "ConfigMap"
    ]
    settings = yaml.safe_load(config_map["data"]["prometheus.yml"])["global"]
    assert settings["scrape_interval"] == settings["evaluation_interval"] == SCRAPE_INTERVAL


def test_each_via_checks_for_the_deployment_its_add_on_script_installs():
    assert set(kube.ADDON_FOR_VIA) == set(kube.VIAS) - {"dns", "clusterip", "addresses"}
    for via, (addon, namespace, deployment) in kube.ADDON_FOR_VIA.items():
        assert addon in kube.ADDONS, via
        script = (CLUSTER / "addons" / f"{addon}.sh").read_text()
        # The script's own idempotence check or rollout wait names the same Deployment.
        assert namespace in script and deployment in script, (via, addon, namespace, deployment)


# -- issue 16: progress as it happens (item 14) ---------------------------------------------


def test_streamed_lines_reach_the_cell_before_the_script_ends(tmp_path):
    # The script prints a line, then waits until the test has seen that line: captured
    # output (what install_addon did before) would deadlock here until the timeout.
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    script = tmp_path / "addon.sh"
    script.write_text(f'echo "[demo] step one"\nread -r reply < {gate}\necho "[demo] got $reply"\n')
    heard: list[str] = []

    def say(line: str) -> None:
        heard.append(line)
        if line.endswith("step one"):
            with open(gate, "w") as opened:  # the script ends only once this line came
                opened.write("go\n")

    code, output = kube.run_streamed(["bash", str(script)], "add-on demo", timeout=20, say=say)
    assert code == 0
    assert heard == ["add-on demo: [demo] step one", "add-on demo: [demo] got go"]
    assert output == "[demo] step one\n[demo] got go"


def test_a_silent_step_is_reported_as_still_running_and_stderr_is_in_order(tmp_path):
    script = tmp_path / "addon.sh"
    script.write_text("echo out; echo err >&2; sleep 2; echo done\n")
    heard: list[str] = []
    code, output = kube.run_streamed(
        ["bash", str(script)], "x", timeout=20, say=heard.append, quiet_s=0.3
    )
    assert code == 0 and output == "out\nerr\ndone"
    assert heard[:2] == ["x: out", "x: err"] and heard[-1] == "x: done"
    assert any(line.startswith("x: still running (") for line in heard[2:-1])


def test_a_step_past_its_timeout_is_ended_with_its_children(tmp_path):
    marker = tmp_path / "child.pid"
    script = tmp_path / "addon.sh"
    script.write_text(f"sleep 60 & echo $! > {marker}; echo started; wait\n")
    with pytest.raises(kube.KubeError, match=r"did not finish in 5 s; its last lines:\nstarted"):
        kube.run_streamed(["bash", str(script)], "slow", timeout=5, say=lambda _: None)
    child = int(marker.read_text())
    with pytest.raises(ProcessLookupError):
        for _ in range(50):  # the group got SIGTERM; give the child a moment to go
            os.kill(child, 0)
            time.sleep(0.1)


def test_install_addon_streams_through_say_and_stdout_not_stderr(tmp_path, capfd, monkeypatch):
    env = {"PATH": bin_without(tmp_path, "kubectl"), "HOME": str(tmp_path)}
    monkeypatch.setattr(os, "environ", env)
    with pytest.raises(kube.KubeError, match="'kubectl' is not installed"):
        kube.install_addon("prometheus")
    out, err = capfd.readouterr()
    assert "[kube] add-on prometheus: [prometheus] 'kubectl' is not installed" in out
    assert err == ""


def test_a_wait_is_quiet_when_short_and_says_what_it_waits_for_when_long():
    now = [0.0]
    heard: list[str] = []
    waiting = kube.Waiting(
        "deployment p/x", after_s=5, every_s=15, say=heard.append, clock=lambda: now[0]
    )
    for t, state in [(1, "0/3 ready"), (4, "1/3 ready")]:
        now[0] = t
        waiting.update(state)
    assert heard == []  # a wait under 5 s says nothing
    for t, state in [(6, "1/3 ready"), (8, "1/3 ready"), (9, "2/3 ready"), (25, "2/3 ready")]:
        now[0] = t
        waiting.update(state)
    assert heard == [
        "deployment p/x: 1/3 ready (6 s)",
        "deployment p/x: 2/3 ready (9 s)",  # a change is said at once
        "deployment p/x: 2/3 ready (25 s)",  # no change: again after every_s
    ]
    now[0] = 26
    waiting.finish("3/3 ready")
    assert heard[-1] == "deployment p/x: 3/3 ready after 26 s"
    quiet = kube.Waiting("w", say=heard.append, clock=lambda: 0.0)
    quiet.finish("done")
    assert heard[-1] != "w: done after 0 s"


# -- issue 16: smaller findings and the desk review ----------------------------------------


def test_a_port_forward_that_writes_much_to_stderr_does_not_stall(tmp_path):
    # kubectl writes an error line per failed connection to stderr. More than a pipe holds
    # (64 KiB), unread, would block it before it ever prints its forwarding line.
    fake = tmp_path / "kubectl"
    fake.write_text(
        "#!/bin/sh\n"
        "i=0; while [ $i -lt 2000 ]; do\n"
        "  echo 'E1202 an error line from a failed connection, long enough to fill pipes' >&2\n"
        "  i=$((i+1)); done\n"
        "echo 'Forwarding from 127.0.0.1:45678 -> 50051'\n"
        "sleep 60\n"
    )
    fake.chmod(0o755)
    process, address = kube.start_port_forward([str(fake), "port-forward"], timeout=20)
    try:
        assert address == "127.0.0.1:45678"
    finally:
        kube.stop_process(process)


def test_job_start_reads_image_pull_and_failed_pods_and_waits_on_the_rest():
    from kubernetes.client import V1ContainerState, V1ContainerStateWaiting

    pulled = make_pod("load-1", ready=False)
    pulled.status.container_statuses[0].name = "load"
    pulled.status.container_statuses[0].state = V1ContainerState(
        waiting=V1ContainerStateWaiting(reason="ErrImageNeverPull", message="never pull")
    )
    state = kube.job_start(None, [pulled], "grpclab/demo-server:0.1.0")
    assert state.failure and "cannot be pulled (ErrImageNeverPull" in state.failure
    assert "make kind-up" in state.failure
    evicted = make_pod("load-2", ready=False)
    evicted.status.phase, evicted.status.reason = "Failed", "Evicted"
    evicted.status.container_statuses = []
    state = kube.job_start(None, [evicted], "img")
    assert state.failure == "pod load-2 failed before the load ran (Evicted)"
    state = kube.job_start(None, [], "img")
    assert state.pod is None and state.failure is None and state.waiting.startswith("no pod yet")


def test_a_crash_is_seen_from_the_restart_count_or_the_containers_state():
    from kubernetes.client import V1ContainerState, V1ContainerStateWaiting

    def server_pod():
        pod = make_pod("grpc-server-a")
        pod.status.container_statuses[0].name = "grpc-server"  # the sidecar has none here
        return pod

    before, after = server_pod(), server_pod()
    assert not kube.crashed_since(before, after)
    after.status.container_statuses[0].restart_count += 1
    assert kube.crashed_since(before, after)
    waiting = server_pod()
    waiting.status.container_statuses[0].state = V1ContainerState(
        waiting=V1ContainerStateWaiting(reason="CrashLoopBackOff")
    )
    assert kube.crashed_since(before, waiting)


def test_the_coredns_filter_turns_the_cache_off_for_cluster_local_once(tmp_path):
    # kubeadm 1.31's Corefile (kind v0.27.0's node image), as `kubectl get cm coredns` shows it.
    corefile = (
        ".:53 {\n    errors\n    health {\n       lameduck 5s\n    }\n    ready\n"
        "    kubernetes cluster.local in-addr.arpa ip6.arpa {\n       pods insecure\n"
        "       fallthrough in-addr.arpa ip6.arpa\n       ttl 30\n    }\n"
        "    prometheus :9153\n    forward . /etc/resolv.conf {\n       max_concurrent 1000\n"
        "    }\n    cache 30\n    loop\n    reload\n    loadbalance\n}\n"
    )
    script = str(CLUSTER / "coredns-no-cluster-cache.sh")

    def run(text: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", script], input=text, capture_output=True, text=True)

    once = run(corefile)
    assert once.returncode == 0, once.stderr
    assert (
        "    cache 30 {\n       disable success cluster.local\n"
        "       disable denial cluster.local\n    }\n    loop\n" in once.stdout
    )
    assert (
        once.stdout.replace(
            " {\n       disable success cluster.local\n       disable denial cluster.local\n    }",
            "",
        )
        == corefile
    )
    assert run(once.stdout).stdout == once.stdout  # kind-up.sh runs it on every call
    refused = run(corefile.replace("cache 30\n", "cache {\n  success 100\n}\n"))
    assert refused.returncode == 1 and "change it by hand" in refused.stderr


def test_the_envoy_gateway_script_makes_and_awaits_the_class_the_gateway_names():
    gateway = load_objects(CLUSTER / "manifests" / "ingress" / "gateway.yaml")[0]
    (gateway_class,) = yaml.safe_load_all(
        (CLUSTER / "addons" / "envoy-gateway-class.yaml").read_text()
    )
    assert gateway_class["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert gateway_class["kind"] == "GatewayClass"
    assert gateway_class["metadata"]["name"] == gateway["spec"]["gatewayClassName"]
    # The name Envoy Gateway's controller watches by default (its quickstart's GatewayClass).
    assert (
        gateway_class["spec"]["controllerName"] == "gateway.envoyproxy.io/gatewayclass-controller"
    )
    script = (CLUSTER / "addons" / "envoy-gateway.sh").read_text()
    applied = script.index('apply --server-side --field-manager=grpclab -f "${CLASS_MANIFEST}"')
    waited = script.index("wait --timeout=2m gatewayclass/envoy --for=condition=Accepted")
    assert 'CLASS_MANIFEST="$(dirname "$0")/envoy-gateway-class.yaml"' in script
    # Also when Envoy Gateway was there already: the class comes after the install branch.
    assert script.index("\nfi\n") < applied < waited
    done = subprocess.run(["bash", "-n", str(CLUSTER / "addons" / "envoy-gateway.sh")])
    assert done.returncode == 0


def test_kind_nodes_carry_the_zones_the_zone_b_manifest_selects_and_only_it_tolerates():
    nodes = yaml.safe_load((CLUSTER / "kind.yaml").read_text())["nodes"]
    zones = [n.get("labels", {}).get("topology.kubernetes.io/zone") for n in nodes]
    assert zones == [None, "zone-a", "zone-a", "zone-b"]
    (zone_b_node,) = [
        n for n in nodes if n.get("labels", {}).get("topology.kubernetes.io/zone") == "zone-b"
    ]
    patch = yaml.safe_load(zone_b_node["kubeadmConfigPatches"][0])
    assert patch["kind"] == "JoinConfiguration"
    (taint,) = patch["nodeRegistration"]["taints"]
    deployments = [
        o for p in sorted((CLUSTER / "manifests").rglob("*.yaml")) for o in load_objects(p)
        if o["kind"] == "Deployment"
    ]  # fmt: skip
    for deployment in deployments:
        pod_spec = deployment["spec"]["template"]["spec"]
        tolerates = any(
            t.get("key") == taint["key"] and t.get("value") == taint["value"]
            and t.get("effect") == taint["effect"]
            for t in pod_spec.get("tolerations", [])
        )  # fmt: skip
        wants_b = pod_spec.get("nodeSelector", {}).get("topology.kubernetes.io/zone") == "zone-b"
        assert tolerates == wants_b, deployment["metadata"]["name"]
        if wants_b:
            labels = zone_b_node["labels"]
            assert all(labels.get(k) == v for k, v in pod_spec["nodeSelector"].items())


def test_diagnostics_describe_the_failing_pods_and_only_those(tmp_path):
    calls = tmp_path / "calls"
    fake = tmp_path / "bin" / "kubectl"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/bash\n"
        f'echo "$*" >> {calls}\n'
        'case "$*" in\n'
        "  *'get pods -A -o jsonpath'*)\n"
        "    printf 'p ok Running true true 0 0\\n'\n"
        "    printf 'p pending Pending\\n'\n"
        "    printf 'p unready Running false 0\\n'\n"
        "    printf 'p restarted Running true 3\\n'\n"
        "    printf 'p job Succeeded false 0\\n' ;;\n"
        "esac\n"
    )
    fake.chmod(0o755)
    env = {"PATH": f"{fake.parent}:/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run(
        ["bash", str(CLUSTER / "kind-diagnostics.sh"), str(tmp_path / "out")],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    described = [
        line.split()[-1] for line in calls.read_text().splitlines() if "describe pod -n" in line
    ]
    assert described == ["pending", "unready", "restarted"]
    logged = sorted(p.name for p in (tmp_path / "out" / "logs").glob("*.log"))
    assert "p_ok.log" in logged and "p_job.log" in logged


def test_diagnostics_cover_the_meshes_waypoints_and_zones_one_kind_at_a_time(tmp_path):
    # A cluster with Istio ambient but no Linkerd: the missing kind fails alone, and what
    # istiod pushed to ztunnel is recorded.
    calls = tmp_path / "calls"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kubectl").write_text(
        "#!/bin/bash\n"
        f'echo "kubectl $*" >> {calls}\n'
        'case "$*" in\n'
        '  *serviceprofiles*) echo "error: no resource type" >&2; exit 1 ;;\n'
        "  *'get gateways -A'*) echo 'name: waypoint' ;;\n"
        "  *'get namespaces --show-labels'*) echo 'production istio.io/dataplane-mode=ambient' ;;\n"
        "esac\n"
    )
    (bin_dir / "istioctl").write_text(f'#!/bin/bash\necho "istioctl $*" >> {calls}\necho "$*"\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path)}
    out = tmp_path / "out"
    done = subprocess.run(
        ["bash", str(CLUSTER / "kind-diagnostics.sh"), str(out)],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "waypoint" in (out / "gateway-api.yaml").read_text()
    assert "dataplane-mode=ambient" in (out / "namespaces.txt").read_text()
    lines = calls.read_text().splitlines()
    assert "kubectl --context kind-grpclab get services,endpointslices -A -o yaml" in lines
    for kind in ("destinationrules.networking.istio.io", "virtualservices.networking.istio.io"):
        assert f"kubectl --context kind-grpclab get {kind} -A -o yaml" in lines
    assert "no resource type" in (out / "mesh-rules.yaml").read_text()
    for view in ("proxy-status", "ztunnel-config workloads", "ztunnel-config services"):
        assert f"istioctl --context kind-grpclab {view}" in lines
        assert (out / f"istioctl-{view.replace(' ', '-')}.txt").read_text() == (
            f"--context kind-grpclab {view}\n"
        )


def test_nbval_ignores_the_kube_notes_so_checked_cells_compare_on_kind(capsys):
    from nbval.plugin import get_sanitize_patterns

    kube.Waiting("deployment production/grpc-server", after_s=0).update("1/3 ready")
    cell = "3 pods ready\n" + capsys.readouterr().out + "done\n"
    assert cell.count(kube.NOTE_PREFIX) == 1
    for regex, replace in get_sanitize_patterns(
        (REPO / "tests" / "nbval_sanitize.cfg").read_text()
    ):
        cell = re.sub(regex, replace, cell)
    assert cell == "3 pods ready\ndone\n"


def test_a_sidecar_image_pull_error_is_waited_on_but_the_demo_images_is_final():
    from kubernetes.client import V1ContainerState, V1ContainerStateWaiting

    def pulling(container: str, reason: str):
        pod = make_pod("load-3", ready=False)
        pod.status.container_statuses[0].name = container
        pod.status.container_statuses[0].state = V1ContainerState(
            waiting=V1ContainerStateWaiting(reason=reason, message="rate limited")
        )
        return pod

    sidecar = kube.job_start(None, [pulling("istio-proxy", "ImagePullBackOff")], "img")
    assert sidecar.failure is None and "istio-proxy ImagePullBackOff" in sidecar.waiting
    own = kube.job_start(None, [pulling("load", "ImagePullBackOff")], "img")
    assert own.failure and "make kind-up" in own.failure


# What cluster/kube/__init__.py says the package may import (tests/test_backdoors.py leaves
# the backends out of its check, so this one holds the kube package to its own word).
KUBE_MAY_IMPORT = (
    "grpclab.cluster.kube",
    "grpclab.cluster.containers",
    "grpclab.cluster.manifests",
    "grpclab.load",
    "grpclab.paths",
    "grpclab.notes",
)


def grpclab_imports(tree: ast.AST) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return {name for name in found if name.startswith("grpclab")}


def test_the_kube_package_imports_only_what_its_init_names():
    package = REPO / "src" / "grpclab" / "cluster" / "kube"
    for path in sorted(package.glob("*.py")):
        imported = grpclab_imports(ast.parse(path.read_text(), str(path)))
        stray = {
            name
            for name in imported
            if name != "grpclab.cluster"
            and not any(name == ok or name.startswith(ok + ".") for ok in KUBE_MAY_IMPORT)
        }
        assert not stray, f"{path.name} imports {sorted(stray)}"
    assert grpclab_imports(ast.parse("from grpclab.cluster.sandbox import Sandbox")) == {
        "grpclab.cluster.sandbox"
    }


def test_importing_the_kube_package_loads_no_sandbox_no_xds_and_not_yet_the_client():
    probe = (
        "import sys, grpclab.cluster.kube\n"
        "print(sorted(m for m in sys.modules if m.startswith(('grpclab.cluster.sandbox', "
        "'grpclab.xds', 'kubernetes'))))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_via_ambient_on_a_sidecar_istio_says_it_has_no_ztunnel():
    from types import SimpleNamespace

    from kubernetes.client.exceptions import ApiException

    class Apps:
        def __init__(self, daemon_sets):
            self.daemon_sets = daemon_sets

        def read_namespaced_daemon_set(self, name, namespace):
            if (namespace, name) not in self.daemon_sets:
                raise ApiException(status=404)
            return SimpleNamespace(metadata=SimpleNamespace(name=name))

    sidecar = object.__new__(kube.KubeCluster)
    sidecar._apps = Apps(set())
    with pytest.raises(kube.KubeError, match=r"no ztunnel DaemonSet.*istio-ambient"):
        sidecar._check_ztunnel()
    ambient = object.__new__(kube.KubeCluster)
    ambient._apps = Apps({("istio-system", "ztunnel")})
    ambient._check_ztunnel()
