"""KubeCluster with the real kubernetes client against a stand-in API server on loopback.

There is no kind cluster here (no Docker), so these tests put a small HTTP server where the
API server would be and have it answer as Kubernetes 1.31 does for the case at hand: a
403, a container that cannot be created, a second Deployment whose pods the selector also
matches. The kubernetes client, its ApiException and KubeCluster's handling of them are
the real ones.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from grpclab.cluster import kube
from grpclab.load import LoadSpec

Reply = tuple[int, dict]
VERSION = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.6",
    "gitCommit": "0",
    "gitTreeState": "clean",
    "buildDate": "2025-02-12T21:26:09Z",
    "goVersion": "go1.22.12",
    "compiler": "gc",
    "platform": "linux/amd64",
}
Route = Callable[[str, str, dict, dict | None], Reply | None]


def status(code: int, reason: str, message: str) -> Reply:
    return code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason,
                  "message": message, "code": code}  # fmt: skip


class Api:
    """The stand-in: `route(method, path, query, body)` answers, or None for a 404."""

    def __init__(self) -> None:
        self.route: Route = lambda *_: None
        self.version: Reply = (200, VERSION)
        self.requests: list[tuple[str, str]] = []

    def answer(self, method: str, raw_path: str, body: dict | None) -> Reply:
        parts = urlsplit(raw_path)
        path = parts.path.rstrip("/")
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        self.requests.append((method, path))
        if path == "/version":
            return self.version
        found = self.route(method, path, query, body)
        return found if found is not None else status(404, "NotFound", f"{path} not found")


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[Api, Path]]:
    state = Api()

    class Handler(BaseHTTPRequestHandler):
        def _reply(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            code, obj = state.answer(self.command, self.path, body)
            data = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = do_PATCH = _reply  # noqa: N815 (http.server API)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "stub", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}],
        "users": [{"name": "learner", "user": {"token": "t"}}],
        "contexts": [{"name": "stub", "context": {"cluster": "stub", "user": "learner"}}],
        "current-context": "stub",
    }  # fmt: skip
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    try:
        yield state, kubeconfig
    finally:
        server.shutdown()
        server.server_close()


def connect(kubeconfig: Path, **options) -> kube.KubeCluster:
    return kube.KubeCluster(
        "kubeconfig", namespace="production", context="stub", kubeconfig=str(kubeconfig),
        poll_interval=0.05, **options,
    )  # fmt: skip


def meta(name: str, uid: str, owner: str | None = None, **extra) -> dict:
    data = {"name": name, "namespace": "production", "uid": uid, **extra}
    if owner:
        data["ownerReferences"] = [
            {"apiVersion": "apps/v1", "kind": "X", "name": "x", "uid": owner, "controller": True}
        ]
    return data


def service() -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta("grpc-server", "svc"),
        "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "grpc", "port": 50051}]},
    }


# -- errors by kind: an API server that answers with a refusal is not one that cannot be reached


@pytest.mark.parametrize(
    ("reply", "said"),
    [
        (status(401, "Unauthorized", "Unauthorized"), r"refused these credentials \(401: Unauth"),
        (status(500, "InternalError", "etcd is down"), r"failed \(500: etcd is down\)"),
    ],
)
def test_connect_tells_a_refusal_from_no_answer(api, reply, said):
    state, kubeconfig = api
    state.version = reply
    with pytest.raises(kube.KubeError, match=said) as raised:
        connect(kubeconfig)
    assert "context stub" in str(raised.value) and "cannot reach" not in str(raised.value)


# -- 403 is not "not installed" (issue 16, smaller findings; issue 19 part 3) ---------------


def test_a_forbidden_addon_check_says_it_cannot_tell_instead_of_not_installed(api):
    state, kubeconfig = api

    def route(method, path, query, body):
        if path == "/api/v1/namespaces/production/services/grpc-server":
            return 200, service()
        if path == "/apis/apps/v1/namespaces/istio-system/deployments/istiod":
            return status(403, "Forbidden", 'deployments.apps "istiod" is forbidden')
        return None

    state.route = route
    lab = connect(kubeconfig)
    try:
        with pytest.raises(
            kube.KubeError, match=r"cannot tell whether deployment istio-system/istiod"
        ):
            lab.target("grpc-server", via="mesh")
        # A 404 is the one answer that means "not installed".
        state.route = lambda m, p, q, b: route(m, p, q, b) if "istiod" not in p else None
        hint = r"install_addon\(lab, 'istio'\) from grpclab.cluster.controllers"
        with pytest.raises(kube.KubeError, match=rf"needs the istio add-on.*: {hint}"):
            lab.target("grpc-server", via="mesh")
    finally:
        lab.down()


def test_api_errors_other_than_the_handled_statuses_are_not_swallowed(api):
    state, kubeconfig = api
    state.route = lambda m, p, q, b: (
        status(500, "InternalError", "etcd is down") if "pods/" in p else None
    )
    lab = connect(kubeconfig)
    try:
        with pytest.raises(kube.api_exception()) as raised:
            lab.delete_pod("grpc-server-abc")
        assert raised.value.status == 500
        state.route = lambda m, p, q, b: None  # 404
        with pytest.raises(KeyError, match='pod "grpc-server-abc" not found'):
            lab.delete_pod("grpc-server-abc")
    finally:
        lab.down()


# -- wait_ready by the current ReplicaSet (item 12) ------------------------------------------


def pod(name: str, owner: str, ready: bool = True, labels: dict | None = None, **status) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta(name, f"uid-{name}", owner, labels=labels or {"app": "grpc-server"}),
        "spec": {"containers": [{"name": "grpc-server", "image": "grpclab/demo-server:0.1.0"}]},
        "status": {
            "phase": "Running",
            "podIP": "10.244.1.9",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            **status,
        },
    }


def test_wait_ready_counts_the_current_replicasets_pods_not_every_pod_the_selector_matches(api):
    state, kubeconfig = api
    revision = {"deployment.kubernetes.io/revision": "2"}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta("grpc-server", "dep", generation=2, annotations=revision),
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "grpc-server"}},
                 "template": {"metadata": {"labels": {"app": "grpc-server"}},
                              "spec": {"containers": [{"name": "c", "image": "i"}]}}},
        "status": {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2,
                   "availableReplicas": 2, "readyReplicas": 2},
    }  # fmt: skip

    def replicaset(name: str, uid: str, owner: str, revision: str) -> dict:
        annotations = {"deployment.kubernetes.io/revision": revision}
        return {
            "metadata": meta(name, uid, owner, annotations=annotations),
            "spec": {"selector": {"matchLabels": {"app": "grpc-server"}}},
        }

    replicasets = [
        replicaset("grpc-server-old", "rs-old", "dep", "1"),
        replicaset("grpc-server-new", "rs-new", "dep", "2"),
        # Another Deployment (xds/deployment-zone-b.yaml) whose pods the selector matches too.
        replicaset("grpc-server-zone-b-1", "rs-b", "dep-b", "2"),
    ]
    pods = [
        pod("grpc-server-new-a", "rs-new"),
        pod("grpc-server-new-b", "rs-new"),
        pod("grpc-server-old-c", "rs-old"),  # still terminating-but-ready from the old revision
        pod("grpc-server-zone-b-1-d", "rs-b"),
    ]

    def route(method, path, query, body):
        if path.endswith("/deployments/grpc-server"):
            return 200, deployment
        if path.endswith("/replicasets"):
            return 200, {"kind": "ReplicaSetList", "apiVersion": "apps/v1", "metadata": {},
                         "items": replicasets}  # fmt: skip
        if path.endswith("/pods"):
            assert query.get("labelSelector") == "app=grpc-server"
            return 200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": pods}
        return None

    state.route = route
    lab = connect(kubeconfig)
    try:
        ready = lab.wait_ready("grpc-server", timeout=5)
        assert [p.name for p in ready] == ["grpc-server-new-a", "grpc-server-new-b"]
    finally:
        lab.down()


def test_a_rollout_timeout_names_the_probe_that_keeps_failing_and_the_kubelets_words(api):
    # Issue 14: env says 9191, the probe says 9090; the kubelet's Unhealthy event says why.
    state, kubeconfig = api
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta("grpc-server", "dep", generation=1),
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "grpc-server"}},
                 "template": {"metadata": {"labels": {"app": "grpc-server"}},
                              "spec": {"containers": [{"name": "c", "image": "i"}]}}},
        "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1,
                   "unavailableReplicas": 1},
    }  # fmt: skip
    unready = pod("grpc-server-7d9f-abcde", "rs", ready=False)
    unready["spec"]["containers"][0].update(
        env=[{"name": "GRPC_PORT", "value": "9191"}],
        readinessProbe={"grpc": {"port": 9090}, "periodSeconds": 5},
        livenessProbe={"tcpSocket": {"port": 9191}},
    )
    failed = ('Readiness probe failed: timeout: failed to connect service "10.244.1.9:9090" '
              "within 1s: context deadline exceeded")  # fmt: skip
    events = [
        {"metadata": meta("e1", "e1"), "reason": "Started", "message": "Started container",
         "involvedObject": {"kind": "Pod", "name": "grpc-server-7d9f-abcde"}, "type": "Normal",
         "lastTimestamp": "2026-01-01T00:00:01Z", "count": 1},
        {"metadata": meta("e2", "e2"), "reason": "Unhealthy", "message": failed, "type": "Warning",
         "involvedObject": {"kind": "Pod", "name": "grpc-server-7d9f-abcde",
                            "fieldPath": "spec.containers{grpc-server}"},
         "lastTimestamp": "2026-01-01T00:01:00Z", "count": 12},
        {"metadata": meta("e3", "e3"), "reason": "Unhealthy", "message": "not this pod",
         "involvedObject": {"kind": "Pod", "name": "other"}, "type": "Warning",
         "lastTimestamp": "2026-01-01T00:01:00Z", "count": 1},
    ]  # fmt: skip

    def route(method, path, query, body):
        if path.endswith("/deployments/grpc-server"):
            return 200, deployment
        if path.endswith("/replicasets"):
            return 200, {"kind": "ReplicaSetList", "apiVersion": "apps/v1", "metadata": {},
                         "items": []}  # fmt: skip
        if path.endswith("/pods"):
            return 200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [unready]}
        if path == "/api/v1/namespaces/production/events":
            return 200, {"kind": "EventList", "apiVersion": "v1", "metadata": {}, "items": events}
        return None

    state.route = route
    lab = connect(kubeconfig)
    try:
        with pytest.raises(TimeoutError) as raised:
            lab.wait_ready("grpc-server", timeout=0.2)
        message = str(raised.value)
        assert "grpc-server-7d9f-abcde Running ready=False" in message, message
        assert "grpc-server: readiness probe grpc :9090" in message, message
        assert "grpc-server: liveness probe tcp-socket :9191" in message, message
        assert f"Pod/grpc-server-7d9f-abcde: Unhealthy: {failed} (x12)" in message, message
        assert "Started container" not in message and "not this pod" not in message, message
    finally:
        lab.down()


@pytest.mark.parametrize("method", ["xds_resources", "xds_nacks", "stop_xds"])
def test_grpclabs_own_xds_control_plane_methods_say_kube_has_none(api, method):
    _, kubeconfig = api
    lab = connect(kubeconfig)
    try:
        with pytest.raises(NotImplementedError, match=rf"{method}: .*istiod.*sandbox only"):
            getattr(lab, method)(*(["type"] if method == "xds_resources" else []))
    finally:
        lab.down()


# -- a load Job that cannot start (item 10), and its clean-up (smaller findings) ------------


def job_route(
    job_pod: dict | None,
    job_status: dict | None = None,
    delete: Reply | None = None,
    events: Reply | None = None,
):
    deleted = []

    def route(method, path, query, body):
        if method == "POST" and path.endswith("/jobs"):
            return 201, body
        if method == "DELETE" and "/jobs/" in path:
            deleted.append(path)
            return delete or (200, {"kind": "Status", "status": "Success"})
        if path.endswith("/status") and "/jobs/" in path:
            name = path.split("/")[-2]
            return 200, {"apiVersion": "batch/v1", "kind": "Job",
                         "metadata": meta(name, "job"), "status": job_status or {}}  # fmt: skip
        if path.endswith("/pods"):
            items = [job_pod] if job_pod else []
            return 200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}
        if path.endswith("/events") and events is not None:
            return events
        if path.endswith("/events"):
            return 200, {"kind": "EventList", "apiVersion": "v1", "metadata": {}, "items": [
                {"metadata": meta("e1", "e1"), "involvedObject": {"kind": "Pod", "name": "load-x"},
                 "reason": "FailedScheduling", "message": "0/4 nodes are available",
                 "lastTimestamp": "2026-01-01T00:00:00Z"}]}  # fmt: skip
        return None

    return route, deleted


def load_pod(**status) -> dict:
    return pod("load-x", "job", labels={"job-name": "j"}, **status)


def spec() -> LoadSpec:
    return LoadSpec("dns:///grpc-server.production.svc.cluster.local:50051", rpcs=10)


def test_a_load_container_that_cannot_be_created_fails_at_once_with_the_reason(api):
    state, kubeconfig = api
    waiting = {"waiting": {"reason": "CreateContainerConfigError",
                           "message": 'secret "grpc-tls" not found'}}  # fmt: skip
    statuses = [{"name": "load", "image": "img", "imageID": "", "ready": False,
                 "restartCount": 0, "state": waiting}]  # fmt: skip
    state.route, deleted = job_route(load_pod(phase="Pending", containerStatuses=statuses))
    lab = connect(kubeconfig, load_timeout=600, start_timeout=20)
    try:
        with pytest.raises(
            kube.KubeError, match=r"cannot start \(CreateContainerConfigError: secret"
        ):
            lab.run_load(spec())
        assert deleted, "the Job is deleted after a failed start"
    finally:
        lab.down()


@pytest.mark.parametrize(
    ("reason", "delete"),
    [
        ("DeadlineExceeded", None),
        # A failed clean-up after the failure must not replace it (smaller findings).
        ("BackoffLimitExceeded", status(500, "InternalError", "etcd is down")),
    ],
)
def test_a_failed_job_is_reported_by_its_condition_whatever_its_delete_does(api, reason, delete):
    state, kubeconfig = api
    failed = {"conditions": [{"type": "Failed", "status": "True", "reason": reason,
                              "message": "the Job controller's message"}]}  # fmt: skip
    state.route, deleted = job_route(None, job_status=failed, delete=delete)
    lab = connect(kubeconfig, start_timeout=600)
    try:
        with pytest.raises(kube.KubeError, match=rf"the Job failed \({reason}: the Job"):
            lab.run_load(spec())
        assert deleted
    finally:
        lab.down()


def test_an_unschedulable_load_pod_gives_up_after_the_start_timeout_with_the_events(api):
    state, kubeconfig = api
    conditions = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                   "message": "0/4 nodes are available: insufficient cpu"}]  # fmt: skip
    state.route, _ = job_route(load_pod(phase="Pending", conditions=conditions))
    lab = connect(kubeconfig, load_timeout=600, start_timeout=0.5)
    try:
        with pytest.raises(kube.KubeError) as raised:
            lab.run_load(spec())
        message = str(raised.value)
        assert "did not start in 0 s: pod load-x unschedulable: 0/4 nodes" in message
        assert "Pod/load-x: FailedScheduling" in message
    finally:
        lab.down()


@pytest.mark.parametrize(
    ("events", "said"),
    [
        (status(403, "Forbidden", "events is forbidden"), None),
        (status(500, "InternalError", "etcd is down"), "events could not be read: 500: etcd"),
    ],
)
def test_events_that_cannot_be_read_do_not_hide_why_the_job_did_not_start(api, events, said):
    state, kubeconfig = api
    conditions = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                   "message": "0/4 nodes are available: insufficient cpu"}]  # fmt: skip
    state.route, _ = job_route(load_pod(phase="Pending", conditions=conditions), events=events)
    lab = connect(kubeconfig, load_timeout=600, start_timeout=0.5)
    try:
        with pytest.raises(kube.KubeError) as raised:
            lab.run_load(spec())
        message = str(raised.value)
        assert "did not start in 0 s: pod load-x unschedulable: 0/4 nodes" in message
        if said is None:  # no permission to read events: the message stands without them
            assert "Latest events" not in message
        else:
            assert said in message
    finally:
        lab.down()


# -- pods() leaves out grpclab's own pods (item 7) --------------------------------------------


def test_pods_lists_the_learners_pods_without_the_load_jobs(api):
    state, kubeconfig = api
    items = [
        pod("grpc-server-a", "rs"),
        pod("grpclab-load-1234-xyz", "job", labels={"app.kubernetes.io/name": "grpclab-load"}),
        pod("grpclab-mesh-client-1-2", "rs2", labels={"app": kube.MESH_CLIENT}),
    ]
    state.route = lambda m, p, q, b: (
        (200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})
        if p.endswith("/pods")
        else None
    )
    lab = connect(kubeconfig)
    try:
        assert [p.name for p in lab.pods()] == ["grpc-server-a"]
        asked = lab.pods({"app.kubernetes.io/name": "grpclab-load"})
        assert "grpclab-load-1234-xyz" in [p.name for p in asked]
    finally:
        lab.down()
