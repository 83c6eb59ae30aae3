"""Manifest loading, schema validation and the sandbox's support checks, on real files."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest
import yaml
from support import BAD_MANIFESTS as BAD
from support import REPO

from grpclab.cluster import manifests
from grpclab.cluster.manifests import ManifestError, check_sandbox_support, load_objects

SHIPPED = sorted((REPO / "cluster" / "manifests").rglob("*.yaml"))
DEPLOYMENT = "Deployment production/grpc-server"
SERVICE = "Service production/grpc-server"
CONTAINER = "spec.template.spec.containers[0]"


class Bad(NamedTuple):
    """What one bad fixture must produce: which check refuses it, and where it points."""

    stage: str  # "load": load_objects refuses it; "sandbox": only check_sandbox_support does
    document: int | None  # 0-based
    object: str | None
    field: str | None
    line: int | None
    reason: str  # a fragment of the reason


EXPECTED: dict[str, Bad] = {
    "yaml-syntax-error.yaml": Bad("load", 0, "document 1", None, 12, "YAML syntax error"),
    "yaml-tab-indentation.yaml": Bad("load", 0, "document 1", None, 8, "YAML syntax error"),
    "duplicate-key.yaml": Bad("load", 0, "document 1", None, 9, "'replicas' appears twice"),
    "empty-file.yaml": Bad("load", None, None, None, None, "no Kubernetes objects"),
    "not-a-mapping.yaml": Bad("load", 0, "document 1", None, 2, "found a list"),
    "list-of-garbage.yaml": Bad("load", 0, "document 1, items[0]", None, 5, "expected a Kuber"),
    "metadata-not-mapping.yaml": Bad(
        "load", 0, "Namespace in document 1", "metadata", 3, "must be a mapping"
    ),
    "missing-name.yaml": Bad(
        "load", 0, "Deployment in document 1", "metadata.name", 4, "required field is missing"
    ),
    "missing-api-version.yaml": Bad("load", 0, SERVICE, "apiVersion", 1, "required field"),
    "duplicate-object.yaml": Bad("load", 1, SERVICE, "metadata.name", 18, "appears twice"),
    "multi-doc-third-bad.yaml": Bad(
        "load", 2, DEPLOYMENT, f"{CONTAINER}.ports[0].containerPort", 40, "not of type 'integer'"
    ),
    "replicas-not-integer.yaml": Bad(
        "load", 0, DEPLOYMENT, "spec.replicas", 7, "'three' is not of type 'integer'"
    ),
    "unknown-field-in-container.yaml": Bad(
        "load", 0, DEPLOYMENT, f"{CONTAINER}.imagePullPolicyy", 20, "unknown field"
    ),
    "missing-container-name.yaml": Bad(
        "load", 0, DEPLOYMENT, f"{CONTAINER}.name", 17, "required field is missing"
    ),
    "env-value-not-quoted.yaml": Bad(
        "load", 0, DEPLOYMENT, f"{CONTAINER}.env[0].value", 25, "not of type 'string'"
    ),
    "target-port-float.yaml": Bad(
        "load", 0, SERVICE, "spec.ports[0].targetPort", 12, "'string' or 'integer'"
    ),
    "unknown-kind.yaml": Bad(
        "load", 0, "GrpcServer production/grpc-server", "kind", 2, "not a Kubernetes kind"
    ),
    "wrong-api-version.yaml": Bad("load", 0, DEPLOYMENT, "apiVersion", 2, "has no Deployment"),
    "kind-lowercase.yaml": Bad(
        "load", 0, "deployment production/grpc-server", "kind", 3, "not one of 'Deployment'"
    ),
    "ingress-without-class.yaml": Bad(
        "sandbox",
        0,
        "Ingress production/grpc-server",
        "spec.ingressClassName",
        7,
        "runs one Ingress controller",
    ),
    "statefulset-unsupported.yaml": Bad(
        "sandbox",
        0,
        "StatefulSet production/grpc-server",
        "kind",
        3,
        "does not support kind StatefulSet",
    ),
    "service-type-loadbalancer.yaml": Bad("sandbox", 0, SERVICE, "spec.type", 7, "LoadBalancer"),
    "service-type-nodeport.yaml": Bad("sandbox", 0, SERVICE, "spec.type", 7, "NodePort"),
    "session-affinity-clientip.yaml": Bad(
        "sandbox", 0, SERVICE, "spec.sessionAffinity", 7, "ClientIP"
    ),
    "explicit-cluster-ip.yaml": Bad(
        "sandbox", 0, SERVICE, "spec.clusterIP", 7, "assigns cluster IPs"
    ),
    "service-ports-unnamed.yaml": Bad(
        "sandbox", 0, SERVICE, "spec.ports[0].name", 11, "needs a name"
    ),
    "service-udp.yaml": Bad("sandbox", 0, SERVICE, "spec.ports[0].protocol", 13, "only TCP"),
    "service-without-selector.yaml": Bad(
        "sandbox", 0, SERVICE, "spec.selector", 7, "needs a selector"
    ),
    "two-containers.yaml": Bad(
        "sandbox", 0, DEPLOYMENT, "spec.template.spec.containers", 17, "exactly one container"
    ),
    "container-command.yaml": Bad(
        "sandbox", 0, DEPLOYMENT, f"{CONTAINER}.command", 19, "runs only the demo server"
    ),
    # What kube-apiserver refuses beyond the schema: every port 1-65535, nodePort in range.
    "container-port-65536.yaml": Bad(
        "load", 0, DEPLOYMENT, f"{CONTAINER}.ports[0].containerPort", 22, "Invalid value: 65536"
    ),
    "probe-port-70000.yaml": Bad(
        "load", 0, DEPLOYMENT, f"{CONTAINER}.readinessProbe.grpc.port", 25, "Invalid value: 70000"
    ),
    "probe-grpc-port-named.yaml": Bad(
        "load",
        0,
        DEPLOYMENT,
        f"{CONTAINER}.readinessProbe.grpc.port",
        25,
        "'grpc' is not of type 'integer'",
    ),
    "service-port-zero.yaml": Bad(
        "load", 0, SERVICE, "spec.ports[0].port", 13, "must be between 1 and 65535"
    ),
    "service-target-port-70000.yaml": Bad(
        "load", 0, SERVICE, "spec.ports[0].targetPort", 14, "Invalid value: 70000"
    ),
    "service-node-port-80.yaml": Bad(
        "load", 0, SERVICE, "spec.ports[0].nodePort", 15, "range of valid ports is 30000-32767"
    ),
    "service-node-port-on-clusterip.yaml": Bad(
        "load", 0, SERVICE, "spec.ports[0].nodePort", 15, "may not be used when `type`"
    ),
    "image-not-demo-server.yaml": Bad(
        "sandbox", 0, DEPLOYMENT, f"{CONTAINER}.image", 18, "cannot pull images"
    ),
    "volumes.yaml": Bad("sandbox", 0, DEPLOYMENT, "spec.template.spec.volumes", 16, "volumes"),
    "probe-httpget.yaml": Bad(
        "sandbox", 0, DEPLOYMENT, f"{CONTAINER}.readinessProbe.httpGet", 23, "not httpGet"
    ),
    "probe-exec.yaml": Bad(
        "sandbox", 0, DEPLOYMENT, f"{CONTAINER}.livenessProbe.exec", 23, "not exec"
    ),
    "port-name-not-found.yaml": Bad(
        "sandbox",
        0,
        DEPLOYMENT,
        f"{CONTAINER}.readinessProbe.tcpSocket.port",
        25,
        "no containerPort is named 'grpcc'",
    ),
    "port-name-too-long.yaml": Bad(
        "sandbox", 0, DEPLOYMENT, f"{CONTAINER}.ports[0].name", 20, "not a valid port name"
    ),
    "env-secret-ref.yaml": Bad(
        "sandbox", 0, DEPLOYMENT, f"{CONTAINER}.env[1].valueFrom.secretKeyRef", 29, "secretKeyRef"
    ),
    "env-field-ref-node-name.yaml": Bad(
        "sandbox",
        0,
        DEPLOYMENT,
        f"{CONTAINER}.env[0].valueFrom.fieldRef.fieldPath",
        26,
        "cannot fill in spec.nodeName",
    ),
    "selector-mismatch.yaml": Bad(
        "sandbox", 0, DEPLOYMENT, "spec.selector", 9, "selector does not match template labels"
    ),
    "replicas-over-sandbox-cap.yaml": Bad(
        "sandbox", 0, DEPLOYMENT, "spec.replicas", 7, "at most 20 replicas"
    ),
}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(REPO)))
def test_shipped_manifest_is_valid_and_runs_in_the_sandbox(path: Path) -> None:
    objects = load_objects(path)
    assert objects, f"{path} holds no objects"
    check_sandbox_support(objects, str(path))
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "production", obj["metadata"]


def test_the_core_manifests_are_shipped() -> None:
    # Guards the glob above: an empty glob would make that test pass by running nothing.
    names = {str(p.relative_to(REPO / "cluster" / "manifests")) for p in SHIPPED}
    assert {
        "base/00-namespace.yaml",
        "base/deployment.yaml",
        "base/service-clusterip.yaml",
        "headless/service-headless.yaml",
        "headless/deployment-max-connection-age.yaml",
    } <= names


def test_every_bad_fixture_has_an_expectation() -> None:
    assert sorted(p.name for p in BAD.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_fixture_is_refused_with_file_object_and_field(name: str) -> None:
    expected = EXPECTED[name]
    path = BAD / name
    if expected.stage == "sandbox":
        objects = load_objects(path)  # valid Kubernetes: only the sandbox check refuses it
        with pytest.raises(ManifestError) as caught:
            check_sandbox_support(objects, "unused: these objects know their file")
    else:
        with pytest.raises(ManifestError) as caught:
            load_objects(path)
    error = caught.value
    first_line = str(error).splitlines()[0]
    assert error.source == str(path)
    assert (error.document, error.object, error.field, error.line) == (
        expected.document,
        expected.object,
        expected.field,
        expected.line,
    )
    where = f"{path}:{expected.line}:" if expected.line else f"{path}:"
    assert first_line.startswith(where), first_line
    for part in (expected.object, expected.field, expected.reason):
        if part is not None:
            assert part in first_line, f"{part!r} not in {first_line!r}"
    assert expected.reason in error.reason


def test_error_text_is_one_line_then_the_hint() -> None:
    with pytest.raises(ManifestError) as caught:
        load_objects(BAD / "unknown-field-in-container.yaml")
    lines = str(caught.value).splitlines()
    assert lines == [
        f"{BAD / 'unknown-field-in-container.yaml'}:20: {DEPLOYMENT}: "
        f"{CONTAINER}.imagePullPolicyy: unknown field 'imagePullPolicyy'",
        "  did you mean 'imagePullPolicy'?",
    ]


def test_yaml_syntax_error_has_line_and_column() -> None:
    with pytest.raises(ManifestError) as caught:
        load_objects("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: [production\n")
    error = caught.value
    assert (error.source, error.document) == ("<text>", 0)
    assert error.line is not None and error.column is not None
    assert str(error).startswith(f"<text>:{error.line}:{error.column}: document 1: YAML syntax")


def test_third_document_without_a_name_is_named_by_its_position() -> None:
    text = (REPO / "cluster/manifests/base/00-namespace.yaml").read_text()
    text += "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: staging}\n"
    text += "---\napiVersion: v1\nkind: Service\nmetadata: {namespace: production}\n"
    with pytest.raises(ManifestError) as caught:
        load_objects(text)
    error = caught.value
    assert (error.document, error.object, error.field) == (
        2,
        "Service in document 3",
        "metadata.name",
    )


def test_missing_file_names_the_resolved_path(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ManifestError) as caught:
        load_objects("cluster/manifests/nope.yaml")
    assert caught.value.source == "cluster/manifests/nope.yaml"
    assert "file not found" in str(caught.value)
    assert str(tmp_path / "cluster/manifests/nope.yaml") in str(caught.value)


def test_relative_manifest_path_works_from_another_directory(tmp_path: Path, monkeypatch) -> None:
    # Notebooks run in notebooks/, yet name files as "cluster/manifests/...".
    monkeypatch.chdir(tmp_path)
    [namespace] = load_objects("cluster/manifests/base/00-namespace.yaml")
    assert namespace["metadata"]["name"] == "production"


def test_directory_loads_its_yaml_files_in_name_order_only(tmp_path: Path) -> None:
    for name in ("b.yaml", "a.yml", "notes.txt", "sub/c.yaml"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(
            f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns-{name[0]}\n"
        )
    names = [obj["metadata"]["name"] for obj in load_objects(tmp_path)]
    assert names == ["ns-a", "ns-b"]


def test_text_dict_and_list_give_the_same_objects_as_the_file() -> None:
    path = REPO / "cluster/manifests/base/service-clusterip.yaml"
    from_file = load_objects(path)
    as_dict = yaml.safe_load(path.read_text())
    assert load_objects(path.read_text()) == from_file
    assert load_objects(as_dict) == from_file
    assert load_objects([as_dict]) == from_file
    assert load_objects(str(path)) == from_file


def test_dict_errors_name_the_dict_and_the_field() -> None:
    service = yaml.safe_load((REPO / "cluster/manifests/base/service-clusterip.yaml").read_text())
    service["spec"]["ports"][0]["port"] = "fifty"
    with pytest.raises(ManifestError) as caught:
        load_objects(
            [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}}, service]
        )
    error = caught.value
    assert (error.source, error.document, error.object, error.field) == (
        "<dict>",
        1,
        SERVICE,
        "spec.ports[0].port",
    )
    assert str(error) == f"<dict>: {SERVICE}: spec.ports[0].port: 'fifty' is not of type 'integer'"


def test_callers_dicts_are_not_changed() -> None:
    deployment = yaml.safe_load((REPO / "cluster/manifests/base/deployment.yaml").read_text())
    del deployment["metadata"]["namespace"]
    before = copy.deepcopy(deployment)
    [loaded] = load_objects([deployment], default_namespace="staging")
    loaded["spec"]["template"]["spec"]["containers"][0]["image"] = "changed"
    assert loaded["metadata"]["namespace"] == "staging"
    assert deployment == before


def test_namespace_defaulting_is_kubectl_dash_n() -> None:
    text = """
apiVersion: v1
kind: Namespace
metadata: {name: staging}
---
apiVersion: v1
kind: Service
metadata: {name: no-namespace}
spec: {selector: {app: a}, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: has-namespace, namespace: production}
spec: {selector: {app: a}, ports: [{port: 80}]}
"""
    namespace, bare, explicit = load_objects(text, default_namespace="staging")
    assert "namespace" not in namespace["metadata"]  # cluster-scoped: never defaulted
    assert bare["metadata"]["namespace"] == "staging"
    assert explicit["metadata"]["namespace"] == "production"
    _, untouched, _ = load_objects(text)
    assert "namespace" not in untouched["metadata"]


def test_kind_list_items_are_objects_of_their_own() -> None:
    text = """
apiVersion: v1
kind: List
items:
  - {apiVersion: v1, kind: Namespace, metadata: {name: a}}
  - {apiVersion: v1, kind: Namespace, metadata: {name: b}}
"""
    assert [obj["metadata"]["name"] for obj in load_objects(text)] == ["a", "b"]


def test_duplicates_are_per_namespace() -> None:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "s"},
        "spec": {"selector": {"app": "a"}, "ports": [{"port": 80}]},
    }
    other = copy.deepcopy(service)
    other["metadata"]["namespace"] = "other"
    assert len(load_objects([service, other], default_namespace="production")) == 2
    with pytest.raises(ManifestError, match="appears twice"):
        load_objects([service, other], default_namespace="other")


def test_known_crd_is_checked_against_its_own_schema(monkeypatch) -> None:
    schema = {
        "type": "object",
        "properties": {"spec": {"type": "object", "properties": {"host": {"type": "string"}}}},
    }
    monkeypatch.setitem(manifests.CRD_SCHEMAS, ("example.grpclab.dev/v1", "Route"), schema)
    route = {
        "apiVersion": "example.grpclab.dev/v1",
        "kind": "Route",
        "metadata": {"name": "r"},
        "spec": {"host": "grpc-server"},
    }
    assert load_objects(route)[0]["spec"] == {"host": "grpc-server"}
    route["spec"]["host"] = 7
    with pytest.raises(ManifestError) as caught:
        load_objects(route, default_namespace="production")
    assert (caught.value.object, caught.value.field) == ("Route production/r", "spec.host")


def test_sandbox_check_of_plain_dicts_names_the_label() -> None:
    deployment = yaml.safe_load((REPO / "cluster/manifests/base/deployment.yaml").read_text())
    deployment["spec"]["replicas"] = 21
    with pytest.raises(ManifestError) as caught:
        check_sandbox_support([deployment], "cell 3")
    assert str(caught.value).startswith(f"cell 3: {DEPLOYMENT}: spec.replicas: ")


@pytest.mark.parametrize(
    "image",
    [
        "grpclab/demo-server:0.1.0",
        "localhost:5001/grpclab/demo-server:dev",
        "grpclab-demo-server",
        "myregistry/grpc-server:v1.0.0",
        "grpclab/demo-server@sha256:" + "0" * 64,
    ],
)
def test_demo_server_images_are_accepted(image: str) -> None:
    [deployment] = load_objects(REPO / "cluster/manifests/base/deployment.yaml")
    deployment["spec"]["template"]["spec"]["containers"][0]["image"] = image
    check_sandbox_support([deployment], "<dict>")


def test_headless_service_and_internal_traffic_policy_local_are_accepted() -> None:
    [service] = load_objects(REPO / "cluster/manifests/headless/service-headless.yaml")
    service["spec"]["internalTrafficPolicy"] = "Local"  # one node: the same as Cluster
    check_sandbox_support([service], "<dict>")


def test_loaded_objects_dump_as_plain_yaml() -> None:
    objects = load_objects(REPO / "cluster/manifests/base/service-clusterip.yaml")
    assert yaml.safe_load(yaml.safe_dump(objects[0])) == objects[0]


@pytest.mark.parametrize("text", ["", "  \n", "# only a comment\n---\n"])
def test_empty_text_is_an_error_not_the_current_directory(text: str) -> None:
    with pytest.raises(ManifestError, match="^<text>: no Kubernetes objects found$"):
        load_objects(text)


# The top-level packages of the generated xDS protobufs (envoy, cncf xds, udpa, PGV), and the
# translators that import them.
XDS_MODULES = ("envoy", "xds", "udpa", "validate", "grpclab.xds")


def test_the_kind_path_never_imports_the_xds_protobufs() -> None:
    # A fresh interpreter: this test process has imported them long ago. Importing the kind
    # backend and loading the base manifests (built-in kinds only) must not need them.
    script = (
        "import sys\n"
        "import grpclab.cluster.kube\n"
        "from grpclab.cluster.manifests import load_objects\n"
        f"load_objects({str(REPO / 'cluster' / 'manifests' / 'base')!r})\n"
        f"prefixes = {XDS_MODULES!r}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in prefixes\n"
        "             or m.startswith(prefixes[-1])))\n"
    )
    found = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert found == "[]"


def test_custom_resources_are_known_once_one_is_loaded() -> None:
    # The lazy registration must still happen: a custom resource with a bad field is refused.
    rule = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "r", "namespace": "production"},
        "spec": {"host": "grpc-server", "trafficPolicy": {"loadBalancer": {"simpel": "x"}}},
    }
    with pytest.raises(ManifestError) as caught:
        load_objects(rule)
    assert caught.value.field == "spec.trafficPolicy.loadBalancer.simpel"
