"""The labs' checks: rules first, then behaviour, on a real sandbox.

Each check fails on its starter files and passes on its solution; every cheat in CHEATS
fails, and the assertion names the rule or check that catches it. Each lab's tests on a
cluster run as one group on one xdist worker (tests/parallel.py, by the lab number their
ids start with), on a sandbox of the lab's own: `number` is a module-scoped parameter, so
pytest runs a lab's cases together, and the next lab gets a fresh sandbox. Within a lab,
every check replays its files from scratch (applies them, waits for the rollout), which is
the reset between cases. A cheat the rules catch never reaches the cluster: those cases
run against NoCluster, which fails the test if the check touches it.
"""

from __future__ import annotations

import copy
import inspect
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import parallel
import pytest
import yaml

import grpclab
from grpclab.cluster import Cluster
from grpclab.labs import (
    CLIENT_FILE,
    LABS,
    LABS_DIR,
    LabFilesError,
    check_lab,
    check_rules,
    lab_info,
    read_client_config,
    rules_item_name,
    service_needs_replacing,
    start_lab,
)

# What must fail on the starter files, by check key in the lab's rules.yaml: the lab's
# point, not a side effect such as a file that does not apply.
STARTER_FAILS = {
    "01": ["headless", "every_pod", "even"],
    "02": ["pickup"],
    "03": ["no_failure", "left"],
    "04": ["get_user"],
    "05": ["crash", "ejected"],
    "06": ["uneven", "even"],
}

# One failing item per lab, as the starter gives it: (key, in measured, in expected, in next).
PLAIN = {
    "01": ("every_pod", "1 of 3 pods and 1 of 3 pods", "3 of 3 pods", "kube-proxy"),
    "02": ("pickup", "never served", "within 5 s of Ready", "resolves again"),
    "03": ("no_failure", "calls failed", "0 failed calls", "SIGKILL came during the app's drain"),
    "04": ("get_user", "0 of 300 calls on v2", "300 of 300 calls on v2", "Add a rule"),
    "05": ("crash", "calls failed", "0 failed calls", "leaves out connect-failure and reset"),
    "06": ("even", "your query gives", "one number within 0.15 of", "stddev over the mean"),
}


@pytest.fixture(scope="module")
def lab(number):
    """A sandbox for lab `number`'s group alone (`number` must be a module-scoped parameter)."""
    with grpclab.connect("sandbox") as sandbox:
        yield sandbox


def on_a_lab(numbers, *more: str, **kwargs: Any):
    """Parametrize a test on a lab's sandbox: `number` first, module-scoped, so that the lab's
    cases share its sandbox and no state carries from one lab's group to another's."""
    names = ("number", *more) if more else "number"
    return pytest.mark.parametrize(names, numbers, scope="module", **kwargs)


class NoCluster:
    """Stands where a cluster would: the rules must decide without one."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the check used the cluster ({name}) before the rules stopped it")


def lab_dir(number: str) -> Path:
    return LABS_DIR / lab_info(number).folder


def rules(number: str):
    return lab_info(number).rules


def named(number: str, key: str) -> str:
    return rules(number).passes_when[key]


@pytest.mark.timeout(240)
@on_a_lab(sorted(LABS))
def test_the_check_fails_on_the_starter_and_passes_on_the_solution(lab, number):
    starter = check_lab(number, lab_dir(number), lab, files="starter", quiet=True)
    assert not starter.passed, starter.report()
    failed = [item.name for item in starter.failed]
    for key in STARTER_FAILS[number]:
        assert named(number, key) in failed, starter.report()
    kept = [rules_item_name(rule) for rule in rules(number).files]
    assert all(item.passed for item in starter.items if item.name in kept), starter.report()
    assert all(item.hint and item.expected for item in starter.failed), starter.report()

    # Graders speak plainly: what was measured, what was expected, what to look at next.
    key, measured, expected, hint = PLAIN[number]
    [item] = [item for item in starter.items if item.name == named(number, key)]
    assert measured in item.measured and expected in item.expected and hint in item.hint, item
    report = starter.report()
    for line in (f"measured: {item.measured}", f"expected: {item.expected}", "next: "):
        assert line in report, report

    solution = check_lab(number, lab_dir(number), lab, files="solution", quiet=True)
    assert solution.passed, solution.report()
    # The checks that ran are the rules table's, in its order: README, table and grader agree.
    assert [item.name for item in solution.items] == [
        *(rules_item_name(rule) for rule in rules(number).files),
        "your files apply",
        *rules(number).passes_when.values(),
    ], solution.report()


# --- cheats: submissions that must fail, and what must catch them -----------------------------


def docs(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def write_docs(path: Path, objects: list[dict]) -> None:
    path.write_text(yaml.safe_dump_all(objects, sort_keys=False))


def add_object(name: str, source: Path, edit: Callable[[dict], None] = lambda obj: None):
    """Append `source`'s first object, edited, to the learner's file `name`."""

    def change(work: Path) -> None:
        [obj] = docs(source)[:1]
        edit(obj)
        write_docs(work / name, [*docs(work / name), obj])

    return change


def edit_object(name: str, edit: Callable[[dict], None]):
    def change(work: Path) -> None:
        objects = docs(work / name)
        edit(objects[0])
        write_docs(work / name, objects)

    return change


def client(**fields: Any):
    def change(work: Path) -> None:
        data = yaml.safe_load((work / CLIENT_FILE).read_text())
        data.update(fields)
        (work / CLIENT_FILE).write_text(yaml.safe_dump(data))

    return change


def both(*changes: Callable[[Path], None]):
    def change(work: Path) -> None:
        for each in changes:
            each(work)

    return change


def container(obj: dict) -> dict:
    return obj["spec"]["template"]["spec"]["containers"][0]


def set_env(name: str, value: str):
    def edit(obj: dict) -> None:
        env = [e for e in container(obj)["env"] if e["name"] != name]
        container(obj)["env"] = [*env, {"name": name, "value": value}]

    return edit


def use_starter(number: str, name: str):
    def change(work: Path) -> None:
        shutil.copy(lab_dir(number) / "starter" / name, work / name)

    return change


def use_solution(number: str, name: str):
    def change(work: Path) -> None:
        shutil.copy(lab_dir(number) / "solution" / name, work / name)

    return change


MANIFESTS = LABS_DIR.parent / "cluster" / "manifests"
SOLUTION_HEALTH = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "healthCheckConfig": {"serviceName": "mypackage.MyService"},
}


@dataclass(frozen=True)
class Cheat:
    lab: str
    what: str
    base: str  # "starter" or "solution": the files the cheat starts from
    change: Callable[[Path], None]
    caught_by: str  # a file name (its rules item) or a check key of the lab's rules.yaml
    says: str = ""  # a phrase the failed item's measured text must hold
    behaviour: bool = False  # False: the rules must stop it before the cluster is touched


def _replicas(count: int) -> Callable[[dict], None]:
    def edit(obj: dict) -> None:
        obj["spec"]["replicas"] = count

    return edit


def _route_rules(obj: dict) -> list[dict]:
    return obj["spec"]["rules"]


CHEATS = [
    # lab 01: every way to an even chart that is not a headless Service and a client policy
    Cheat(
        "01",
        "a Deployment with replicas: 1 added to service.yaml",
        "starter",
        add_object("service.yaml", MANIFESTS / "base" / "deployment.yaml", _replicas(1)),
        "service.yaml",
        "service.yaml may only hold the Service grpc-server-lab; it also holds "
        "Deployment/grpc-server",
    ),
    Cheat(
        "01",
        "via: xds with the ClusterIP Service left",
        "starter",
        client(via="xds", lb_policy="round_robin"),
        CLIENT_FILE,
        "via changed (shipped: dns; yours: xds)",
    ),
    Cheat(
        "01",
        "via: mesh with the ClusterIP Service left",
        "starter",
        client(via="mesh"),
        CLIENT_FILE,
        "via changed (shipped: dns; yours: mesh)",
    ),
    Cheat(
        "01",
        "many channels on the ClusterIP, spreading connections by chance",
        "starter",
        client(channels=300, lb_policy="round_robin"),
        CLIENT_FILE,
        "channels changed (shipped: 1; yours: 300)",
    ),
    Cheat(
        "01",
        "the client calls the tutorial's Service instead of the lab's",
        "solution",
        client(service="grpc-server-headless"),
        CLIENT_FILE,
        "service changed",
    ),
    Cheat(
        "01",
        "the Service selects other pods",
        "solution",
        edit_object(
            "service.yaml", lambda obj: obj["spec"]["selector"].update(app="grpc-server-v2")
        ),
        "service.yaml",
        "spec.selector.app changed (shipped: grpc-server; yours: grpc-server-v2)",
    ),
    Cheat(
        "01",
        "sessionAffinity on the Service",
        "starter",
        edit_object("service.yaml", lambda obj: obj["spec"].update(sessionAffinity="ClientIP")),
        "service.yaml",
        "spec.sessionAffinity is added (ClientIP)",
    ),
    Cheat(
        "01",
        "a headless Service with pick_first: one pod gets every call",
        "starter",
        use_solution("01", "service.yaml"),
        "every_pod",
        "1 of 3 pods",
        behaviour=True,
    ),
    # lab 02: new pods must come from the scale-up, and be found by DNS and a closed connection
    Cheat(
        "02",
        "the Deployment starts with 5 replicas",
        "starter",
        edit_object("deployment.yaml", _replicas(5)),
        "deployment.yaml",
        "spec.replicas changed (shipped: 3; yours: 5)",
    ),
    Cheat(
        "02",
        "via: mesh, whose proxy learns new endpoints at once",
        "starter",
        client(via="mesh"),
        CLIENT_FILE,
        "via changed",
    ),
    Cheat(
        "02",
        "a slower readiness probe, so the new pods are Ready late",
        "solution",
        edit_object(
            "deployment.yaml", lambda obj: container(obj)["readinessProbe"].update(periodSeconds=9)
        ),
        "deployment.yaml",
        "readinessProbe.periodSeconds changed (shipped: 2; yours: 9)",
    ),
    Cheat(
        "02",
        "client keepalive pings that make the server close connections",
        "solution",
        client(
            channel_options={
                "grpc.dns_min_time_between_resolutions_ms": 1000,
                "grpc.keepalive_time_ms": 100,
            }
        ),
        CLIENT_FILE,
        "channel_options[grpc.keepalive_time_ms] is added (100)",
    ),
    Cheat(
        "02",
        "a different image",
        "solution",
        edit_object("deployment.yaml", lambda obj: container(obj).update(image="other:1")),
        "deployment.yaml",
        "image changed",
    ),
    Cheat(
        "02",
        "a second Deployment in deployment.yaml",
        "solution",
        add_object(
            "deployment.yaml",
            MANIFESTS / "ingress" / "deployment-v2.yaml",
            lambda obj: obj["metadata"].update(name="grpc-server-spare"),
        ),
        "deployment.yaml",
        "it also holds Deployment/grpc-server-spare",
    ),
    # lab 03: the server must drain, and the pod must go while calls are in flight
    Cheat(
        "03",
        "ten replicas, so the deleted pod carries few calls",
        "solution",
        edit_object("deployment.yaml", _replicas(10)),
        "deployment.yaml",
        "spec.replicas changed (shipped: 3; yours: 10)",
    ),
    Cheat(
        "03",
        "a retry policy that hides the calls the kill fails",
        "starter",
        client(
            service_config={
                "loadBalancingConfig": [{"round_robin": {}}],
                "methodConfig": [
                    {
                        "name": [{"service": "mypackage.MyService"}],
                        "retryPolicy": {
                            "maxAttempts": 5,
                            "initialBackoff": "0.01s",
                            "maxBackoff": "0.1s",
                            "backoffMultiplier": 2,
                            "retryableStatusCodes": ["UNAVAILABLE", "CANCELLED"],
                        },
                    }
                ],
            }
        ),
        CLIENT_FILE,
        "service_config.methodConfig",
    ),
    Cheat(
        "03",
        "via: mesh, whose proxy retries for the client",
        "solution",
        client(via="mesh"),
        CLIENT_FILE,
        "via changed",
    ),
    Cheat(
        "03",
        "no readiness probe",
        "solution",
        edit_object("deployment.yaml", lambda obj: container(obj).pop("readinessProbe")),
        "deployment.yaml",
        "readinessProbe.grpc.port is removed",
    ),
    Cheat(
        "03",
        "a server that ignores SIGTERM through its command",
        "solution",
        edit_object(
            "deployment.yaml",
            lambda obj: container(obj).update(args=["--drain-delay-s", "600"]),
        ),
        "deployment.yaml",
        "args is added",
    ),
    Cheat(
        "03",
        "connection ages, a lab 02 setting",
        "solution",
        edit_object("deployment.yaml", set_env("GRPC_MAX_CONNECTION_AGE_MS", "1000")),
        "deployment.yaml",
        "env[GRPC_MAX_CONNECTION_AGE_MS].name is added",
    ),
    Cheat(
        "03",
        "the app's drain cut short through its environment",
        "starter",
        edit_object("deployment.yaml", set_env("GRPCLAB_DRAIN_DELAY_S", "0")),
        "deployment.yaml",
        "env[GRPCLAB_DRAIN_DELAY_S].value changed (shipped: '4'; yours: '0')",
    ),
    Cheat(
        "03",
        "the grpclab switch that makes the app stop at once",
        "solution",
        edit_object("deployment.yaml", set_env("GRPCLAB_NO_DRAIN", "1")),
        "deployment.yaml",
        "env[GRPCLAB_NO_DRAIN].name is added",
    ),
    Cheat(
        "03",
        "a preStop sleep as long as the run, so the deleted pod never fails a call",
        "solution",
        edit_object(
            "deployment.yaml",
            lambda obj: (
                obj["spec"]["template"]["spec"].update(terminationGracePeriodSeconds=30),
                container(obj).update(lifecycle={"preStop": {"sleep": {"seconds": 20}}}),
            ),
        ),
        "left",
        "still served at the end of the run",
        behaviour=True,
    ),
    Cheat(
        "03",
        "a long grace period alone: the client keeps sending until the GOAWAY",
        "starter",
        edit_object(
            "deployment.yaml",
            lambda obj: (
                obj["spec"]["template"]["spec"].update(terminationGracePeriodSeconds=30),
                container(obj).pop("lifecycle"),
            ),
        ),
        "left",
        "its last call",
        behaviour=True,
    ),
    # lab 04: v2 must serve GetUser because of the route
    Cheat(
        "04",
        "a second Service for GetUser in grpcroute.yaml",
        "solution",
        add_object(
            "grpcroute.yaml",
            MANIFESTS / "ingress" / "service-v2.yaml",
            lambda obj: obj["metadata"].update(name="grpc-server-getuser"),
        ),
        "grpcroute.yaml",
        "may only hold the GRPCRoute grpc-server-lab-route; it also holds "
        "Service/grpc-server-getuser",
    ),
    Cheat(
        "04",
        "v2's Deployment with edited pod labels in grpcroute.yaml",
        "starter",
        add_object(
            "grpcroute.yaml",
            MANIFESTS / "ingress" / "deployment-v2.yaml",
            lambda obj: obj["spec"]["template"]["metadata"]["labels"].update(version="v1"),
        ),
        "grpcroute.yaml",
        "it also holds Deployment/grpc-server-v2",
    ),
    Cheat(
        "04",
        "a backendRef to a Service of one's own",
        "solution",
        edit_object(
            "grpcroute.yaml",
            lambda obj: _route_rules(obj)[1]["backendRefs"][0].update(name="grpc-server-mine"),
        ),
        "grpcroute.yaml",
        "name is grpc-server-mine; it must be one of grpc-server, grpc-server-v2",
    ),
    Cheat(
        "04",
        "the route on another Gateway",
        "solution",
        edit_object("grpcroute.yaml", lambda obj: obj["spec"]["parentRefs"][0].update(name="gw")),
        "grpcroute.yaml",
        "spec.parentRefs",
    ),
    Cheat(
        "04",
        "a mirror filter",
        "solution",
        edit_object(
            "grpcroute.yaml",
            lambda obj: _route_rules(obj)[1].update(
                filters=[
                    {
                        "type": "RequestMirror",
                        "requestMirror": {"backendRef": {"name": "grpc-server-v2", "port": 50051}},
                    }
                ]
            ),
        ),
        "grpcroute.yaml",
        "spec.rules[1].filters",
    ),
    Cheat(
        "04",
        "the route in another namespace",
        "solution",
        edit_object("grpcroute.yaml", lambda obj: obj["metadata"].update(namespace="default")),
        "grpcroute.yaml",
        "metadata.namespace changed",
    ),
    Cheat(
        "04",
        "every method to v2",
        "starter",
        edit_object(
            "grpcroute.yaml",
            lambda obj: _route_rules(obj)[0]["backendRefs"][0].update(name="grpc-server-v2"),
        ),
        "say_hello",
        "0 of 300 calls on v1",
        behaviour=True,
    ),
]


def _retries(obj: dict) -> dict:
    return obj["spec"]["http"][0]["retries"]


def _traffic(obj: dict) -> dict:
    return obj["spec"]["trafficPolicy"]


CHEATS += [
    # lab 05: the sidecar must retry and eject, for the Service as shipped
    Cheat(
        "05",
        "ten attempts, which retry the broken pod into the ground",
        "solution",
        edit_object("virtualservice.yaml", lambda obj: _retries(obj).update(attempts=10)),
        "virtualservice.yaml",
        "attempts is 10; it must be one of 1, 2, 3",
    ),
    Cheat(
        "05",
        "a route to another Service",
        "solution",
        edit_object(
            "virtualservice.yaml",
            lambda obj: obj["spec"]["http"][0]["route"][0]["destination"].update(
                host="grpc-server-v2.production.svc.cluster.local"
            ),
        ),
        "virtualservice.yaml",
        "destination.host changed",
    ),
    Cheat(
        "05",
        "a second host on the VirtualService",
        "solution",
        edit_object(
            "virtualservice.yaml",
            lambda obj: obj["spec"]["hosts"].append("grpc-server-v2.production.svc.cluster.local"),
        ),
        "virtualservice.yaml",
        "spec.hosts changed",
    ),
    Cheat(
        "05",
        "one request per connection, so every call gets a fresh pod",
        "solution",
        edit_object(
            "destinationrule.yaml",
            lambda obj: _traffic(obj)["connectionPool"]["http"].update(maxRequestsPerConnection=1),
        ),
        "destinationrule.yaml",
        "maxRequestsPerConnection changed (shipped: 100; yours: 1)",
    ),
    Cheat(
        "05",
        "the rule on another host",
        "solution",
        edit_object("destinationrule.yaml", lambda obj: obj["spec"].update(host="elsewhere")),
        "destinationrule.yaml",
        "spec.host changed",
    ),
    Cheat(
        "05",
        "retries that cover a crash, but no outlier detection",
        "solution",
        use_starter("05", "destinationrule.yaml"),
        "ejected",
        "0 ejections",
        behaviour=True,
    ),
    Cheat(
        "05",
        "outlier detection with the guide's retries: a crash still fails calls",
        "solution",
        use_starter("05", "virtualservice.yaml"),
        "crash",
        "calls failed",
        behaviour=True,
    ),
]


def query(text: str):
    def change(work: Path) -> None:
        (work / "evenness.promql").write_text(text)

    return change


PER_POD = (
    "sum by (pod) (rate(grpc_server_handled_total"
    '{app="grpc-server", grpc_service="mypackage.MyService"}[5s]))'
)


def without_the_app_selector(work: Path) -> None:
    """The solution, counting every pod Prometheus scrapes: grpc-server-v2's too."""
    solution = (lab_dir("06") / "solution" / "evenness.promql").read_text()
    assert 'app="grpc-server", ' in solution
    (work / "evenness.promql").write_text(
        solution.replace('app="grpc-server", ', "").replace(', app="grpc-server"', "")
    )


CHEATS += [
    # lab 06: the query must measure the pods' calls, every pod, in every run
    Cheat(
        "06",
        "a number that is right for one run",
        "starter",
        query("vector(1.41)"),
        "even",
        "your query gives 1.41",
        behaviour=True,
    ),
    Cheat(
        "06",
        "the per-pod rates without the pods that served nothing",
        "starter",
        query(f"stddev({PER_POD}) / avg({PER_POD})"),
        "uneven",
        "your query gives 0.00",
        behaviour=True,
    ),
    Cheat(
        "06",
        "sqrt(pods - 1): one busy pod's answer from counting pods",
        "starter",
        query('sqrt(count(up{job="pods", app="grpc-server"}) - 1)'),
        "even",
        "your query gives 1.41",
        behaviour=True,
    ),
    Cheat(
        "06",
        "every scraped pod, another app's pods too",
        "solution",
        without_the_app_selector,
        "uneven",
        "your query gives 2.00",
        behaviour=True,
    ),
    Cheat(
        "06",
        "CPU time as a stand-in for calls",
        "solution",
        query(
            "stddev(rate(process_cpu_seconds_total[5s])) / avg(rate(process_cpu_seconds_total[5s]))"
        ),
        "evenness.promql",
        "it reads process_cpu_seconds_total",
    ),
    Cheat(
        "06",
        "any metric, through __name__",
        "solution",
        query('stddev({__name__=~"grpc_server_handled_total|up"})'),
        "evenness.promql",
        "selects metrics through __name__",
    ),
    Cheat(
        "06",
        "an empty file",
        "starter",
        query("# nothing yet\n"),
        "evenness.promql",
        "holds no query",
    ),
]


def test_each_labs_tests_on_a_cluster_are_a_group_of_their_own_on_the_xdist_workers(request):
    # tests/parallel.py finds a lab's tests on a cluster by their node ids: a test here that
    # takes the `lab` fixture must be in its ON_A_LAB table, and a cluster-free one must not.
    module = request.node.nodeid.split("::")[0]
    tests = {name: test for name, test in globals().items() if name.startswith("test_")}
    on_a_lab = {name for name, test in tests.items() if "lab" in inspect.signature(test).parameters}
    assert len(on_a_lab) >= 2, on_a_lab
    for name, test in tests.items():
        for number in LABS:
            for case in (number, f"{number}-a cheat"):
                group = parallel.group_of(f"{module}::{name}[{case}]")
                assert group == (f"lab:{number}" if name in on_a_lab else module), (name, case)
        if name in on_a_lab:  # `number` module-scoped: pytest runs a lab's cases together
            [mark] = [m for m in test.pytestmark if m.name == "parametrize"]
            assert mark.args[0] in ("number", ("number", *mark.args[0][1:])), name
            assert mark.kwargs.get("scope") == "module", name
    # And as collected: each case on a lab's sandbox is in the group of the lab it checks.
    for item in request.session.items:
        if item.nodeid.startswith(f"{module}::") and "lab" in item.fixturenames:
            assert parallel.group_of(item.nodeid) == f"lab:{item.callspec.params['number']}"


def test_every_lab_has_five_cheats_or_more():
    for number in LABS:
        assert sum(1 for cheat in CHEATS if cheat.lab == number) >= 5, number


def _item_name(cheat: Cheat) -> str:
    for rule in rules(cheat.lab).files:
        if rule.name == cheat.caught_by:
            return rules_item_name(rule)
    return named(cheat.lab, cheat.caught_by)


def cheats(behaviour: bool) -> list[Any]:
    return [
        pytest.param(cheat.lab, cheat, id=f"{cheat.lab}-{cheat.what}")
        for cheat in CHEATS
        if cheat.behaviour == behaviour
    ]


@pytest.mark.timeout(120)
@on_a_lab(cheats(behaviour=True), "cheat")
def test_a_cheat_fails_and_the_check_names_why(lab, tmp_path, number, cheat):
    check_the_cheat(cheat, tmp_path, lab)


@pytest.mark.parametrize(("number", "cheat"), cheats(behaviour=False))
def test_a_cheat_the_rules_catch_fails_before_the_cluster(tmp_path, number, cheat):
    check_the_cheat(cheat, tmp_path, NoCluster())


def check_the_cheat(cheat: Cheat, tmp_path: Path, cluster: Any) -> None:
    shutil.copytree(lab_dir(cheat.lab) / cheat.base, tmp_path / "work")
    cheat.change(tmp_path / "work")
    result = check_lab(cheat.lab, tmp_path, cluster, quiet=True)
    assert not result.passed, result.report()
    expected = _item_name(cheat)
    caught = [item for item in result.failed if item.name == expected]
    assert caught, f"{cheat.what}: expected {expected!r} to fail\n{result.report()}"
    assert cheat.says in caught[0].measured, result.report()
    if not cheat.behaviour:
        assert "your files apply" not in [item.name for item in result.items], result.report()


# --- the rules, without a cluster --------------------------------------------------------------


@pytest.mark.parametrize("number", sorted(LABS))
@pytest.mark.parametrize("files", ["starter", "solution"])
def test_every_shipped_file_keeps_to_the_rules(number, files):
    items = check_rules(number, lab_dir(number) / files)
    assert [item.name for item in items] == [rules_item_name(r) for r in rules(number).files]
    assert all(item.passed for item in items), [item.measured for item in items]


OTHER_METRICS = (
    "grpc_server_msg_received_total",
    "grpc_server_handling_seconds_bucket",
    "process_cpu_seconds_total",
    "prometheus_http_requests_total",
    "scrape_samples_scraped",
)


def _set(obj: Any, path: tuple, value: Any) -> None:
    """Set the leaf at `path` (as grpclab.labs.leaves names it) in `obj`."""
    *parents, (last, _) = path
    for key, item in parents:
        if item:
            named = [each for each in obj if each.get("name") == key]
            obj = named[0] if named else obj[int(key)]
        else:
            obj = obj[key]
    obj[last] = value


def _other(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, list):
        return [*value, value[0]]
    return f"{value}-x"


@pytest.mark.parametrize("number", sorted(LABS))
def test_every_shipped_field_outside_the_allow_list_is_caught(number, tmp_path):
    """The rules hold in principle: change any one shipped value they do not allow, and the
    file fails, naming that field."""
    starter = lab_dir(number) / "starter"
    checked = 0
    for rule in rules(number).files:
        source = starter / rule.name
        if rule.is_query:  # a query's allow-list is the metrics it may read
            for other in OTHER_METRICS:
                shutil.rmtree(tmp_path / "work", ignore_errors=True)
                shutil.copytree(starter, tmp_path / "work")
                text = source.read_text().replace("grpc_server_handled_total", other)
                (tmp_path / "work" / rule.name).write_text(text)
                [item] = [i for i in check_rules(number, tmp_path / "work") if not i.passed]
                assert f"it reads {other}" in item.measured, item.measured
                checked += 1
            continue
        shipped = [yaml.safe_load(source.read_text())] if rule.is_client else docs(source)
        for index, obj in enumerate(shipped):
            allowed = (
                rule.may_change
                if rule.is_client
                else rule.objects[f"{obj['kind']}/{obj['metadata']['name']}"]["may_change"]
            )
            for path, value in grpclab.labs.leaves(obj).items():
                shown = grpclab.labs.show_path(path)
                if grpclab.labs.allows(allowed, path):
                    continue
                changed = copy.deepcopy(shipped)
                _set(changed[index], path, _other(value))
                shutil.rmtree(tmp_path / "work", ignore_errors=True)
                shutil.copytree(starter, tmp_path / "work")
                if rule.is_client:
                    (tmp_path / "work" / rule.name).write_text(yaml.safe_dump(changed[0]))
                else:
                    write_docs(tmp_path / "work" / rule.name, changed)
                [item] = [i for i in check_rules(number, tmp_path / "work") if not i.passed]
                assert item.name == rules_item_name(rule), shown
                if str(tmp_path) in item.measured:
                    pass  # the schema refused it already, naming the file and line
                elif shown in ("kind", "metadata.name"):  # another object, then
                    assert "it also holds" in item.measured, (shown, item.measured)
                else:
                    assert shown in item.measured, (shown, item.measured)
                checked += 1
    assert checked >= 5, checked


@pytest.mark.parametrize("number", sorted(LABS))
def test_the_readme_and_the_notebook_say_what_the_rules_table_says(number):
    table = rules(number)
    readme = (lab_dir(number) / "README.md").read_text()
    notebook = nbformat.read(lab_dir(number) / "starter.ipynb", as_version=4)
    opening = notebook.cells[0].source
    for text in (table.you_edit(), table.passes_when_text()):
        assert text in readme, f"README.md of lab {number} should say:\n{text}"
        assert text in opening, f"starter.ipynb of lab {number} should open with:\n{text}"
    overview = (LABS_DIR / "README.md").read_text()
    [row] = [line for line in overview.splitlines() if line.startswith(f"| [{number}-")]
    assert re.findall(r"`([\w.]+\.(?:yaml|promql))`", row) == [r.name for r in table.files], row


def test_a_rules_limit_is_what_the_given_manifests_ship():
    deployment = docs(MANIFESTS / "base" / "deployment.yaml")[0]
    v2 = docs(MANIFESTS / "ingress" / "deployment-v2.yaml")[0]
    for number in ("01", "02", "03"):
        starter = lab_dir(number) / "starter" / "deployment.yaml"
        shipped = docs(starter)[0] if starter.exists() else deployment
        assert rules(number).limits["pods"] == shipped["spec"]["replicas"]
    assert rules("04").limits["v1_pods"] == deployment["spec"]["replicas"]
    assert rules("04").limits["v2_pods"] == v2["spec"]["replicas"]
    assert rules("05").limits["pods"] == deployment["spec"]["replicas"]
    assert rules("06").limits["pods"] == deployment["spec"]["replicas"]


def test_every_call_a_hint_names_is_on_the_cluster_interface():
    sources = [Path(grpclab.labs.__file__)]
    sources += sorted(LABS_DIR.glob("*/README.md")) + sorted(LABS_DIR.glob("*/rules.yaml"))
    named_calls = {
        (source.name, name)
        for source in sources
        for name in re.findall(r"\blab\.(\w+)\(", source.read_text())
    }
    assert {name for _, name in named_calls} >= {"pods", "logs"}, named_calls
    missing = sorted((where, name) for where, name in named_calls if not hasattr(Cluster, name))
    assert not missing, f"hints name calls that Cluster does not have: {missing}"


# --- the Service swap, decided from objects ----------------------------------------------------


def service(cluster_ip: str | None) -> dict:
    spec = {"selector": {"app": "grpc-server"}}
    if cluster_ip is not None:
        spec["clusterIP"] = cluster_ip
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": spec}


@pytest.mark.parametrize(
    ("live", "desired", "replace"),
    [
        (service("10.96.0.12"), service("None"), True),  # to headless: "may not change once set"
        (service("None"), service(None), True),  # back: the API server would keep "None"
        (service("None"), service("10.96.0.12"), True),
        (service("10.96.0.12"), service(None), False),  # an ordinary update
        (service("None"), service("None"), False),
        (None, service("None"), False),  # nothing live: a plain create
        (service("10.96.0.12"), {**service("None"), "kind": "Deployment"}, False),
    ],
)
def test_a_service_is_replaced_only_when_it_turns_headless_or_back(live, desired, replace):
    assert service_needs_replacing(live, desired) is replace


@on_a_lab(["01"])
def test_the_lab_swaps_its_service_both_ways_and_says_replaced(lab, tmp_path, number):
    shutil.copytree(lab_dir(number) / "starter", tmp_path / "work")
    lines = start_lab(number, tmp_path, lab)
    assert any(line.startswith("service/grpc-server-lab ") for line in lines), lines
    for files, headless in (("solution", True), ("starter", False)):
        shutil.copy(lab_dir(number) / files / "service.yaml", tmp_path / "work" / "service.yaml")
        lines = grpclab.labs.apply_lab_files(number, tmp_path, lab)
        assert "service/grpc-server-lab replaced" in lines, lines
        try:
            lab.target("grpc-server-lab", via="clusterip")
            assert not headless
        except ValueError:
            assert headless


# --- the learner's files, without a cluster ----------------------------------------------------


def test_a_file_that_breaks_the_schema_is_a_failed_rule_naming_the_file(tmp_path):
    shutil.copytree(lab_dir("01") / "starter", tmp_path / "work")
    service_file = tmp_path / "work" / "service.yaml"
    service_file.write_text(
        service_file.read_text().replace("targetPort: grpc", "targetPort: [grpc]")
    )
    result = check_lab("01", tmp_path, NoCluster(), quiet=True)
    assert not result.passed
    [item] = result.failed
    assert item.name == rules_item_name(rules("01").files[0])
    assert str(service_file) in item.measured and "targetPort" in item.measured, item.measured
    assert "lab 01: not passed yet" in result.report()


@on_a_lab(["01"])
def test_a_file_that_does_not_apply_is_a_failed_item_naming_the_file(lab, tmp_path, number):
    shutil.copytree(lab_dir(number) / "starter", tmp_path / "work")
    service_file = tmp_path / "work" / "service.yaml"
    service_file.write_text(
        service_file.read_text().replace("type: ClusterIP", "type: ClusterIP\n  clusterIP: 1.2.3.4")
    )
    result = check_lab(number, tmp_path, lab, quiet=True)
    [item] = result.failed
    assert item.name == "your files apply", result.report()
    assert str(service_file) in item.measured and "clusterIP" in item.measured, item.measured


@on_a_lab(["01"])
def test_start_lab_copies_the_starter_once_and_keeps_edits(lab, tmp_path, number):
    shutil.copytree(lab_dir(number) / "starter", tmp_path / "starter")
    lines = start_lab(number, tmp_path, lab)
    assert "copied from starter/" in lines[0]
    assert any(line.startswith("deployment/grpc-server: 3 pods ready") for line in lines)
    edited = tmp_path / "work" / CLIENT_FILE
    edited.write_text(edited.read_text().replace("pick_first", "round_robin"))
    assert "kept" in start_lab(number, tmp_path, lab)[0]
    assert read_client_config(edited).lb_policy == "round_robin"


@pytest.mark.parametrize("number", sorted(LABS))
def test_starter_and_solution_hold_the_same_files(number):
    info = lab_info(number)
    starter = sorted(p.name for p in (lab_dir(number) / "starter").iterdir())
    solution = sorted(p.name for p in (lab_dir(number) / "solution").iterdir())
    assert starter == solution
    assert sorted(rule.name for rule in info.rules.files) == starter
    if CLIENT_FILE in starter:
        read_client_config(lab_dir(number) / "starter" / CLIENT_FILE)
        read_client_config(lab_dir(number) / "solution" / CLIENT_FILE)


@pytest.mark.parametrize("number", sorted(LABS))
def test_the_notebook_starts_the_lab_and_ends_with_its_check(number):
    notebook = nbformat.read(lab_dir(number) / "starter.ipynb", as_version=4)
    opening = notebook.cells[0].source
    assert "Passes when" in opening and "How long it takes" in opening
    cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert f'start_lab("{number}", ".", lab)' in cells[0].source
    assert cells[-1].source.strip() == f'result = check_lab("{number}", ".", lab)'
    assert not any(cell.outputs for cell in cells), "hand the notebook out unexecuted"
    assert (lab_dir(number) / "README.md").exists()


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("service: grpc-server\nlb_polcy: round_robin\n", "'lb_polcy': unknown field"),
        ("service: grpc-server\nchannels: two\n", "'channels': 'two' is not a whole number"),
        ("service: grpc-server\nchannels: 0\n", "'channels': 0 is not 1 or more"),
        ("port: grpc\n", "'service': missing"),
        ("service: grpc-server\nservice_config: '{not json'\n", "'service_config'"),
        ("- service\n", "must be a mapping"),
        ("service: [\n", "not valid YAML"),
    ],
)
def test_a_bad_client_file_names_the_file_and_the_field(tmp_path, text, field):
    path = tmp_path / CLIENT_FILE
    path.write_text(text)
    with pytest.raises(LabFilesError) as raised:
        read_client_config(path)
    assert str(path) in str(raised.value) and field in str(raised.value)


def test_an_unknown_lab_is_named_with_the_ones_there_are():
    with pytest.raises(KeyError, match="no lab '07'; the labs are 01, 02, 03, 04, 05, 06"):
        lab_info("07")
    assert lab_info(1).number == "01" and lab_info("04-grpcroute-v2").number == "04"
