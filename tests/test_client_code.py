"""LoadSpec.client_code: the printed client is real code that balances like the spec's run.

The printed programs run in their own process against real sandbox pods, with stubs made the
way the printed comment says (grpc_tools.protoc) and, for Node, the clients/node packages.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import HEADLESS, REPO, base_sandbox

from grpclab.cluster import Cluster
from grpclab.load import LoadSpec, node_client
from grpclab.measure import checks

NODE_MISSING = node_client.problem()
needs_node = pytest.mark.skipif(NODE_MISSING is not None, reason=f"{NODE_MISSING}")
RETRY = {
    "maxAttempts": 3,
    "initialBackoff": "0.1s",
    "maxBackoff": "1s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}
# One call at a time, so the first calls bunch on the first pod connected only while the
# others connect: at most 2 extra calls on a pod in 32 balancing printed runs here (8 of them
# beside another module), where the 1.3 ratio allows 27 of 300. 600 calls cost 5 CPU-s more.
CALLS = 300


@pytest.fixture(scope="module")
def lab() -> Iterator[Cluster]:
    with base_sandbox(HEADLESS) as sandbox:
        yield sandbox


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A folder with demo.proto and the Python stubs generated from it, as a learner has."""
    from grpc_tools import protoc

    folder = tmp_path_factory.mktemp("client")
    shutil.copy(REPO / "protos" / "demo.proto", folder)
    argv = ["protoc", "-I.", "--python_out=.", "--grpc_python_out=.", "demo.proto"]
    here = os.getcwd()
    os.chdir(folder)  # the printed comment's command, run where the stubs should land
    try:
        assert protoc.main(argv) == 0
    finally:
        os.chdir(here)
    return folder


def _env() -> dict[str, str]:
    # The printed code leaves out the lab's grpc.enable_http_proxy=0: no proxy may catch it.
    proxies = {"http_proxy", "https_proxy", "grpc_proxy", "all_proxy"}
    return {k: v for k, v in os.environ.items() if k.lower() not in proxies}


def _run(argv: list[str], folder: Path, env: dict[str, str]) -> dict[str, int]:
    done = subprocess.run(argv, cwd=folder, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _argv(language: str, folder: Path, code: str) -> list[str]:
    program = folder / ("client.py" if language == "python" else "client.js")
    program.write_text(code)
    return [
        sys.executable if language == "python" else shutil.which("node") or "node",
        str(program),
    ]


def _language_env(language: str) -> dict[str, str]:
    if language == "python":
        return _env()
    return {**_env(), "NODE_PATH": str(node_client.CLIENT_DIR / "node_modules")}


def run_python(spec: LoadSpec, folder: Path) -> dict[str, int]:
    return _run(_argv("python", folder, spec.client_code("python")), folder, _env())


def run_node(spec: LoadSpec, folder: Path) -> dict[str, int]:
    return _run(_argv("node", folder, spec.client_code("node")), folder, _language_env("node"))


def specs(lab: Cluster) -> dict[str, LoadSpec]:
    """One spec that balances (headless, round_robin, with retries) and one that does not."""
    return {
        "round_robin": LoadSpec(
            lab.target("grpc-server-headless"),
            rpcs=CALLS,
            concurrency=1,
            lb_policy="round_robin",
            retry_policy=RETRY,
            deadline_s=2.0,
            interval_s=0.05,  # fine buckets, for the run's steady state (below)
        ),
        "pick_first": LoadSpec(lab.target("grpc-server"), rpcs=CALLS, concurrency=1),
    }


def assert_balanced_like_the_spec(lab: Cluster, served: dict[str, int], name: str) -> None:
    pods = [pod.name for pod in lab.wait_ready("grpc-server")]
    spec = specs(lab)[name]
    result = lab.run_load(spec)
    assert result.ok == CALLS and sum(served.values()) == CALLS, (result.errors, served)
    if name == "round_robin":
        assert set(result.per_pod) == set(served) == set(pods)
        # round_robin sends the first calls to the pods it reached first; the run's
        # timeline shows its steady state (LoadResult.after_every_pod_answered).
        checks.assert_even(result.after_every_pod_answered(pods), pods, max_ratio=1.3)
        assert checks.max_min_ratio(served, pods) <= 1.3, (served, result.per_pod)
    else:
        checks.assert_single_pod(result)  # one channel, one connection through the cluster IP
        assert len(served) == 1, served


@pytest.mark.parametrize("name", ["round_robin", "pick_first"])
def test_the_printed_python_client_balances_like_the_specs_run(lab, workdir, name):
    served = run_python(specs(lab)[name], workdir)
    assert_balanced_like_the_spec(lab, served, name)


@needs_node
@pytest.mark.parametrize("name", ["round_robin", "pick_first"])
def test_the_printed_node_client_balances_like_the_specs_run(lab, workdir, name):
    served = run_node(specs(lab)[name], workdir)
    assert_balanced_like_the_spec(lab, served, name)


def test_the_printed_python_carries_every_channel_setting_of_the_spec():
    spec = LoadSpec(
        "dns://127.42.1.1:53/grpc-server-headless.production.svc.cluster.local:50051",
        lb_policy="round_robin",
        retry_policy=RETRY,
        retry_throttling={"maxTokens": 10, "tokenRatio": 0.1},
        channel_options={"grpc.keepalive_time_ms": 10000},
        method="GetUser",
        deadline_s=0.5,
    )
    code = spec.client_code("python")
    namespace: dict = {}
    # Everything above the channel is plain data: evaluate it and compare with the spec.
    exec(code[code.index("TARGET =") : code.index("channel = ")], namespace)
    assert namespace["SERVICE_CONFIG"] == json.loads(spec.service_config_json())
    assert namespace["SERVICE_CONFIG"]["methodConfig"][0]["retryPolicy"] == RETRY
    assert '("grpc.keepalive_time_ms", 10000)' in code
    assert "stub.GetUser(request, timeout=0.5)" in code
    assert "In a pod, the cluster's DNS answers: dns:///grpc-server-headless" in code
    assert "use_local_subchannel_pool" not in code  # the load generator's, not the client's
    compile(code, "client.py", "exec")


def test_a_spec_without_a_deadline_prints_calls_without_one():
    spec = LoadSpec("127.0.0.1:1", deadline_s=None)
    assert "stub.SayHello(request)  # no deadline" in spec.client_code("python")
    assert 'SayHello({"name": "grpclab"}, {}' in spec.client_code("node")
    tls = LoadSpec("ingress:443", tls_ca_file="/tmp/ca.pem", tls_server_name="grpc.example")
    code = tls.client_code("python")
    assert "grpc.secure_channel(" in code and '("grpc.default_authority", "grpc.example")' in code
    compile(code, "client.py", "exec")
    assert 'createSsl(fs.readFileSync("/tmp/ca.pem"))' in tls.client_code("node")


def test_what_client_code_refuses():
    with pytest.raises(ValueError, match="language must be one of"):
        LoadSpec("127.0.0.1:1").client_code("go")
    both = LoadSpec("127.0.0.1:1", retry_policy=RETRY, hedging_policy={"maxAttempts": 2})
    with pytest.raises(ValueError, match="retry_policy or hedging_policy, not both"):
        both.client_code("python")
    twice = LoadSpec(
        "127.0.0.1:1",
        service_config={"methodConfig": [{"name": [{}], "timeout": "1s"}]},
        retry_policy=RETRY,
    )
    with pytest.raises(ValueError, match="set the policy in one place"):
        twice.validate()


LANGUAGES = [
    "python",
    pytest.param("node", marks=pytest.mark.skipif(NODE_MISSING is not None, reason="no node")),
]


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_printed_xds_client_balances_with_the_bootstrap_and_says_it_needs_one(
    lab, workdir, language
):
    pods = [pod.name for pod in lab.wait_ready("grpc-server")]
    spec = LoadSpec(lab.target("grpc-server", via="xds"), rpcs=CALLS, concurrency=1)
    code = spec.client_code(language, in_pod=True)
    assert 'TARGET = "xds:///grpc-server.production.svc.cluster.local:50051"' in code
    # lab.target(via="xds") wrote the bootstrap and set $GRPC_XDS_BOOTSTRAP in this process;
    # the printed client, in its own process, finds the control plane through it.
    env = _language_env(language)
    assert env.get("GRPC_XDS_BOOTSTRAP")
    served = _run(_argv(language, workdir, code), workdir, env)
    assert sum(served.values()) == CALLS and set(served) == set(pods), served
    assert checks.max_min_ratio(served, pods) <= 1.3, served  # the control plane's ROUND_ROBIN
    # Without the variable the printed client stops before its first channel, and says why.
    bare = {k: v for k, v in env.items() if not k.startswith("GRPC_XDS_BOOTSTRAP")}
    done = subprocess.run(
        _argv(language, workdir, code), cwd=workdir, env=bare, capture_output=True, text=True
    )
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "set GRPC_XDS_BOOTSTRAP to the path of an xDS bootstrap file" in done.stderr


def test_in_pod_prints_the_same_code_on_every_backend_and_run():
    # The sandbox's DNS server moves from run to run; a pod's resolver is the cluster's DNS,
    # which is what a kind target (dns:///...) already says.
    name = "grpc-server-headless.production.svc.cluster.local:50051"
    printed = {
        language: {
            LoadSpec(target, lb_policy="round_robin").client_code(language, in_pod=True)
            for target in (
                f"dns://127.42.3.1:58031/{name}",
                f"dns://127.42.9.1:41999/{name}",
                f"dns:///{name}",
            )
        }
        for language in ("python", "node")
    }
    (python,), (node,) = printed["python"], printed["node"]
    assert f'TARGET = "dns:///{name}"' in python and "127.42" not in python
    assert f'const TARGET = "dns:///{name}";' in node and "127.42" not in node
    assert "GRPC_NODE_USE_ALTERNATIVE_RESOLVER" not in node  # only for a DNS server in the target
    compile(python, "client.py", "exec")


def test_target_prints_the_services_name_for_a_spec_that_dials_a_sidecar():
    # A mesh client dials its sidecar's listener in the sandbox; in a pod it dials the Service
    # and the sidecar intercepts. Nothing in its code balances: no service config.
    sidecar = LoadSpec("127.42.1.9:50051", deadline_s=2.0)
    code = sidecar.client_code(
        in_pod=True, target="dns://127.42.3.1:58031/grpc-server.production.svc.cluster.local:50051"
    )
    assert 'TARGET = "dns:///grpc-server.production.svc.cluster.local:50051"' in code
    assert "127.42.1.9" not in code and "SERVICE_CONFIG" not in code
    assert "No service config: gRPC's default policy, pick_first" in code
    assert "channel = grpc.insecure_channel(TARGET)" in code
    assert "new MyService(TARGET, grpc.credentials.createInsecure());" in sidecar.client_code(
        "node"
    )
    assert sidecar.target == "127.42.1.9:50051"  # the spec itself is left as it was
