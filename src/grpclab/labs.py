"""Graded labs: replay the learner's files from labs/NN-topic/ on a cluster, say what passed.

A lab folder holds `starter/` (the files as handed out), `solution/`, and `work/`: the
learner's copy of `starter/`, which the notebook makes and the learner edits. `check_lab`
applies the manifests of one of these folders, drives load with its `client.yaml`, and
judges the result with grpclab.checks, following the steps of the lab's README.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from grpclab import checks
from grpclab.cluster import Cluster
from grpclab.cluster.manifests import load_objects
from grpclab.drills import during_load
from grpclab.load import LoadResult, LoadSpec

if TYPE_CHECKING:
    from grpclab.certificates import TlsBundle

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "cluster" / "manifests"
LABS_DIR = REPO / "labs"
CLIENT_FILE = "client.yaml"
DEPLOYMENT = "grpc-server"
V2_DEPLOYMENT = "grpc-server-v2"

MAX_RATIO = 1.2  # lab 01: the busiest pod serves at most this many times the idlest
# Lab 01 judges the spread after the channel's first half second: until every subchannel
# is connected, round_robin rotates over the ones that are, which is not the learner's doing.
CONNECT_S = 0.5
PICKUP_WITHIN_S = 5.0  # lab 02: a new pod serves within this long of being Ready
SCALE_TO = 5  # lab 02: 3 -> 5 replicas
SERVER_LATENCY_MS = 50  # lab 03: each call's time in the handler while the pod is deleted
DEFAULT_DNS_COOL_DOWN_MS = 30_000  # grpc.dns_min_time_between_resolutions_ms when unset


class LabFilesError(ValueError):
    """A learner's lab file is missing or malformed; the message names the file and field."""


# --- the learner's client ------------------------------------------------------------------


@dataclass(frozen=True)
class ClientConfig:
    """How the lab's client reaches the demo server: the fields of `client.yaml`."""

    service: str
    port: int | str = "grpc"
    via: str = "dns"  # "dns", "clusterip", or a way an add-on adds ("mesh", "gateway", ...)
    lb_policy: str | None = None  # None: the channel's default, pick_first
    channels: int = 1
    channel_options: dict[str, Any] = field(default_factory=dict)
    service_config: dict[str, Any] | None = None  # a full service config; wins over lb_policy

    def load_spec(self, cluster: Cluster, **load: Any) -> LoadSpec:
        """A LoadSpec with this client's target and channel settings; `load` sets the rest."""
        load.setdefault("concurrency", 8)
        load["concurrency"] = max(load["concurrency"], self.channels)
        return LoadSpec(
            cluster.target(self.service, self.port, via=self.via),
            lb_policy=self.lb_policy,
            channels=self.channels,
            channel_options=dict(self.channel_options),
            service_config=self.service_config,
            **load,
        )


_CLIENT_FIELDS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "service": (str, "a Service name, such as grpc-server"),
    "port": ((int, str), "a port number or name, such as grpc"),
    "via": (str, "dns, clusterip, or a way an add-on adds (mesh, gateway, ...)"),
    "lb_policy": ((str, type(None)), "a gRPC policy name: pick_first or round_robin"),
    "channels": (int, "a whole number of channels, 1 or more"),
    "channel_options": ((dict, type(None)), "a mapping of gRPC channel option to value"),
    "service_config": ((dict, type(None)), "a gRPC service config, as a mapping"),
}


def read_client_config(path: str | Path) -> ClientConfig:
    """Parse and check `client.yaml`; a LabFilesError names the file and the field."""
    path = Path(path)
    where = f"{path}: client config"
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise LabFilesError(f"{path}: not found (run the notebook's first cell)") from None
    except yaml.YAMLError as error:
        raise LabFilesError(f"{where}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise LabFilesError(f"{where}: must be a mapping of field: value")
    for key, value in data.items():
        if key not in _CLIENT_FIELDS:
            known = ", ".join(_CLIENT_FIELDS)
            raise LabFilesError(f"{where}: field {key!r}: unknown field (known: {known})")
        kinds, what = _CLIENT_FIELDS[key]
        if not isinstance(value, kinds) or isinstance(value, bool):
            raise LabFilesError(f"{where}: field {key!r}: {value!r} is not {what}")
    if "service" not in data:
        raise LabFilesError(f"{where}: field 'service': missing (the Service to call)")
    if data.get("channels", 1) < 1:
        raise LabFilesError(f"{where}: field 'channels': {data['channels']} is not 1 or more")
    data["channel_options"] = data.get("channel_options") or {}
    config = ClientConfig(**data)
    try:
        LoadSpec(
            "check", lb_policy=config.lb_policy, service_config=config.service_config
        ).service_config_json()
    except ValueError as error:
        raise LabFilesError(f"{where}: field 'service_config': {error}") from None
    return config


# --- results ---------------------------------------------------------------------------------


@dataclass
class CheckItem:
    """One graded statement about the learner's cluster, with what was measured."""

    name: str
    passed: bool
    measured: str
    hint: str = ""  # what to try next; printed only when the item failed


@dataclass
class LabResult:
    """Every item of one check run; `passed` only if there are items and all passed."""

    lab: str
    title: str
    items: list[CheckItem] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.items) and all(item.passed for item in self.items)

    @property
    def failed(self) -> list[CheckItem]:
        return [item for item in self.items if not item.passed]

    def report(self) -> str:
        """The text `check_lab` prints: one line per item, a hint under each failure."""
        lines = [f"lab {self.lab} · {self.title}"]
        for item in self.items:
            lines.append(f"  {'ok  ' if item.passed else 'FAIL'}  {item.name}: {item.measured}")
            if not item.passed and item.hint:
                lines.append(f"        hint: {item.hint}")
        if self.passed:
            lines.append(f"lab {self.lab}: PASSED ({len(self.items)} of {len(self.items)} checks)")
        else:
            lines.append(
                f"lab {self.lab}: not passed yet ({len(self.failed)} of {len(self.items)} "
                "checks failed)"
            )
        return "\n".join(lines)

    def __repr__(self) -> str:
        state = "passed" if self.passed else f"{len(self.failed)} of {len(self.items)} failed"
        return f"LabResult(lab={self.lab!r}, {state})"


class _Stop(Exception):
    """A prerequisite failed (files, rollout): the items after it cannot be measured."""


# --- applying the learner's files ---------------------------------------------------------------


def apply_files(cluster: Cluster, paths: Iterable[Path]) -> list[str]:
    """Apply each file in order, replacing a Service whose clusterIP cannot change in place.

    `kubectl apply` refuses to turn a ClusterIP Service headless (or back): the field is
    immutable. Like `kubectl replace --force`, this deletes that file's Services and
    applies it again.
    """
    lines: list[str] = []
    for path in paths:
        try:
            lines += cluster.apply(path)
        except Exception as error:
            if "immutable" not in str(error):
                raise
            services = [o for o in load_objects(path) if o["kind"] == "Service"]
            if not services:
                raise
            cluster.delete(services)
            replaced = cluster.apply(path)
            lines += [line.replace(" created", " replaced") for line in replaced]
    return lines


@dataclass(frozen=True)
class Lab:
    """What a lab is made of: given manifests from cluster/, and files the learner edits."""

    number: str
    folder: str
    title: str
    given: tuple[Path, ...]  # applied first, never edited by the learner
    manifests: tuple[str, ...]  # the learner's manifests, by file name, in order
    run: Callable[[Cluster, Path, list[CheckItem]], None]
    deployments: tuple[str, ...] = (DEPLOYMENT,)
    controllers: tuple[str, ...] = ()  # add-ons the lab's objects need (install_addon names)


def _objects(path: Path) -> list[Mapping[str, Any]]:
    try:
        return load_objects(path)
    except Exception:
        return []


def _deployment_env(path: Path) -> dict[str, str]:
    """The first container's plain env values of the Deployment in `path` (for hints)."""
    for obj in _objects(path):
        if obj["kind"] == "Deployment":
            container = obj["spec"]["template"]["spec"]["containers"][0]
            return {e["name"]: str(e.get("value", "")) for e in container.get("env", [])}
    return {}


def _grace_period(path: Path) -> float:
    for obj in _objects(path):
        if obj["kind"] == "Deployment":
            return float(obj["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30))
    return 30.0


def _headless(path: Path, service: str) -> bool | None:
    for obj in _objects(path):
        if obj["kind"] == "Service" and obj["metadata"]["name"] == service:
            return obj["spec"].get("clusterIP") == "None"
    return None


def _client(files: Path, items: list[CheckItem]) -> ClientConfig:
    try:
        return read_client_config(files / CLIENT_FILE)
    except LabFilesError as error:
        items.append(CheckItem("client.yaml is valid", False, str(error), _FIX_FILE_HINT))
        raise _Stop from None


def _spec(config: ClientConfig, cluster: Cluster, items: list[CheckItem], **load) -> LoadSpec:
    try:
        return config.load_spec(cluster, **load)
    except (KeyError, ValueError) as error:
        items.append(
            CheckItem(
                "the client finds its Service",
                False,
                str(error).strip("'\""),
                f"client.yaml's service, port and via must name a Service that your files "
                f"(or the lab's) create, such as service: {config.service}",
            )
        )
        raise _Stop from None


def _after(result: LoadResult, since_s: float) -> dict[str, int]:
    """Calls per pod in the timeline buckets that start at `since_s` or later."""
    per_pod: dict[str, int] = {}
    for bucket in result.timeline:
        if bucket["t"] >= since_s:
            for pod, count in bucket["per_pod"].items():
                per_pod[pod] = per_pod.get(pod, 0) + count
    return per_pod


def _failed_calls(result: LoadResult) -> str:
    codes = ", ".join(f"{code} x{count}" for code, count in result.errors.items())
    return f"{result.failed} of {result.total} calls failed" + (f" ({codes})" if codes else "")


_FIX_FILE_HINT = "the message names the file, the object and the field to fix"


# --- lab 01: fix the imbalance -------------------------------------------------------------------


def _run_lab01(cluster: Cluster, files: Path, items: list[CheckItem]) -> None:
    config = _client(files, items)
    pods = [pod.name for pod in cluster.wait_ready(DEPLOYMENT)]
    spec = _spec(config, cluster, items, rpcs=None, duration_s=2)
    # Two runs, each on new connections: spreading connections at random can look even
    # once by luck; spreading calls is even every time.
    runs = [cluster.run_load(spec) for _ in range(2)]
    served = [checks.pods_that_served(run) for run in runs]
    ratios = [checks.max_min_ratio(_after(run, CONNECT_S), pods) for run in runs]
    headless = _headless(files / "service.yaml", config.service)
    single_address = config.via == "clusterip" or (config.via == "dns" and headless is False)
    if single_address:
        spread_hint = (
            "your client resolves one address, the Service's cluster IP, and kube-proxy "
            "picks a pod once per connection, not per call. Which kind of Service makes DNS "
            "answer with every ready pod instead?"
        )
    elif config.service_config is None and config.lb_policy in (None, "pick_first"):
        spread_hint = (
            "the client now gets every pod's address, but pick_first (the default) sends "
            "every call to the first one that works. Set a policy in client.yaml that "
            "spreads calls over all addresses."
        )
    else:
        spread_hint = "compare your files with the README's steps 2 and 3."
    items.append(
        CheckItem(
            "every pod served calls, in both runs",
            all(count == len(pods) for count in served),
            " and ".join(f"{count} of {len(pods)} pods" for count in served),
            spread_hint,
        )
    )
    if single_address and config.channels > 1:
        spread_hint = (
            "more channels spread connections, not calls: each connection lands on a pod "
            "at random, so the split changes from run to run. " + spread_hint
        )
    items.append(
        CheckItem(
            f"max/min calls per pod at most {MAX_RATIO}, in both runs (after {CONNECT_S:g} s)",
            all(ratio <= MAX_RATIO for ratio in ratios),
            " and ".join("inf (a pod got none)" if math.isinf(r) else f"{r:.2f}" for r in ratios),
            spread_hint,
        )
    )
    failed = sum(run.failed for run in runs)
    items.append(
        CheckItem(
            "no call failed",
            failed == 0,
            f"{failed} of {sum(run.total for run in runs)} calls failed",
            "look at the error codes with print(lab.run_load(spec).errors)",
        )
    )


# --- lab 02: new pods get traffic --------------------------------------------------------------


def _run_lab02(cluster: Cluster, files: Path, items: list[CheckItem]) -> None:
    config = _client(files, items)
    before = cluster.wait_ready(DEPLOYMENT)
    spec = _spec(config, cluster, items, rpcs=None, duration_s=15, concurrency=4)
    from grpclab.widgets import run_with_scale  # plotly and ipywidgets: only when needed

    try:
        scale = run_with_scale(cluster, spec, SCALE_TO, at_s=2, deployment=DEPLOYMENT)
    except TimeoutError as error:
        items.append(
            CheckItem(
                f"the scale-up to {SCALE_TO} replicas completes",
                False,
                str(error),
                "the new pods did not become Ready: print(lab.pods()) and lab.logs(pod) say why",
            )
        )
        raise _Stop from None
    finally:
        cluster.scale(DEPLOYMENT, len(before))  # back to the file's replicas
    left_s = scale.result.elapsed_s - scale.ready_at_s
    items.append(
        CheckItem(
            f"the new pods were Ready with {PICKUP_WITHIN_S:g} s of the run left",
            left_s >= PICKUP_WITHIN_S and len(scale.new_pods) == SCALE_TO - len(before),
            f"{len(scale.new_pods)} new pods Ready {scale.ready_at_s:.1f} s into a "
            f"{scale.result.elapsed_s:.0f} s run",
            "the pods took long to start: is the machine very busy? Run the check again.",
        )
    )
    pickups = {
        pod: checks.pickup_time(scale.result, [pod], since_s=scale.ready_at_s)
        for pod in scale.new_pods
    }
    env = _deployment_env(files / "deployment.yaml")
    cool_down = config.channel_options.get(
        "grpc.dns_min_time_between_resolutions_ms", DEFAULT_DNS_COOL_DOWN_MS
    )
    if "GRPC_MAX_CONNECTION_AGE_MS" not in env:
        hint = (
            "round_robin balances over the addresses it resolved, and the client resolves "
            "again only when a connection closes. Nothing closes them here: which server "
            "setting makes connections end after a while? (the demo server reads it from an "
            "environment variable; see the README)"
        )
    elif int(cool_down) > PICKUP_WITHIN_S * 1000:
        hint = (
            f"connections now close, but the client waits {int(cool_down) / 1000:g} s "
            "between two DNS lookups (grpc.dns_min_time_between_resolutions_ms, 30 s by "
            "default). Lower it in client.yaml's channel_options."
        )
    else:
        hint = (
            "a connection lives up to the server's maximum age before the client looks "
            f"again: choose an age that leaves room within {PICKUP_WITHIN_S:g} s."
        )
    late = {pod: t for pod, t in pickups.items() if t is None or t > PICKUP_WITHIN_S}
    items.append(
        CheckItem(
            f"every new pod served within {PICKUP_WITHIN_S:g} s of becoming Ready",
            not late,
            ", ".join(
                "never served" if t is None else f"served {t:.1f} s after Ready"
                for t in pickups.values()
            ),
            hint,
        )
    )
    items.append(
        CheckItem(
            "no call failed",
            scale.result.failed == 0,
            _failed_calls(scale.result),
            "calls fail when a connection closes under them: give calls in flight time to "
            "finish after the server's GOAWAY (GRPC_MAX_CONNECTION_AGE_GRACE_MS)",
        )
    )


# --- lab 03: survive a pod kill --------------------------------------------------------------


def _run_lab03(cluster: Cluster, files: Path, items: list[CheckItem]) -> None:
    config = _client(files, items)
    pods = [pod.name for pod in cluster.wait_ready(DEPLOYMENT)]
    victim = pods[0]
    spec = _spec(config, cluster, items, rpcs=None, duration_s=6, concurrency=8)
    kill_at_s = 2.0
    # Real handlers take time: with 50 ms per call, calls are in flight on the pod when it
    # goes, every time. (The demo's calls take well under a millisecond, so a kill could
    # miss them all by luck.)
    for pod in pods:
        cluster.set_fault(pod, added_latency_ms=SERVER_LATENCY_MS)
    try:
        result = during_load(cluster, spec, kill_at_s, lambda: cluster.delete_pod(victim))
    finally:
        for pod in cluster.pods({"app": DEPLOYMENT}):
            if pod.name != victim and pod.ready:
                cluster.set_fault(pod.name, added_latency_ms=0)
    env = _deployment_env(files / "deployment.yaml")
    no_drain = env.get("GRPCLAB_NO_DRAIN", "").strip().lower() in ("1", "true", "yes", "on")
    drain_s = float(env.get("GRPCLAB_DRAIN_DELAY_S", 1)) + float(
        env.get("GRPCLAB_DRAIN_GRACE_S", 5)
    )
    if no_drain:
        hint = (
            "on SIGTERM your server stops at once and cancels the calls it is serving. "
            "Which line of deployment.yaml makes it skip its drain?"
        )
    elif _grace_period(files / "deployment.yaml") < drain_s:
        hint = (
            "the kubelet sends SIGKILL after terminationGracePeriodSeconds, which is shorter "
            "than your server's drain (delay + grace): the kill cuts the drain short."
        )
    else:
        hint = (
            "the client keeps sending calls to the draining pod until its connection "
            "closes. A service_config with healthCheckConfig lets round_robin see the pod's "
            "NOT_SERVING at once (see the README)."
        )
    items.append(
        CheckItem(
            f"no call failed while pod {victim} was deleted",
            checks.lost_requests(result) == 0,
            _failed_calls(result),
            hint,
        )
    )
    after = [b for b in result.timeline if b["t"] >= kill_at_s + 1.0]
    served_after = sum(sum(b["per_pod"].values()) for b in after)
    items.append(
        CheckItem(
            "the other pods kept serving after the deletion",
            served_after > 0,
            f"{served_after} calls served from {kill_at_s + 1:g} s on",
            "no call was served after the deletion: look at the errors in the result",
        )
    )
    cluster.wait_ready(DEPLOYMENT)  # the replacement pod, so a second check starts from 3


# --- lab 04: a GRPCRoute to v2 ----------------------------------------------------------------

GATEWAY_HOST = "grpc.example.com"  # the Gateway's listener hostname (ingress/gateway.yaml)


def gateway_tls(cluster: Cluster) -> TlsBundle:
    """A fresh certificate for the Gateway's host, applied as the Secret grpc-tls it reads.

    Secrets hold private keys, so none is in the repository: like notebook 06, the lab
    makes one, as `kubectl create secret tls grpc-tls --cert=... --key=...` would.
    """
    from grpclab.certificates import issue_certificate

    tls = issue_certificate([GATEWAY_HOST])
    cluster.apply(tls.secret("grpc-tls"))
    return tls


def gateway_spec(cluster: Cluster, tls: TlsBundle, method: str, **load: Any) -> LoadSpec:
    """Calls of `method` through the Gateway, over TLS, to the host its route serves."""
    try:
        target = cluster.target(DEPLOYMENT, via="gateway")
    except ValueError:  # a route that names only v2 still reaches the same Gateway
        target = cluster.target(V2_DEPLOYMENT, via="gateway")
    return LoadSpec(
        target,
        method=method,
        tls_ca_file=str(tls.ca_file),
        tls_server_name=GATEWAY_HOST,
        **load,
    )


def _run_lab04(cluster: Cluster, files: Path, items: list[CheckItem]) -> None:
    v1 = {pod.name for pod in cluster.wait_ready(DEPLOYMENT)}
    v2 = {pod.name for pod in cluster.wait_ready(V2_DEPLOYMENT)}
    tls = gateway_tls(cluster)
    runs: dict[str, LoadResult] = {}
    try:
        for method in ("SayHello", "GetUser"):
            runs[method] = cluster.run_load(gateway_spec(cluster, tls, method, rpcs=300))
    except ValueError as error:
        items.append(
            CheckItem(
                "the route attaches to the Gateway grpc-gateway",
                False,
                str(error),
                "parentRefs must name grpc-gateway and hostnames must include "
                f"{GATEWAY_HOST} (or be left out)",
            )
        )
        raise _Stop from None
    wanted = {"SayHello": ("v1", v1, V2_DEPLOYMENT), "GetUser": ("v2", v2, DEPLOYMENT)}
    for method, (version, pods, other) in wanted.items():
        result = runs[method]
        elsewhere = sum(count for pod, count in result.per_pod.items() if pod not in pods)
        if result.failed:
            hint = (
                f"{method} calls failed ({', '.join(result.errors)}): a call that no rule "
                "matches gets UNIMPLEMENTED; does every method still have a rule with a "
                "backendRef to an existing Service and port?"
            )
        elif method == "GetUser":
            hint = (
                "GetUser still reaches version 1. Add a rule whose match names the service "
                "and the method, with a backendRef to the v2 Service."
            )
        else:
            hint = (
                "SayHello reaches version 2: a rule that matches the whole service sends every "
                "method there. Match GetUser by its method name alone."
            )
        items.append(
            CheckItem(
                f"{method} is served by {version} only ({len(pods)} pods), with no failure",
                result.failed == 0 and elsewhere == 0 and result.ok > 0,
                f"{result.ok - elsewhere} of {result.total} calls on {version}, "
                f"{elsewhere} on {other}, {result.failed} failed",
                hint,
            )
        )


# --- the registry ----------------------------------------------------------------------------

_BASE = MANIFESTS / "base"
LABS: dict[str, Lab] = {
    lab.number: lab
    for lab in (
        Lab(
            "01",
            "01-fix-the-imbalance",
            "fix the imbalance",
            (
                _BASE / "00-namespace.yaml",
                _BASE / "deployment.yaml",
                _BASE / "service-clusterip.yaml",
            ),
            ("service.yaml",),
            _run_lab01,
        ),
        Lab(
            "02",
            "02-new-pods-get-traffic",
            "new pods get traffic",
            (_BASE / "00-namespace.yaml", MANIFESTS / "headless" / "service-headless.yaml"),
            ("deployment.yaml",),
            _run_lab02,
        ),
        Lab(
            "03",
            "03-survive-a-pod-kill",
            "survive a pod kill",
            (_BASE / "00-namespace.yaml", MANIFESTS / "headless" / "service-headless.yaml"),
            ("deployment.yaml",),
            _run_lab03,
        ),
        Lab(
            "04",
            "04-grpcroute-v2",
            "route GetUser to v2 with a GRPCRoute",
            (
                _BASE / "00-namespace.yaml",
                _BASE / "deployment.yaml",
                _BASE / "service-clusterip.yaml",
                MANIFESTS / "ingress" / "deployment-v2.yaml",
                MANIFESTS / "ingress" / "service-v2.yaml",
                MANIFESTS / "ingress" / "gateway.yaml",
            ),
            ("grpcroute.yaml",),
            _run_lab04,
            deployments=(DEPLOYMENT, V2_DEPLOYMENT),
            controllers=("envoy-gateway",),
        ),
    )
}


def lab_info(lab: str | int) -> Lab:
    """The lab numbered `lab` ("01", "1", 1 or its folder name)."""
    key = str(lab).split("-")[0].zfill(2)
    if key not in LABS:
        raise KeyError(f"no lab {lab!r}; the labs are {', '.join(LABS)}")
    return LABS[key]


def start_lab(lab: str | int, lab_dir: str | Path, cluster: Cluster) -> list[str]:
    """Copy starter/ to work/ (unless work/ exists), apply the lab's files, wait for its pods."""
    info = lab_info(lab)
    lab_dir = Path(lab_dir)
    work = lab_dir / "work"
    lines = []
    if work.exists():
        lines.append(f"{work}: kept (your edits; delete the folder to start over)")
    else:
        shutil.copytree(lab_dir / "starter", work)
        lines.append(f"{work}: copied from starter/ (edit these files)")
    lines += apply_lab_files(info.number, lab_dir, cluster)
    for deployment in info.deployments:
        ready = cluster.wait_ready(deployment)
        lines.append(f"deployment/{deployment}: {len(ready)} pods ready")
    return lines


def apply_lab_files(
    lab: str | int, lab_dir: str | Path, cluster: Cluster, files: str = "work"
) -> list[str]:
    """Apply the lab's given manifests, then the learner's from `lab_dir/files`."""
    from grpclab.cluster.controllers import install_addon

    info = lab_info(lab)
    folder = Path(lab_dir) / files
    lines = [install_addon(cluster, name) for name in info.controllers]
    return lines + apply_files(cluster, [*info.given, *(folder / name for name in info.manifests)])


def _grade(info: Lab, cluster: Cluster, lab_dir: Path, files: str, items: list[CheckItem]) -> None:
    try:
        lines = apply_lab_files(info.number, lab_dir, cluster, files)
    except Exception as error:
        items.append(CheckItem("your files apply", False, str(error), _FIX_FILE_HINT))
        raise _Stop from None
    changed = [line for line in lines if line.endswith((" created", " configured", " replaced"))]
    items.append(CheckItem("your files apply", True, "; ".join(changed) or "nothing changed"))
    try:
        for deployment in info.deployments:
            cluster.wait_ready(deployment, timeout=90)
    except TimeoutError as error:
        items.append(
            CheckItem(
                "the rollout completes",
                False,
                str(error).splitlines()[0],
                "a pod never became Ready; print(lab.pods()) and lab.logs(pod) say why",
            )
        )
        raise _Stop from None
    info.run(cluster, lab_dir / files, items)


def check_lab(
    lab: str | int, lab_dir: str | Path, cluster: Cluster, files: str = "work", quiet: bool = False
) -> LabResult:
    """Replay `lab_dir/files` (the learner's work/ by default) on `cluster` and grade it.

    Prints one line per check, with a hint under each failure, unless `quiet`.
    """
    info = lab_info(lab)
    folder = Path(lab_dir) / files
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder} does not exist: run the lab notebook's first cell, which makes work/"
        )
    result = LabResult(info.number, info.title)
    try:
        _grade(info, cluster, Path(lab_dir), files, result.items)
    except _Stop:
        pass
    except Exception as error:  # the cluster's or the check's trouble, not the learner's files
        result.items.append(
            CheckItem(
                "the check ran to the end",
                False,
                f"{type(error).__name__}: {error}",
                "this is not about your files: run the check again; if it happens again, "
                "restart the kernel and run the notebook from the top",
            )
        )
    if not quiet:
        print(result.report())
    return result
