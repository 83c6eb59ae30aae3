"""Every fix the cluster supports, measured side by side in one run (notebook 10 and bench/).

`prepare` sets up each solution (a target and how to call it) and skips, with the reason,
the ones this cluster cannot offer. `measure` then runs four phases on all of them:
steady load in interleaved rounds (evenness, latency against a direct call to one pod),
a scale-up and a pod crash with every client running at once, and the proxies' memory.
`measure_max_age` adds the headless client with a server maximum connection age.

Everything goes through the `Cluster` interface. What a backend runs in place of a real
component (`Cluster.component(...).stand_in`) marks that row as emulated, and an emulated
row is never ranked against real ones on memory or latency; what a backend does not
measure says so ("not measured on this backend").
"""

from __future__ import annotations

import html
import math
import statistics
import textwrap
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from grpclab.cluster import NOT_MEASURED, Cluster
from grpclab.cluster.manifests import load_objects
from grpclab.load import LoadResult, LoadSpec, drills
from grpclab.measure import checks
from grpclab.notes import say
from grpclab.side_by_side import SideBySideRun, run_side_by_side

DEPLOYMENT = "grpc-server"
SERVICE = "grpc-server"
HEADLESS = "grpc-server-headless"
TLS_HOST = "grpc.example.com"  # the host the Ingress and the Gateway manifests serve
TLS_SECRET = "grpc-tls"
DIRECT = "direct"
# Thresholds of the stable summary: wide enough for a busy 2-core machine.
EVEN_MAX_MIN = 1.5
PICKUP_WITHIN_S = 10.0
# Calls started per second (LoadSpec.rate). A latency run at one call in flight, paced, never
# queues on the machine's CPU; an unpaced one measures how fast the laptop turns calls round.
LATENCY_RATE = 200.0
# A spread run's calls, paced. Unpaced, 600 calls took 0.6-2.8 s of a saturated CPU: a pod
# process that lost its core for some tens of ms piled up calls in flight, and a
# least-request proxy rightly sent it less (Istio's sidecar came out at 1.57 busiest/idlest
# under load). Paced, the run leaves the pods their CPU and a stall is a short part of it.
SPREAD_RATE = 300.0
# Each spread call lasts this long on the server (its fault knob): 300/s x 0.02 s is 6 calls
# in flight, two per pod, so a least-request balancer compares real counts. With ~1 ms calls
# almost every pod has none in flight, its picks are random, and 200 calls came out at up to
# 1.62 busiest/idlest (random picks over 3 pods need about 600 calls for a median of 3 runs
# to stay far below EVEN_MAX_MIN); with 20 ms, 150 calls came out at 1.00-1.39 in single runs.
SPREAD_CALL_MS = 20
SPREAD_RPCS = 150
# A latency run: 120 calls at LATENCY_RATE, enough for a p99 per run (the 119th of 120; from
# 100 calls on, the p99 is not the slowest call); the median of three rounds leaves out a
# run that met a burst of load from elsewhere on the machine.
LATENCY_S = 0.6
Out = Callable[[str], None]


@dataclass(frozen=True)
class Solution:
    """One way to reach the Service, and where a pod is picked for each call."""

    key: str
    name: str
    balancer: str  # where a pod is picked, in a few words
    proxy: str | None = None  # the component in the calls' path (Cluster.component), if any
    addon: str | None = None  # what install_addon must bring up first


SOLUTIONS = (
    Solution("l4", "ClusterIP (L4)", "kube-proxy, per connection", proxy="kube-proxy"),
    Solution("round_robin", "headless + round_robin", "client, per call"),
    Solution("mesh", "Istio sidecar", "sidecar, per call", proxy="istio", addon="istio"),
    Solution("linkerd", "Linkerd proxy", "client's proxy, per call", "linkerd", "linkerd"),
    Solution("xds", "proxyless xDS", "client (xDS), per call", addon="istio"),
    Solution("ingress", "NGINX Ingress", "nginx, per call", "ingress-nginx", "ingress-nginx"),
    Solution("gateway", "Envoy Gateway", "gateway, per call", "envoy-gateway", "envoy-gateway"),
)
MAX_AGE = Solution("max_age", "headless + rr + max age", "client, per call")
# The demo server's gRPC port (containerPort in cluster/manifests/base/deployment.yaml).
GRPC_PORT = 50051
NO_PROXY = "no proxy"
# A pod template opts out of both meshes: the namespace asks for both (the clients' proxies),
# and a server that came back from a scale-up or rollout with sidecars would put a second
# proxy, or two, in every measured path. The Istio label and the Linkerd annotation are the
# per-pod overrides that each project documents for its injector.
UNMESHED_LABELS = {"sidecar.istio.io/inject": "false"}
UNMESHED_ANNOTATIONS = {"linkerd.io/inject": "disabled"}


@dataclass
class Lineup:
    """The prepared solutions of one cluster: each one's load spec, and the skipped ones."""

    lab: Cluster
    specs: dict[str, LoadSpec]  # solution key (and "direct") -> spec template
    skipped: dict[str, str]  # solution key -> why
    pods: list[str]
    manifests: Path
    stand_ins: dict[str, str] = field(default_factory=dict)  # key -> what plays it here

    def solutions(self) -> list[Solution]:
        return [s for s in SOLUTIONS if s.key in self.specs]


@dataclass
class Row:
    """What was measured for one solution; None where a phase did not measure it."""

    solution: Solution
    max_min: float | None = None
    cv: float | None = None  # stddev / mean of calls per pod
    pods_served: int | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    p50_over_ms: float | None = None  # against the direct call of the same round
    p99_over_ms: float | None = None
    pickup_s: float | None = None  # new pod ready -> its first call; None: never
    pickup_window_s: float | None = None  # how long after ready the run went on
    crash_failed: int | None = None
    crash_total: int | None = None
    served_after_crash: bool | None = None
    rss_mb: float | None = None
    rss_note: str = ""
    stand_in: str = ""  # what plays the real component on this backend; "" when it is real
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def emulated(self) -> bool:
        return bool(self.stand_in)


@dataclass
class Comparison:
    """The rows, in table order, and what was skipped."""

    rows: dict[str, Row]
    skipped: dict[str, str]
    direct: dict[str, float] = field(default_factory=dict)  # the baseline's p50, p99

    def table(self) -> str:
        """The measured numbers as a plain text table (they change from run to run)."""
        return format_table(self)

    def summary(self) -> str:
        """Rounded statements that stay the same from run to run (nbval checks them)."""
        return stable_summary(self)

    def lessons(self) -> list[str]:
        """The notebook's claims checked on these rows; AssertionError if one does not hold."""
        return check_lessons(self)

    def memory(self) -> list[str]:
        """Each proxy's memory, stand-ins apart from real components, or why there is none."""
        return memory_lines(self)

    def ranking(self) -> Ranking:
        """The chart that ranks the solutions on evenness and pickup (emulated ones marked)."""
        return Ranking(self)

    def _repr_html_(self) -> str:
        return format_html(self)

    def __repr__(self) -> str:
        return f"Comparison({len(self.rows)} rows, {len(self.skipped)} skipped)"


def unmeshed(source: Path) -> list[dict[str, Any]]:
    """The objects in `source`, with every Deployment's pods opted out of both meshes."""
    objects = load_objects(source)
    for obj in objects:
        if obj.get("kind") == "Deployment":
            metadata = obj["spec"]["template"].setdefault("metadata", {})
            metadata["labels"] = {**(metadata.get("labels") or {}), **UNMESHED_LABELS}
            annotations = metadata.get("annotations") or {}
            metadata["annotations"] = {**annotations, **UNMESHED_ANNOTATIONS}
    return objects


def prepare(
    lab: Cluster,
    manifests: Path,
    only: Iterable[str] | None = None,
    out: Out = say,
) -> Lineup:
    """Apply the base Deployment and Services, then set up each solution this cluster supports.

    The server pods opt out of both meshes (`unmeshed`). Each solution's add-on is installed
    through `install_addon` (once). A solution whose set-up fails (its add-on cannot be
    installed, the backend lacks its `via`) is skipped, and the reason is printed. A
    solution whose component runs here as a stand-in says what stands in.
    """
    from grpclab.cluster.controllers import install_addon
    from grpclab.tls import issue_certificate

    wanted = [s for s in SOLUTIONS if only is None or s.key in set(only)]
    unknown = set(only or ()) - {s.key for s in SOLUTIONS}
    if unknown:
        known = ", ".join(s.key for s in SOLUTIONS)
        raise ValueError(f"compare.prepare: unknown solution(s) {sorted(unknown)}; known: {known}")
    lab.apply(unmeshed(manifests / "base"))
    lab.apply(manifests / "headless" / "service-headless.yaml")
    lab.apply(manifests / "compare" / "namespace.yaml")  # after base's plain namespace
    pods = lab.wait_ready(DEPLOYMENT)
    specs: dict[str, LoadSpec] = {DIRECT: LoadSpec(f"{pods[0].ip}:{GRPC_PORT}")}
    skipped: dict[str, str] = {}
    stand_ins: dict[str, str] = {}
    bundle: list[Any] = []
    installed: set[str] = set()

    def client_tls() -> dict[str, str]:
        """What the client trusts; the first call issues the certificate and stores its Secret."""
        if not bundle:
            bundle.append(issue_certificate([TLS_HOST]))
            lab.apply(bundle[0].secret(TLS_SECRET))
        return {"tls_ca_file": str(bundle[0].ca_file), "tls_server_name": TLS_HOST}

    def setup(solution: Solution) -> LoadSpec:
        key = solution.key
        if solution.addon and solution.addon not in installed:
            install_addon(lab, solution.addon)
            installed.add(solution.addon)
        if key == "l4":
            return LoadSpec(lab.target(SERVICE, via="dns"))
        if key == "round_robin":
            return LoadSpec(lab.target(HEADLESS, via="dns"), lb_policy="round_robin")
        if key in ("mesh", "xds", "linkerd"):
            return LoadSpec(lab.target(SERVICE, via=key))
        if key == "ingress":
            tls = client_tls()  # the Secret first: the Ingress names it
            lab.apply(manifests / "ingress" / "ingress-nginx.yaml")
            return LoadSpec(lab.target(SERVICE, via="ingress"), **tls)
        if key == "gateway":
            tls = client_tls()
            lab.apply(manifests / "ingress" / "gateway.yaml")
            lab.apply(manifests / "ingress" / "grpcroute.yaml")
            return LoadSpec(lab.target(SERVICE, via="gateway"), **tls)
        raise AssertionError(key)

    for solution in wanted:
        try:
            specs[solution.key] = setup(solution)
        except Exception as error:  # this cluster cannot offer it: say why and go on
            skipped[solution.key] = f"{type(error).__name__}: {error}".splitlines()[0]
            out(f"{solution.name}: skipped ({skipped[solution.key]})")
            continue
        stand_in = lab.component(solution.proxy).stand_in if solution.proxy else ""
        if stand_in:
            stand_ins[solution.key] = stand_in
        note = f" (EMULATED here by {stand_in})" if stand_in else ""
        out(f"{solution.name}: ready{note}")
    return Lineup(lab, specs, skipped, [p.name for p in pods], manifests, stand_ins)


def run_spec(template: LoadSpec, **fields: Any) -> LoadSpec:
    """A copy of a solution's spec with the run's own bounds (duration, concurrency...)."""
    return replace(template, rpcs=None, **fields)


def measure_steady(
    lineup: Lineup,
    rounds: int = 3,
    latency_s: float = LATENCY_S,
    spread_rpcs: int = SPREAD_RPCS,
    spread_concurrency: int = 8,
    out: Out = say,
    latency_rate: float = LATENCY_RATE,
    spread_rate: float = SPREAD_RATE,
    spread_call_ms: int = SPREAD_CALL_MS,
) -> tuple[dict[str, Row], dict[str, float]]:
    """Latency and evenness, one solution at a time, in interleaved rounds.

    Latency runs keep one call in flight, `latency_rate` started per second, so that neither
    a pod nor the machine's CPU queues calls and the difference to the direct call is the
    path's own cost. Spread runs start `spread_rate` calls per second with up to
    `spread_concurrency` in flight, each made to last `spread_call_ms` on the server
    (least-request balancers compare calls in flight). Each round runs every solution once,
    the order turned by one each round and reversed every other round, so that drifting
    machine load hits all alike. Each run opens its own channel, and evenness
    is per run: an L4 channel sticks to one pod, whichever it is.
    """
    latency, spread = interleaved_rounds(
        lineup,
        rounds,
        latency_s,
        spread_rpcs,
        spread_concurrency,
        out,
        latency_rate,
        spread_rate,
        spread_call_ms,
    )
    direct = latency[DIRECT]
    baseline = {key: statistics.median(_latency(r, key) for r in direct) for key in ("p50", "p99")}
    rows = {}
    for solution in lineup.solutions():
        timed, spread_runs = latency[solution.key], spread[solution.key]
        pairs = list(zip(timed, direct, strict=True))  # the same round's direct run
        rows[solution.key] = Row(
            solution,
            max_min=statistics.median(checks.max_min_ratio(r, lineup.pods) for r in spread_runs),
            cv=statistics.median(checks.evenness(r, lineup.pods) for r in spread_runs),
            pods_served=min(checks.pods_that_served(r) for r in spread_runs),
            p50_ms=statistics.median(_latency(r, "p50") for r in timed),
            p99_ms=statistics.median(_latency(r, "p99") for r in timed),
            p50_over_ms=statistics.median(
                _latency(r, "p50") - _latency(d, "p50") for r, d in pairs
            ),
            p99_over_ms=statistics.median(
                _latency(r, "p99") - _latency(d, "p99") for r, d in pairs
            ),
            stand_in=lineup.stand_ins.get(solution.key, ""),
            extra={"steady_failed": sum(r.failed for r in (*timed, *spread_runs))},
        )
    return rows, baseline


def interleaved_rounds(
    lineup: Lineup,
    rounds: int,
    latency_s: float,
    spread_rpcs: int = 0,
    spread_concurrency: int = 8,
    out: Out = say,
    latency_rate: float | None = LATENCY_RATE,
    spread_rate: float | None = SPREAD_RATE,
    spread_call_ms: int = 0,
) -> tuple[dict[str, list[LoadResult]], dict[str, list[LoadResult]]]:
    """Per solution (and "direct"), one latency run per round, and a spread run unless
    `spread_rpcs` is 0; the order turns by one each round and reverses every other round.
    The rates are calls started per second (None: unpaced). A round's latency runs come
    first; then every pod's calls are made to last `spread_call_ms` for its spread runs,
    and are quick again before the next round's latency runs (and after the last)."""
    lab = lineup.lab
    keys = [DIRECT, *(s.key for s in lineup.solutions())]
    latency: dict[str, list[LoadResult]] = {key: [] for key in keys}
    spread: dict[str, list[LoadResult]] = {key: [] for key in keys}
    for number in range(rounds):
        order = keys[number % len(keys) :] + keys[: number % len(keys)]
        order = order[::-1] if number % 2 else order
        for key in order:
            spec = run_spec(
                lineup.specs[key], duration_s=latency_s, concurrency=1, rate=latency_rate
            )
            latency[key].append(lab.run_load(spec))
        if spread_rpcs:
            with drills.calls_take(lab, lineup.pods, spread_call_ms):
                for key in (key for key in order if key != DIRECT):
                    spread_spec = replace(
                        lineup.specs[key],
                        rpcs=spread_rpcs,
                        concurrency=spread_concurrency,
                        rate=spread_rate,
                    )
                    spread[key].append(lab.run_load(spread_spec))
        out(f"steady load: round {number + 1} of {rounds} done")
    return latency, spread


def _latency(result: LoadResult, key: str) -> float:
    return result.latency_ms.get(key, math.nan)


@dataclass(frozen=True)
class AllAtOnce:
    """Every solution's client at once for `seconds`, each with up to `concurrency` calls in
    flight and `rate` calls started per second (per client), and an event `at_s` seconds in
    (a scale-up, a crash)."""

    seconds: float
    at_s: float
    concurrency: int = 1
    rate: float | None = None

    def run(
        self, lineup: Lineup, event: Callable[[Mapping[str, LoadResult]], Any]
    ) -> SideBySideRun:
        """Run them, calling `event` with each client's result so far."""
        loads = {
            s.key: run_spec(
                lineup.specs[s.key],
                duration_s=self.seconds,
                concurrency=self.concurrency,
                rate=self.rate,
                interval_s=0.1,
            )
            for s in lineup.solutions()
        }
        return run_side_by_side(lineup.lab, loads, self.at_s, event)


# 5 calls per second per client: once a per-call balancer knows the new pod of four, its
# first call there comes within 4 calls (0.8 s) round robin, or after 4 on average for a
# least-request pick with nothing in flight, which is random (50 calls, 10 s, all miss it
# 0.75^50 = 6e-7 of the time): far inside PICKUP_WITHIN_S. Seven clients together leave the
# CPU to the pods and the scale-up. 18 s: the new pod is ready 3-5 s in on a busy machine,
# and "never" must mean never in more than PICKUP_WITHIN_S.
SCALE_UP = AllAtOnce(18.0, at_s=1.0, rate=5.0)
# 20 calls per second of 150 ms each (measure_crash's call_ms): 3 in flight per client,
# about one on every pod.
CRASH = AllAtOnce(5.0, at_s=1.5, concurrency=6, rate=20.0)


def measure_scale_up(
    lineup: Lineup, rows: Mapping[str, Row], drive: AllAtOnce = SCALE_UP, out: Out = say
) -> None:
    """Every client at once while the Deployment goes from its pods to one more; fills pickup."""
    lab = lineup.lab
    before = {p.name for p in lab.wait_ready(DEPLOYMENT)}

    def scale_up(_: Mapping[str, LoadResult]) -> list[str]:
        lab.scale(DEPLOYMENT, len(before) + 1)
        return [p.name for p in lab.wait_ready(DEPLOYMENT)]

    run = drive.run(lineup, scale_up)
    new_pods = sorted(set(run.outcome) - before)
    for key, result in run.results.items():
        ready_at = run.event_done_s[key]
        rows[key].pickup_s = checks.pickup_time(result, new_pods, since_s=ready_at)
        rows[key].pickup_window_s = result.elapsed_s - ready_at
    out(f"scale-up: {len(before)} -> {len(before) + 1} pods, new pod {', '.join(new_pods)}")
    lab.scale(DEPLOYMENT, len(before))
    lab.wait_ready(DEPLOYMENT)


def measure_crash(
    lineup: Lineup,
    rows: Mapping[str, Row],
    drive: AllAtOnce = CRASH,
    call_ms: int = 150,
    out: Out = say,
) -> str:
    """Every client at once; one pod is killed mid-load. Fills failed calls; returns the pod.

    Each call is made to last `call_ms` so that every client has calls in flight on every
    pod. The pod killed is the one the L4 client's connection is pinned to (so every client
    has calls on it). The kill is a crash (`Cluster.crash_pod`): no drain at all.
    """
    lab = lineup.lab
    pods = [p.name for p in lab.wait_ready(DEPLOYMENT)]
    for pod in pods:
        lab.set_fault(pod, added_latency_ms=call_ms)

    def kill(snapshots: Mapping[str, LoadResult]) -> str:
        pinned = snapshots.get("l4")
        victim = (
            max(pinned.per_pod, key=pinned.per_pod.get) if pinned and pinned.per_pod else pods[0]
        )
        lab.crash_pod(victim)
        return victim

    try:
        run = drive.run(lineup, kill)
    finally:
        for pod in lab.wait_ready(DEPLOYMENT, timeout=90):
            lab.set_fault(pod.name)  # a crashed pod comes back without it; the others keep it
    for key, result in run.results.items():
        after = run.event_done_s[key] + 0.5  # past the calls that were in flight at the kill
        row = rows[key]
        row.crash_failed, row.crash_total = result.failed, result.total
        row.served_after_crash = result.between(after).ok > 0
        failing = result.failing_s()
        row.extra["crash_errors"] = dict(result.errors)
        # How long calls kept failing: the first to the end of the last interval with a failure.
        row.extra["crash_failing_s"] = failing[1] - failing[0] if failing else 0.0
    out(f"pod crashed mid-load: {run.outcome} (no drain)")
    return run.outcome


def measure_memory(lineup: Lineup, rows: Mapping[str, Row]) -> None:
    """Each proxy's resident memory now, as the cluster reports it (`Cluster.component`).

    A solution without a proxy says so; a backend that does not measure memory says
    "not measured on this backend" rather than guessing.
    """
    solutions = {s.key: s for s in (*SOLUTIONS, MAX_AGE)}
    for key, row in rows.items():
        proxy = solutions[key].proxy
        if proxy is None:
            row.rss_mb, row.rss_note = None, NO_PROXY
            continue
        component = lineup.lab.component(proxy)
        row.rss_mb, row.rss_note = component.memory_mb, component.memory_note
        row.stand_in = component.stand_in


def measure_max_age(
    lineup: Lineup,
    rows: dict[str, Row],
    seconds: float = 14.0,
    at_s: float = 1.0,
    out: Out = say,
) -> None:
    """The headless client again, on pods with a 5 s maximum connection age: pickup after a
    scale-up. It replaces every pod (the Deployment's template changes); run it last."""
    from grpclab.widgets import run_with_scale

    if "round_robin" not in lineup.specs:
        lineup.skipped[MAX_AGE.key] = "headless + round_robin is not available"
        out(f"{MAX_AGE.name}: skipped ({lineup.skipped[MAX_AGE.key]})")
        return
    lab = lineup.lab
    lab.apply(unmeshed(lineup.manifests / "headless" / "deployment-max-connection-age.yaml"))
    before = lab.wait_ready(DEPLOYMENT, timeout=90)
    spec = run_spec(
        lineup.specs["round_robin"],
        duration_s=seconds,
        concurrency=2,
        rate=10.0,
        interval_s=0.1,
        # The server's age (5 s here) is far below the client's 30 s DNS cool-down default.
        channel_options={"grpc.dns_min_time_between_resolutions_ms": 1000},
    )
    run = run_with_scale(lab, spec, replicas=len(before) + 1, at_s=at_s)
    rows[MAX_AGE.key] = Row(
        MAX_AGE,
        pickup_s=run.pickup_s(),
        pickup_window_s=run.result.elapsed_s - run.ready_at_s,
        rss_note=NO_PROXY,
        extra={"max_age_failed": run.result.failed, "max_age_total": run.result.total},
    )
    out(f"max connection age: scaled at {run.scaled_at_s:.1f} s, ready at {run.ready_at_s:.1f} s")


def measure(
    lineup: Lineup, max_age: bool = True, steady_rounds: int = 3, out: Out = say
) -> Comparison:
    """All phases, in the order that keeps them apart: steady, scale-up, crash, memory, age."""
    rows, baseline = measure_steady(lineup, rounds=steady_rounds, out=out)
    measure_scale_up(lineup, rows, out=out)
    measure_crash(lineup, rows, out=out)
    measure_memory(lineup, rows)
    if max_age:
        measure_max_age(lineup, rows, out=out)
    return Comparison(rows, dict(lineup.skipped), baseline)


# -- the table, the chart, the stable summary and the lessons -----------------------------


def evenness_word(row: Row) -> str:
    """'one pod', 'even' or 'uneven' from the median run's max/min."""
    if row.pods_served == 1:
        return "one pod"
    if row.max_min is None:
        return "-"
    return "even" if row.max_min <= EVEN_MAX_MIN else "uneven"


def pickup_words(row: Row) -> str:
    if row.pickup_window_s is None:
        return "-"
    if row.pickup_s is None:
        return f"never in {row.pickup_window_s:.0f} s"
    # The timeline's resolution: 0 means in the same bucket as the pod became ready.
    return "< 0.1 s" if row.pickup_s < 0.1 else f"{row.pickup_s:.1f} s"


def _number(value: float | None, digits: int = 1, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if math.isinf(value):
        return "inf"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


# A number measured on a stand-in: it says nothing about the real component.
STAND_IN_MARK = "†"
STAND_IN_NOTE = (
    f"{STAND_IN_MARK} measured on the stand-in that runs here in place of the real component "
    "(EMULATED row): not comparable with real components on latency or memory, never ranked"
)
COLUMNS = (
    ("solution", "<"),
    ("picks a pod", "<"),
    ("max/min", ">"),
    ("sd/mean", ">"),
    ("p50 ms (vs direct)", ">"),
    ("p99 ms (vs direct)", ">"),
    ("new pod served", ">"),
    ("failed at kill", ">"),
    ("proxy MB", ">"),
)


def solution_cell(row: Row) -> str:
    return f"{row.solution.name} [EMULATED: {row.stand_in}]" if row.emulated else row.solution.name


def memory_cell(row: Row, unit: str = "") -> str:
    """The proxy's memory, what it covers, or why there is no number."""
    if row.rss_mb is None:
        return row.rss_note or "-"
    mark = STAND_IN_MARK if row.emulated else ""
    return f"{row.rss_mb:.1f}{unit}{mark}" + (f" ({row.rss_note})" if row.rss_note else "")


def latency_cell(row: Row, key: str) -> str:
    value, over = getattr(row, f"{key}_ms"), getattr(row, f"{key}_over_ms")
    if value is None:
        return "-"
    mark = STAND_IN_MARK if row.emulated else ""
    return f"{_number(value, 2)} ({_number(over, 2, signed=True)}){mark}"


def table_rows(comparison: Comparison) -> list[list[str]]:
    """One list of cell texts per row, in COLUMNS order."""
    lines = []
    for row in comparison.rows.values():
        crash = "-" if row.crash_failed is None else f"{row.crash_failed} of {row.crash_total}"
        lines.append(
            [
                solution_cell(row),
                row.solution.balancer,
                _number(row.max_min, 2),
                _number(row.cv, 2),
                latency_cell(row, "p50"),
                latency_cell(row, "p99"),
                pickup_words(row),
                crash,
                memory_cell(row),
            ]
        )
    return lines


def footnotes(comparison: Comparison) -> list[str]:
    """The lines under the table: the baseline, the stand-in mark, what was skipped."""
    lines = []
    if comparison.direct:
        lines.append(
            f"direct call to one pod (the baseline): p50 {comparison.direct['p50']:.2f} ms, "
            f"p99 {comparison.direct['p99']:.2f} ms"
        )
    if any(row.emulated for row in comparison.rows.values()):
        lines.append(STAND_IN_NOTE)
    for key, reason in comparison.skipped.items():
        lines.append(f"skipped: {_name(key)}: {reason}")
    return lines


def _name(key: str) -> str:
    return next((s.name for s in (*SOLUTIONS, MAX_AGE) if s.key == key), key)


def format_table(comparison: Comparison) -> str:
    header = [name for name, _ in COLUMNS]
    body = table_rows(comparison)
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def render(cells: list[str]) -> str:
        return "  ".join(
            f"{cell:{align}{width}}"
            for cell, (_, align), width in zip(cells, COLUMNS, widths, strict=True)
        ).rstrip()

    lines = [render(header), render(["-" * w for w in widths]), *map(render, body)]
    return "\n".join([*lines, *footnotes(comparison)])


# Cell texts that may wrap at their spaces (the others never wrap); no cell breaks mid-word.
_WRAPPING = {0, 1, 8}


def format_html(comparison: Comparison) -> str:
    """The table as HTML that fits a notebook's width: headers and long cells wrap at spaces
    only, numbers never wrap, and an emulated row says so under its name."""
    cell_style = "padding:0.25em 0.5em;"
    header = "".join(
        f'<th style="{cell_style}text-align:{"left" if align == "<" else "right"};'
        f'white-space:normal;word-break:normal">{html.escape(name)}</th>'
        for name, align in COLUMNS
    )
    body = []
    for row, cells in zip(comparison.rows.values(), table_rows(comparison), strict=True):
        cells = list(cells)
        cells[0] = html.escape(row.solution.name)
        if row.emulated:
            cells[0] += (
                '<br><span style="font-size:85%;font-weight:bold;color:#b45309">'
                f"EMULATED here: {html.escape(row.stand_in)}</span>"
            )
        tds = []
        for index, (text, (_, align)) in enumerate(zip(cells, COLUMNS, strict=True)):
            wrap = "normal" if index in _WRAPPING else "nowrap"
            content = text if index == 0 else html.escape(text)
            tds.append(
                f'<td style="{cell_style}text-align:{"left" if align == "<" else "right"};'
                f'white-space:{wrap};word-break:normal">{content}</td>'
            )
        body.append("<tr>" + "".join(tds) + "</tr>")
    notes = "".join(
        f'<div style="font-size:90%;margin-top:0.2em">{html.escape(line)}</div>'
        for line in footnotes(comparison)
    )
    return (
        '<div style="max-width:100%;overflow-x:auto">'
        f'<table style="table-layout:auto;margin:0;font-size:12px"><thead><tr>{header}</tr>'
        f"</thead><tbody>{''.join(body)}</tbody></table>{notes}</div>"
    )


def stable_summary(comparison: Comparison) -> str:
    """Statements that hold run after run on a noisy machine, and mean the same on every
    backend: classes of behaviour and thresholds met, one line per solution ("-" where a
    phase did not measure it). Latency and memory are not here: they move with the
    machine's load, and a stand-in's say nothing about the real component.
    """
    rows = list(comparison.rows.values())

    def yes(condition: bool) -> str:
        return "yes" if condition else "no"

    columns = [
        ("solution", lambda r: r.solution.name),
        ("calls spread", lambda r: evenness_word(r) if r.max_min is not None else "-"),
        (
            f"new pod served within {PICKUP_WITHIN_S:g} s",
            lambda r: (
                "-"
                if r.pickup_window_s is None
                else yes(r.pickup_s is not None and r.pickup_s <= PICKUP_WITHIN_S)
            ),
        ),
        # Whether a kill loses the calls in flight is a race (which pod the calls were on,
        # how fast the endpoint goes), so it is in the measured table, not in this summary.
        (
            "serving after kill",
            lambda r: "-" if r.crash_failed is None else yes(bool(r.served_after_crash)),
        ),
    ]
    cells = [[name for name, _ in columns]] + [[cell(r) for _, cell in columns] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = [
        "  ".join(f"{c:<{w}}" for c, w in zip(line, widths, strict=True)).rstrip() for line in cells
    ]
    steady_failures = [r.solution.name for r in rows if r.extra.get("steady_failed")]
    lines.append(f"failed calls under steady load: {', '.join(steady_failures) or 'none'}")
    for key in comparison.skipped:
        lines.append(f"skipped: {_name(key)}")
    return "\n".join(lines)


def memory_lines(comparison: Comparison) -> list[str]:
    """Each proxy's memory, real components ranked apart from stand-ins; what has none, why."""
    rows = list(comparison.rows.values())
    real = sorted(
        (r for r in rows if r.rss_mb is not None and not r.emulated), key=lambda r: r.rss_mb or 0
    )
    lines = [f"{r.solution.name}: {memory_cell(r, ' MB')}" for r in real]
    lines += [
        f"{r.solution.name}: {memory_cell(r, ' MB')}, EMULATED by {r.stand_in}, not ranked"
        for r in rows
        if r.rss_mb is not None and r.emulated
    ]
    lines += [f"{r.solution.name}: {r.rss_note or '-'}" for r in rows if r.rss_mb is None]
    return lines


# -- the lessons the notebook checks -------------------------------------------------------

PER_CALL = ("mesh", "linkerd", "xds", "ingress", "gateway")


@dataclass(frozen=True)
class Lesson:
    """One claim of the notebook, checked over the rows it is about."""

    claim: str
    keys: tuple[str, ...]
    measured: Callable[[Row], bool]  # whether the row has what the claim needs
    holds: Callable[[Row], bool]
    real_only: bool = False  # a claim a stand-in cannot speak for (memory, latency)


LESSONS = (
    Lesson(
        "the L4 client sent every call to one pod",
        ("l4",),
        lambda r: r.pods_served is not None,
        lambda r: r.pods_served == 1,
    ),
    Lesson(
        f"per-call clients spread calls evenly (busiest pod over idlest at most {EVEN_MAX_MIN:g})",
        ("round_robin", *PER_CALL),
        lambda r: r.max_min is not None,
        lambda r: (r.max_min or math.inf) <= EVEN_MAX_MIN,
    ),
    Lesson(
        "a client that resolves only when a connection closes never reached the new pod",
        ("l4", "round_robin"),
        lambda r: r.pickup_window_s is not None,
        lambda r: r.pickup_s is None,
    ),
    Lesson(
        f"pushed endpoints, or a maximum connection age, reached the new pod within "
        f"{PICKUP_WITHIN_S:g} s",
        (*PER_CALL, MAX_AGE.key),
        lambda r: r.pickup_window_s is not None,
        lambda r: r.pickup_s is not None and r.pickup_s <= PICKUP_WITHIN_S,
    ),
    Lesson(
        "every client was served again after the crash",
        ("l4", "round_robin", *PER_CALL),
        lambda r: r.crash_failed is not None,
        lambda r: bool(r.served_after_crash),
    ),
    Lesson(
        "each proxy's memory is that of a running process (over 1 MB)",
        ("l4", "mesh", "linkerd", "ingress", "gateway"),
        lambda r: r.rss_mb is not None,
        lambda r: (r.rss_mb or 0.0) > 1.0,
        real_only=True,
    ),
)


# Lines of text output that fit a notebook's width beside the file browser, so that they
# never wrap in the middle of a word.
TEXT_WIDTH = 96


def check_lessons(comparison: Comparison, lessons: Iterable[Lesson] = LESSONS) -> list[str]:
    """One block per lesson: its claim, where it held, and which rows were skipped, emulated
    or not measured on this backend. Raises AssertionError, naming the rows, if one did not
    hold."""
    blocks, failures = [], []
    for lesson in lessons:
        held, broken, unmeasured, skipped, emulated = [], [], [], [], []
        for key in lesson.keys:
            row = comparison.rows.get(key)
            if row is None:
                (skipped if key in comparison.skipped else unmeasured).append(_name(key))
            elif lesson.real_only and row.emulated:
                emulated.append(_name(key))
            elif not lesson.measured(row):
                unmeasured.append(_name(key))
            elif lesson.holds(row):
                held.append(_name(key))
            else:
                broken.append(_name(key))
        if broken:
            failures.append(f"{lesson.claim}: not for {', '.join(broken)}")
        parts = [
            ("holds for", held),
            ("DOES NOT HOLD for", broken),
            (NOT_MEASURED, unmeasured),
            ("EMULATED here, not counted", emulated),
            ("skipped", skipped),
        ]
        lines = [lesson.claim] + [
            textwrap.fill(
                f"{label}: {', '.join(names)}",
                TEXT_WIDTH,
                initial_indent="  ",
                subsequent_indent="    ",
                break_long_words=False,
                break_on_hyphens=False,
            )
            for label, names in parts
            if names
        ]
        blocks.append("\n".join(lines))
    if failures:
        raise AssertionError("; ".join(failures))
    return blocks


# -- the chart that ranks them ------------------------------------------------------------


def ranked(comparison: Comparison) -> list[Row]:
    """Rows best first: even spread (or not measured), then a new pod served soonest (to the
    timeline's 0.1 s), then the smaller sd/mean.

    Both are properties a stand-in shares with the real component (how it picks a pod, how
    it learns endpoints), so emulated rows are ranked with the rest here, and marked.
    """

    def key(row: Row) -> tuple[float, float, float]:
        uneven = 1.0 if row.max_min is not None and row.max_min > EVEN_MAX_MIN else 0.0
        # In steps of the timeline's resolution: pickups within one step are a tie.
        pickup = math.inf if row.pickup_s is None else math.floor(row.pickup_s / 0.1)
        cv = math.inf if row.cv is None else row.cv
        return uneven, pickup, cv

    return sorted(comparison.rows.values(), key=key)


def _label(row: Row) -> str:
    return f"{row.solution.name} (EMULATED)" if row.emulated else row.solution.name


def ranking_figure(comparison: Comparison) -> Any:
    """Two panels on one ranking, best at the top: sd/mean of calls per pod, and the time
    from a new pod's readiness to its first call ("never" drawn to the run's end)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from grpclab.widgets import BASE_LAYOUT

    rows = ranked(comparison)
    labels = [_label(r) for r in rows]
    patterns = ["/" if r.emulated else "" for r in rows]
    figure = make_subplots(
        rows=1,
        cols=2,
        shared_yaxes=True,
        horizontal_spacing=0.04,
        subplot_titles=(
            "calls per pod: sd/mean (0 is even)",
            "new pod: seconds from ready to first call",
        ),
    )
    figure.add_trace(
        go.Bar(
            y=labels,
            x=[r.cv if r.cv is not None else 0 for r in rows],
            text=[_number(r.cv, 2) if r.cv is not None else "not in this phase" for r in rows],
            orientation="h",
            textposition="outside",
            marker={"color": "#4c78a8", "pattern": {"shape": patterns}},
            name="sd/mean",
        ),
        row=1,
        col=1,
    )
    never = [r.pickup_window_s is not None and r.pickup_s is None for r in rows]
    figure.add_trace(
        go.Bar(
            y=labels,
            x=[
                (r.pickup_window_s or 0) if gone else max(r.pickup_s or 0.0, 0.05)
                for r, gone in zip(rows, never, strict=True)
            ],
            text=[pickup_words(r) if r.pickup_window_s is not None else "-" for r in rows],
            orientation="h",
            textposition="outside",
            marker={
                "color": ["#e45756" if gone else "#54a24b" for gone in never],
                "pattern": {"shape": patterns},
            },
            name="pickup",
        ),
        row=1,
        col=2,
    )
    emulated = any(r.emulated for r in rows)
    figure.update_layout(BASE_LAYOUT)
    figure.update_layout(
        title={
            "text": "Ranked on evenness, then on pickup of a new pod (best at the top)"
            + ("<br><sup>hatched: EMULATED here by a stand-in</sup>" if emulated else ""),
        },
        showlegend=False,
        height=120 + 34 * len(rows),
        margin={"t": 90 if emulated else 70, "b": 30, "l": 10, "r": 30},
        bargap=0.3,
    )
    figure.update_yaxes(autorange="reversed", automargin=True)
    figure.update_xaxes(gridcolor=BASE_LAYOUT["xaxis"]["gridcolor"], zeroline=False)
    top = max((r.cv or 0.0 for r in rows), default=1.0)
    figure.update_xaxes(range=[0, top * 1.35 + 0.05], row=1, col=1)
    window = max((r.pickup_window_s or 0.0 for r in rows), default=1.0)
    figure.update_xaxes(range=[0, window * 1.45 + 0.5], row=1, col=2)
    return figure


@dataclass
class Ranking:
    """The ranking chart as a static plotly figure: it renders from the saved notebook,
    without a kernel, and its text form lists the same order."""

    comparison: Comparison

    def lines(self) -> list[str]:
        return [
            f"{place}. {_label(row)}: sd/mean {_number(row.cv, 2)}, new pod {pickup_words(row)}"
            for place, row in enumerate(ranked(self.comparison), start=1)
        ]

    def _repr_mimebundle_(self, **_: Any) -> dict[str, Any]:
        from grpclab.widgets import PLOTLY_MIME, figure_json

        figure = figure_json(ranking_figure(self.comparison))
        return {PLOTLY_MIME: figure, "text/plain": "\n".join(self.lines())}
