"""The Node client (clients/node, @grpc/grpc-js) against a real sandbox: the same lessons."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support import HEADLESS, base_sandbox

from grpclab.cluster import Cluster
from grpclab.load import LoadSpec, node_client, private_resolver
from grpclab.measure import checks
from grpclab.tools import preflight

NODE_MISSING = node_client.problem()
needs_node = pytest.mark.skipif(NODE_MISSING is not None, reason=f"{NODE_MISSING}")
NAMESPACE_PROBLEM = private_resolver.problem()
needs_namespaces = pytest.mark.skipif(NAMESPACE_PROBLEM is not None, reason=f"{NAMESPACE_PROBLEM}")


@pytest.fixture(scope="module")
def lab() -> Iterator[Cluster]:
    """A sandbox with the ClusterIP and the headless Service of notebooks 02 and 03."""
    with base_sandbox(HEADLESS) as sandbox:
        yield sandbox


@needs_node
def test_node_shows_the_three_behaviours_the_notebooks_teach(lab):
    pods = [pod.name for pod in lab.wait_ready("grpc-server")]
    results = node_client.run(node_client.experiments(lab, rpcs=600))
    for name, result in results.items():
        assert result.failed == 0 and result.ok == 600, (name, result.errors, result.error_details)
    clusterip, headless, xds = results.values()
    checks.assert_single_pod(clusterip)  # one channel, one connection, one pod
    assert set(headless.per_pod) == set(pods)
    checks.assert_even(headless, pods, max_ratio=1.2)
    assert set(xds.per_pod) == set(pods)  # every pod, from grpclab's control plane


@needs_node
@needs_namespaces
def test_without_the_resolver_variable_a_dns_target_fails_and_an_address_list_still_works(lab):
    pods = [pod.name for pod in lab.wait_ready("grpc-server")]
    specs = {
        "dns": LoadSpec(lab.target("grpc-server-headless"), rpcs=50, lb_policy="round_robin"),
        "addresses": LoadSpec(
            lab.target("grpc-server-headless", via="addresses"), rpcs=600, lb_policy="round_robin"
        ),
    }
    results = node_client.run(specs, alternative_resolver=False)
    dns = results["dns"]
    assert dns.ok == 0 and dns.errors == {"UNAVAILABLE": 50}
    assert dns.error_details["UNAVAILABLE"].startswith("Name resolution failed for target dns://")
    # grpc-js asked the machine's resolver (here the loopback stand-in) for the cluster name:
    # getaddrinfo for the addresses, c-ares for the service config in TXT.
    name = "grpc-server-headless.production.svc.cluster.local"
    assert sorted(dns.system_resolver_asked) == [f"A {name}", f"AAAA {name}", f"TXT {name}"]
    # The address list needs no resolver at all; it is the pods ready right now.
    addresses = results["addresses"]
    assert addresses.failed == 0 and set(addresses.per_pod) == set(pods)
    assert addresses.system_resolver_asked == []
    checks.assert_even(addresses, pods, max_ratio=1.2)


def test_a_machine_without_node_gets_the_fix_not_a_traceback(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no node on it
    assert node_client.problem().startswith("Node.js is not installed: install Node 18")
    assert node_client.describe().startswith("Node client: not available: Node.js is not")
    finding = preflight.check_node()
    assert finding.status == preflight.WARN and "apt-get install nodejs npm" in finding.fix
    with pytest.raises(preflight.MissingTool) as raised:
        node_client.run({"one": LoadSpec("127.0.0.1:1")})
    # What IPython shows in place of a traceback: the message alone, with the fix.
    (shown,) = raised.value._render_traceback_()
    assert shown.startswith("MissingTool: This notebook runs a Node.js gRPC client. Node.js is")


def test_a_spec_field_the_node_client_cannot_honour_is_refused():
    assert node_client.to_job("x", LoadSpec("127.0.0.1:1", rpcs=10, lb_policy="round_robin")) == {
        "name": "x",
        "target": "127.0.0.1:1",
        "rpcs": 10,
        "concurrency": 8,
        "lb_policy": "round_robin",
        "deadline_s": 5.0,
    }
    with pytest.raises(ValueError, match=r"LoadSpec\.channels, LoadSpec\.duration_s"):
        node_client.to_job("x", LoadSpec("127.0.0.1:1", duration_s=2, channels=2))


def test_which_targets_grpc_js_looks_up_by_name():
    looked_up = [
        "dns://127.42.1.1:53/grpc-server.production.svc.cluster.local:50051",
        "dns:///grpc-server:50051",
        "grpc-server.production:50051",  # no scheme: grpc-js reads it as dns:
        "localhost:50051",  # "localhost" parses as a scheme grpc-js does not know
    ]
    not_looked_up = [
        "ipv4:127.42.1.10:50051,127.42.1.11:50051",
        "xds:///grpc-server.production.svc.cluster.local:50051",
        "127.42.1.10:50051",
        "dns:127.0.0.1:50051",
        "[::1]:50051",
        "unix:/tmp/socket",
    ]
    assert [node_client.looks_up_names(t) for t in looked_up] == [True] * 4
    assert [node_client.looks_up_names(t) for t in not_looked_up] == [False] * 6


@needs_node
def test_without_namespaces_the_resolver_demo_is_refused_never_sent_to_the_machine(
    monkeypatch, tmp_path
):
    (tmp_path / "node").symlink_to(node_client.shutil.which("node"))
    monkeypatch.setenv("PATH", str(tmp_path))  # node, and no unshare
    spec = LoadSpec("dns:///grpc-server.production.svc.cluster.local:50051", rpcs=1)
    with pytest.raises(preflight.MissingTool, match="`unshare` is not installed"):
        node_client.run({"dns": spec}, alternative_resolver=False)


def test_side_by_side_is_a_static_figure_of_both_runs_that_renders_from_the_saved_notebook():
    from grpclab.load import LoadResult
    from grpclab.widgets import PLOTLY_MIME

    pods = ["a", "b", "c"]
    python = LoadResult(per_pod={"a": 200, "b": 200, "c": 200}, done=True)
    node = LoadResult(per_pod={"c": 600}, done=True)
    bundle = node_client.side_by_side(pods, "ClusterIP", python, node)._repr_mimebundle_()
    assert bundle["text/plain"] == "ClusterIP: Python 200/200/200, Node 0/0/600"
    python_bars, node_bars = bundle[PLOTLY_MIME]["data"]
    assert python_bars["x"] == node_bars["x"] == pods
    assert (python_bars["y"], node_bars["y"]) == ([200, 200, 200], [0, 0, 600])
    assert python_bars["xaxis"] == "x" and node_bars["xaxis"] == "x2"  # two panels
    assert "widget" not in str(bundle)  # nothing that needs a live kernel to draw
