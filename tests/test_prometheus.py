"""The sandbox's real Prometheus: file-based discovery of real pods, and the PromQL of 09."""

from __future__ import annotations

import json
import math
import urllib.request

import pytest
from support import HEADLESS, base_sandbox, wait_until

import grpclab
from grpclab.cluster import Cluster
from grpclab.cluster.sandbox.processes import MissingBinaryError
from grpclab.cluster.sandbox.prometheus import prometheus_binary
from grpclab.load import LoadSpec
from grpclab.measure import checks, monitoring

QUERIES = monitoring.corrected_queries()
GUIDE = monitoring.guide_queries()


@pytest.fixture(scope="module")
def lab():
    with base_sandbox(HEADLESS) as sandbox:
        pods = [p.name for p in sandbox.wait_ready("grpc-server")]
        sandbox.prometheus_url()
        monitoring.wait_for_scrape(sandbox, pods)
        yield sandbox


def ready_pods(lab) -> list[str]:
    return [p.name for p in lab.wait_ready("grpc-server")]


def active_targets(lab) -> dict[str, dict]:
    """Prometheus's own list of what it scrapes, by pod."""
    with urllib.request.urlopen(f"{lab.prometheus_url()}/api/v1/targets", timeout=5) as reply:
        targets = json.loads(reply.read())["data"]["activeTargets"]
    return {t["labels"]["pod"]: t for t in targets}


def loaded_window(lab, spec: LoadSpec) -> float:
    """Run `spec`, wait for the scrape after it, return the Unix time at which it ended.

    The runs last 6 s, so the queries' 5 s window sees only their calls, and go at 50 calls a
    second: rates and shares need no more (measured over 4 runs, one beside another module:
    round_robin evenness 0.007, error rate 0.13 to 0.17, p99 0.099 s), and 200 a second cost
    5 CPU-s more.
    """
    import time

    lab.run_load(spec)
    ended = time.time()
    monitoring.wait_for_scrape(lab, ready_pods(lab), after=ended)
    return ended


def test_every_pod_is_scraped_with_the_labels_kind_gives_it(lab):
    samples = lab.prometheus_query('up{job="pods"}')
    by_pod = {s.labels["pod"]: s for s in samples}
    pods = {p.name: p for p in lab.pods()}
    assert set(by_pod) == set(pods)
    for name, sample in by_pod.items():
        assert sample.value == 1.0
        assert sample.labels["namespace"] == "production"
        assert sample.labels["app"] == "grpc-server"
        assert sample.labels["instance"] == f"{pods[name].ip}:9090"


def test_the_targets_follow_the_pods(lab):
    lab.scale("grpc-server", 4)
    try:
        pods = ready_pods(lab)
        assert len(pods) == 4
        monitoring.wait_for_scrape(lab, pods)  # the new pod, too
    finally:
        lab.scale("grpc-server", 3)  # what the module's other tests expect, pass or fail
    remaining = ready_pods(lab)
    gone = (set(pods) - set(remaining)).pop()
    targets_file = json.loads(lab.addons["prometheus"].targets_file.read_text())
    assert {entry["labels"]["pod"] for entry in targets_file} == set(remaining)
    wait_until(lambda: gone not in active_targets(lab), f"Prometheus to drop {gone}", 20)


def test_evenness_from_prometheus_drops_from_l4_to_round_robin(lab):
    l4_end = loaded_window(
        lab, LoadSpec(lab.target("grpc-server"), rpcs=None, duration_s=6, concurrency=4, rate=50)
    )
    rr_end = loaded_window(
        lab,
        LoadSpec(
            lab.target("grpc-server-headless"),
            rpcs=None,
            duration_s=6,
            concurrency=4,
            rate=50,
            lb_policy="round_robin",
        ),
    )
    l4 = monitoring.value(lab.prometheus_query(QUERIES["evenness"], at=l4_end))
    rr = monitoring.value(lab.prometheus_query(QUERIES["evenness"], at=rr_end))
    # One pod of three with everything: stddev/mean = sqrt(2). Idle pods count as 0.
    assert l4 == pytest.approx(math.sqrt(2), abs=0.05)
    assert rr < 0.2
    # The guide's query mixes every method's series (health checks too): it never gets near 0.
    assert monitoring.value(lab.prometheus_query(GUIDE["evenness"], at=rr_end)) > 0.5
    rates = {
        s.labels["pod"]: s.value for s in lab.prometheus_query(QUERIES["request rate per pod"])
    }
    assert set(rates) == set(ready_pods(lab))


def test_the_guides_error_rate_is_empty_until_a_call_first_fails(lab):
    # Runs before any test that injects errors: a pod has no non-OK series until then.
    end = loaded_window(lab, LoadSpec(lab.target("grpc-server"), rpcs=None, duration_s=6, rate=50))
    assert lab.prometheus_query(GUIDE["error rate"], at=end) == []  # no data, not 0
    assert monitoring.value(lab.prometheus_query(QUERIES["error rate"], at=end)) == 0.0


def test_error_rate_and_p99_see_one_bad_pod(lab):
    bad = ready_pods(lab)[0]
    lab.set_fault(bad, error_rate=0.5, added_latency_ms=60)
    try:
        end = loaded_window(
            lab,
            LoadSpec(
                lab.target("grpc-server-headless"),
                rpcs=None,
                duration_s=6,
                concurrency=6,
                rate=50,  # the bad pod's share, 17 a second x 60 ms: 1 call in flight
                lb_policy="round_robin",
            ),
        )
    finally:
        lab.set_fault(bad)
    # round_robin gives the bad pod a third of the calls, and it fails half of them.
    error_rate = monitoring.value(lab.prometheus_query(QUERIES["error rate"], at=end))
    assert 0.08 < error_rate < 0.3
    p99 = monitoring.value(lab.prometheus_query(QUERIES["p99 latency"], at=end))
    assert 0.05 < p99 <= 0.25  # the 60 ms calls: the (0.05, 0.1] bucket, later when busy


def test_a_range_query_gives_one_series_per_pod(lab):
    import time

    end = time.time()
    series = lab.prometheus_query_range(QUERIES["request rate per pod"], end - 10, end, step=1)
    assert {s.labels["pod"] for s in series} == set(ready_pods(lab))
    assert all(len(s.times) == len(s.values) > 5 for s in series)


def test_a_bad_query_says_what_prometheus_said(lab):
    with pytest.raises(monitoring.PrometheusError, match="parse error"):
        lab.prometheus_query("sum by (pod (up)")


def test_down_stops_prometheus():
    lab = grpclab.connect("sandbox")
    try:
        lab.prometheus_url()
        process = lab.addons["prometheus"].process
        assert process.poll() is None
    finally:
        lab.down()
    assert process.poll() is not None
    assert not any(p.pid == process.pid for p in lab.launcher.children.values())


def test_a_missing_prometheus_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.delenv("GRPCLAB_PROMETHEUS", raising=False)
    with pytest.raises(MissingBinaryError, match="apt-get install prometheus"):
        prometheus_binary(search_path=str(tmp_path))
    monkeypatch.setenv("GRPCLAB_PROMETHEUS", str(tmp_path / "prometheus"))
    with pytest.raises(MissingBinaryError, match="GRPCLAB_PROMETHEUS=.* is not an executable"):
        prometheus_binary()


def test_a_backend_without_prometheus_says_what_to_do_instead():
    class Bare(Cluster):
        backend = "kind"

    for name in list(Bare.__abstractmethods__):
        setattr(Bare, name, lambda self, *a, **k: None)
    Bare.__abstractmethods__ = frozenset()
    with pytest.raises(NotImplementedError, match="cluster/addons/prometheus.sh"):
        Bare().prometheus_query("up")


def test_evenness_from_the_client_agrees_with_prometheus_on_a_pinned_channel(lab):
    result = lab.run_load(LoadSpec(lab.target("grpc-server"), rpcs=200), None)
    assert checks.evenness(result, ready_pods(lab)) == pytest.approx(math.sqrt(2))
