"""Istio manifests through the manifest checks: accepted, or refused naming object and field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from support import ISTIO

from grpclab.cluster.crds.shapes import field_parts
from grpclab.cluster.manifests import ManifestError, check_sandbox_support, load_objects

RULE = "DestinationRule production/grpc-server"
SERVICE = "VirtualService production/grpc-server"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "istio.yaml"
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def refused(path: Path, stage: str) -> ManifestError:
    with pytest.raises(ManifestError) as caught:
        objects = load_objects(path)
        assert stage == "sandbox", "load_objects accepted what it should refuse"
        check_sandbox_support(objects, str(path))
    return caught.value


@pytest.mark.parametrize("version", ["v1", "v1beta1"])
def test_both_served_versions_are_accepted(tmp_path, version):
    path = write(
        tmp_path,
        f"""
        apiVersion: networking.istio.io/{version}
        kind: DestinationRule
        metadata:
          name: grpc-server
        spec:
          host: grpc-server
          trafficPolicy:
            loadBalancer:
              simple: LEAST_REQUEST
        """,
    )
    objects = load_objects(path, default_namespace="production")
    check_sandbox_support(objects, str(path))
    assert objects[0]["metadata"]["namespace"] == "production"


def test_every_shipped_istio_manifest_loads_and_runs_in_the_sandbox():
    files = sorted(ISTIO.glob("*.yaml"))
    assert len(files) >= 7
    for path in files:
        check_sandbox_support(load_objects(path), str(path))


def test_an_unknown_field_names_file_object_field_and_line(tmp_path):
    path = write(
        tmp_path,
        """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata:
          name: grpc-server
          namespace: production
        spec:
          host: grpc-server
          trafficPolicy:
            loadBalancer:
              simpel: ROUND_ROBIN
        """,
    )
    error = refused(path, "load")
    assert error.source == str(path)
    assert error.object == RULE
    assert error.field == "spec.trafficPolicy.loadBalancer.simpel"
    assert error.line == 10
    assert "unknown field" in error.reason and "'simple'" in (error.detail or "")


def test_a_load_balancer_grpclab_does_not_translate_is_refused(tmp_path):
    path = write(
        tmp_path,
        """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: grpc-server, namespace: production}
        spec:
          host: grpc-server
          trafficPolicy:
            loadBalancer:
              simple: PASSTHROUGH
        """,
    )
    error = refused(path, "load")
    assert (error.object, error.field) == (RULE, "spec.trafficPolicy.loadBalancer.simple")
    assert "'PASSTHROUGH' is not one of 'ROUND_ROBIN', 'LEAST_REQUEST', 'RANDOM'" in error.reason


def test_a_field_of_the_wrong_type_is_refused(tmp_path):
    path = write(
        tmp_path,
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: grpc-server, namespace: production}
        spec:
          hosts: [grpc-server]
          http:
            - route:
                - destination: {host: grpc-server}
              retries:
                attempts: "3"
        """,
    )
    error = refused(path, "load")
    assert (error.object, error.field) == (SERVICE, "spec.http[0].retries.attempts")
    assert "not of type 'integer'" in error.reason


def test_a_bad_duration_is_refused_by_the_sandbox_check_with_its_line(tmp_path):
    path = write(
        tmp_path,
        """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: grpc-server, namespace: production}
        spec:
          host: grpc-server
          trafficPolicy:
            outlierDetection:
              consecutiveGatewayErrors: 1
              interval: 30
        """,
    )
    error = refused(path, "load")  # an int is not a string: the schema refuses it
    assert error.field == "spec.trafficPolicy.outlierDetection.interval"
    path.write_text(path.read_text().replace("interval: 30", "interval: 30sec"))
    error = refused(path, "sandbox")
    assert (error.object, error.field) == (RULE, "spec.trafficPolicy.outlierDetection.interval")
    assert "'30sec' is not a duration" in error.reason
    assert error.line == 9


def test_an_unknown_retry_condition_is_refused_by_the_sandbox_check(tmp_path):
    path = write(
        tmp_path,
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: grpc-server, namespace: production}
        spec:
          hosts: [grpc-server]
          http:
            - route:
                - destination: {host: grpc-server}
              retries:
                attempts: 3
                retryOn: "unavailable,conect-failure"
        """,
    )
    error = refused(path, "sandbox")
    assert (error.object, error.field) == (SERVICE, "spec.http[0].retries.retryOn")
    assert "'conect-failure' is not a retry condition" in error.reason
    assert error.line == 11


def test_distribute_weights_are_checked_with_the_locality_in_the_field(tmp_path):
    path = write(
        tmp_path,
        """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: grpc-server, namespace: production}
        spec:
          host: grpc-server
          trafficPolicy:
            loadBalancer:
              localityLbSetting:
                distribute:
                  - from: "local/zone-a/*"
                    to: {"local/zone-a/*": 70, "local/zone-b/*": 20}
        """,
    )
    error = refused(path, "sandbox")
    assert error.field == "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to"
    assert "add up to 100, not 90" in error.reason


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("spec.http[0].retries", ("spec", "http", 0, "retries")),
        ("spec.to['local/zone-a/*']", ("spec", "to", "local/zone-a/*")),
    ],
)
def test_field_paths_turn_back_into_parts(text, parts):
    assert field_parts(text) == parts
