"""Every fix the cluster supports, measured side by side in one run (notebook 10 and bench/).

`prepare` sets up each solution (a target and how to call it) and skips, with the reason,
the ones this cluster cannot offer. `measure` then runs four phases on all of them:
steady load in interleaved rounds (evenness, latency against a direct call to one pod),
a scale-up and a pod crash with every client running at once, and the proxies' memory.
`measure_max_age` adds the headless client with a server maximum connection age.
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from subprocess import Popen
from typing import Any

from grpclab import checks
from grpclab.cluster import Cluster
from grpclab.load import LoadResult, LoadSpec
from grpclab.side_by_side import run_side_by_side

DEPLOYMENT = "grpc-server"
SERVICE = "grpc-server"
HEADLESS = "grpc-server-headless"
TLS_HOST = "grpc.example.com"  # the host the Ingress and the Gateway manifests serve
TLS_SECRET = "grpc-tls"
DIRECT = "direct"
# Thresholds of the stable summary: wide enough for a busy 2-core machine.
EVEN_MAX_MIN = 1.5
PICKUP_WITHIN_S = 10.0
P50_WITHIN_MS = 5.0
Out = Callable[[str], None]


@dataclass(frozen=True)
class Solution:
    """One way to reach the Service, and where a pod is picked for each call."""

    key: str
    name: str
    balancer: str  # where a pod is picked, in a few words


SOLUTIONS = (
    Solution("l4", "ClusterIP (L4)", "kube-proxy, per connection"),
    Solution("round_robin", "headless + round_robin", "client, per call"),
    Solution("mesh", "Istio sidecar", "sidecar, per call"),
    Solution("linkerd", "Linkerd proxy", "client's proxy, per call"),
    Solution("xds", "proxyless xDS", "client (xDS), per call"),
    Solution("ingress", "NGINX Ingress", "nginx, per call"),
    Solution("gateway", "Envoy Gateway", "gateway, per call"),
)
MAX_AGE = Solution("max_age", "headless + rr + max age", "client, per call")
# The demo server's gRPC port (containerPort in cluster/manifests/base/deployment.yaml).
GRPC_PORT = 50051
SANDBOX_NOTES = {
    "l4": "kube-proxy is Envoy tcp_proxy here (iptables or IPVS on kind)",
    "mesh": "Istio's sidecar is emulated by Envoy, fed istiod's config by grpclab",
    "linkerd": "Linkerd's proxy is EMULATED by Envoy (LEAST_REQUEST); on kind it is Linkerd",
    "ingress": "real nginx, TLS",
    "gateway": "a real Envoy, grpclab plays Envoy Gateway's controller, TLS",
}


@dataclass
class Lineup:
    """The prepared solutions of one cluster: each one's load spec, and the skipped ones."""

    lab: Cluster
    specs: dict[str, LoadSpec]  # solution key (and "direct") -> spec template
    skipped: dict[str, str]  # solution key -> why
    pods: list[str]
    manifests: Path

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
    extra: dict[str, Any] = field(default_factory=dict)


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


def prepare(
    lab: Cluster,
    manifests: Path,
    only: Iterable[str] | None = None,
    out: Out = print,
) -> Lineup:
    """Apply the base Deployment and Services, then set up each solution this cluster supports.

    A solution whose set-up fails (its add-on is missing, the backend lacks its `via`) is
    skipped, and the reason is printed.
    """
    from grpclab.certificates import issue_certificate
    from grpclab.cluster.controllers import install_addon

    wanted = [s for s in SOLUTIONS if only is None or s.key in set(only)]
    unknown = set(only or ()) - {s.key for s in SOLUTIONS}
    if unknown:
        known = ", ".join(s.key for s in SOLUTIONS)
        raise ValueError(f"compare.prepare: unknown solution(s) {sorted(unknown)}; known: {known}")
    lab.apply(manifests / "base")
    lab.apply(manifests / "headless" / "service-headless.yaml")
    lab.apply(manifests / "compare" / "namespace.yaml")
    pods = lab.wait_ready(DEPLOYMENT)
    specs: dict[str, LoadSpec] = {DIRECT: LoadSpec(f"{pods[0].ip}:{GRPC_PORT}")}
    skipped: dict[str, str] = {}
    bundle: list[Any] = []

    def client_tls() -> dict[str, str]:
        """What the client trusts; the first call issues the certificate and stores its Secret."""
        if not bundle:
            bundle.append(issue_certificate([TLS_HOST]))
            lab.apply(bundle[0].secret(TLS_SECRET))
        return {"tls_ca_file": str(bundle[0].ca_file), "tls_server_name": TLS_HOST}

    def setup(key: str) -> LoadSpec:
        if key == "l4":
            return LoadSpec(lab.target(SERVICE, via="dns"))
        if key == "round_robin":
            return LoadSpec(lab.target(HEADLESS, via="dns"), lb_policy="round_robin")
        if key in ("mesh", "xds"):
            return LoadSpec(lab.target(SERVICE, via=key))
        if key == "linkerd":
            install_addon(lab, "linkerd")
            return LoadSpec(lab.target(SERVICE, via="linkerd"))
        if key == "ingress":
            install_addon(lab, "ingress-nginx")
            tls = client_tls()  # the Secret first: the Ingress names it
            lab.apply(manifests / "ingress" / "ingress-nginx.yaml")
            return LoadSpec(lab.target(SERVICE, via="ingress"), **tls)
        if key == "gateway":
            install_addon(lab, "envoy-gateway")
            tls = client_tls()
            lab.apply(manifests / "ingress" / "gateway.yaml")
            lab.apply(manifests / "ingress" / "grpcroute.yaml")
            return LoadSpec(lab.target(SERVICE, via="gateway"), **tls)
        raise AssertionError(key)

    for solution in wanted:
        try:
            specs[solution.key] = setup(solution.key)
        except Exception as error:  # this cluster cannot offer it: say why and go on
            skipped[solution.key] = f"{type(error).__name__}: {error}".splitlines()[0]
            out(f"{solution.name}: skipped ({skipped[solution.key]})")
        else:
            note = SANDBOX_NOTES.get(solution.key, "") if lab.backend == "sandbox" else ""
            out(f"{solution.name}: ready{f' ({note})' if note else ''}")
    return Lineup(lab, specs, skipped, [p.name for p in pods], manifests)


def run_spec(template: LoadSpec, **fields: Any) -> LoadSpec:
    """A copy of a solution's spec with the run's own bounds (duration, concurrency...)."""
    return replace(template, rpcs=None, **fields)


def measure_steady(
    lineup: Lineup,
    rounds: int = 3,
    latency_s: float = 1.0,
    spread_rpcs: int = 600,
    spread_concurrency: int = 8,
    out: Out = print,
) -> tuple[dict[str, Row], dict[str, float]]:
    """Latency and evenness, one solution at a time, in interleaved rounds.

    Latency runs keep one call in flight, so that no pod queues calls and the difference
    to the direct call is the path's own cost. Spread runs keep `spread_concurrency` in
    flight (least-request balancers need calls in flight to compare). Each round runs every
    solution once, the order turned by one each round and reversed every other round, so
    that drifting machine load hits all alike. Each run opens its own channel, and evenness
    is per run: an L4 channel sticks to one pod, whichever it is.
    """
    latency, spread = interleaved_rounds(
        lineup, rounds, latency_s, spread_rpcs, spread_concurrency, out
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
            extra={"steady_failed": sum(r.failed for r in (*timed, *spread_runs))},
        )
    return rows, baseline


def interleaved_rounds(
    lineup: Lineup,
    rounds: int,
    latency_s: float,
    spread_rpcs: int = 0,
    spread_concurrency: int = 8,
    out: Out = print,
) -> tuple[dict[str, list[LoadResult]], dict[str, list[LoadResult]]]:
    """Per solution (and "direct"), one latency run per round, and a spread run unless
    `spread_rpcs` is 0; the order turns by one each round and reverses every other round."""
    keys = [DIRECT, *(s.key for s in lineup.solutions())]
    latency: dict[str, list[LoadResult]] = {key: [] for key in keys}
    spread: dict[str, list[LoadResult]] = {key: [] for key in keys}
    for number in range(rounds):
        order = keys[number % len(keys) :] + keys[: number % len(keys)]
        for key in reversed(order) if number % 2 else order:
            template = lineup.specs[key]
            spec = run_spec(template, duration_s=latency_s, concurrency=1)
            latency[key].append(lineup.lab.run_load(spec))
            if spread_rpcs and key != DIRECT:
                spread_spec = replace(template, rpcs=spread_rpcs, concurrency=spread_concurrency)
                spread[key].append(lineup.lab.run_load(spread_spec))
        out(f"steady load: round {number + 1} of {rounds} done")
    return latency, spread


def _latency(result: LoadResult, key: str) -> float:
    return result.latency_ms.get(key, math.nan)


def measure_scale_up(
    lineup: Lineup,
    rows: Mapping[str, Row],
    seconds: float = 16.0,
    at_s: float = 1.0,
    concurrency: int = 1,
    out: Out = print,
) -> None:
    """Every client at once while the Deployment goes from its pods to one more; fills pickup."""
    lab = lineup.lab
    before = {p.name for p in lab.wait_ready(DEPLOYMENT)}
    loads = {
        s.key: run_spec(
            lineup.specs[s.key], duration_s=seconds, concurrency=concurrency, interval_s=0.1
        )
        for s in lineup.solutions()
    }

    def scale_up(_: Mapping[str, LoadResult]) -> list[str]:
        lab.scale(DEPLOYMENT, len(before) + 1)
        return [p.name for p in lab.wait_ready(DEPLOYMENT)]

    run = run_side_by_side(lab, loads, at_s, scale_up)
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
    seconds: float = 5.0,
    at_s: float = 1.5,
    concurrency: int = 6,
    call_ms: int = 20,
    out: Out = print,
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
    loads = {
        s.key: run_spec(
            lineup.specs[s.key], duration_s=seconds, concurrency=concurrency, interval_s=0.1
        )
        for s in lineup.solutions()
    }

    def kill(snapshots: Mapping[str, LoadResult]) -> str:
        pinned = snapshots.get("l4")
        victim = (
            max(pinned.per_pod, key=pinned.per_pod.get) if pinned and pinned.per_pod else pods[0]
        )
        lab.crash_pod(victim)
        return victim

    try:
        run = run_side_by_side(lab, loads, at_s, kill)
    finally:
        for pod in lab.wait_ready(DEPLOYMENT, timeout=90):
            lab.set_fault(pod.name)  # a crashed pod comes back without it; the others keep it
    for key, result in run.results.items():
        after = run.event_done_s[key] + 0.5  # past the calls that were in flight at the kill
        row = rows[key]
        row.crash_failed, row.crash_total = result.failed, result.total
        row.served_after_crash = any(
            sum(b["per_pod"].values()) for b in result.timeline if b["t"] >= after
        )
        failing = [b["t"] for b in result.timeline if b["errors"]]
        row.extra["crash_errors"] = dict(result.errors)
        # How long calls kept failing: the first to the end of the last bucket with a failure.
        row.extra["crash_failing_s"] = failing[-1] + 0.1 - failing[0] if failing else 0.0
    out(f"pod crashed mid-load: {run.outcome} (no drain)")
    return run.outcome


def proxy_processes(lab: Cluster) -> dict[str, Popen | None]:
    """The process each solution's proxy runs as, on the sandbox (None: no proxy there)."""
    if lab.backend != "sandbox":
        return {}
    addons: dict[str, Any] = getattr(lab, "addons", {})

    def envoy_of(name: str) -> Popen | None:
        addon = addons.get(name)
        if addon is None:
            return None
        envoy = getattr(addon, "envoy", None)
        proxy = getattr(envoy, "proxy", envoy)  # an EnvoyFrontend wraps an EnvoyProxy
        return getattr(proxy, "process", None)

    ingress = addons.get("ingress-nginx")
    return {
        "l4": lab.kube_proxy.process,  # type: ignore[attr-defined]
        "mesh": envoy_of("mesh"),
        "linkerd": envoy_of("linkerd"),
        "gateway": envoy_of("envoy-gateway"),
        "ingress": getattr(ingress, "process", None),
    }


# The wrappers a proxy may run under (nginx's guard shell): not part of its memory.
WRAPPERS = {"sh", "dash", "bash", "setpriv"}


def tree_rss_kb(pid: int) -> int:
    """VmRSS summed over `pid` and its descendants, wrapper shells left out (kB)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry))
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        stack += children.get(current, [])
        try:
            if Path(f"/proc/{current}/comm").read_text().strip() in WRAPPERS:
                continue
            status = Path(f"/proc/{current}/status").read_text()
        except OSError:
            continue  # it ended meanwhile
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def measure_memory(lineup: Lineup, rows: Mapping[str, Row]) -> None:
    """Each proxy's resident memory now, from /proc/<pid>/status (n/a without a proxy)."""
    processes = proxy_processes(lineup.lab)
    for key, row in rows.items():
        if key in ("round_robin", "xds", "max_age"):
            row.rss_note = "n/a (no proxy)"
            continue
        process = processes.get(key)
        if process is None or process.poll() is not None:
            row.rss_note = "n/a (not on this backend)" if not processes else "n/a (not running)"
            continue
        row.rss_mb = tree_rss_kb(process.pid) / 1024
        if key == "l4":
            row.rss_note = "shared"  # one kube-proxy carries every Service
        elif key == "ingress":
            row.rss_note = "all workers"


def measure_max_age(
    lineup: Lineup,
    rows: dict[str, Row],
    seconds: float = 14.0,
    at_s: float = 1.0,
    out: Out = print,
) -> None:
    """The headless client again, on pods with a 5 s maximum connection age: pickup after a
    scale-up. It replaces every pod (the Deployment's template changes); run it last."""
    from grpclab.widgets import run_with_scale

    if "round_robin" not in lineup.specs:
        lineup.skipped[MAX_AGE.key] = "headless + round_robin is not available"
        out(f"{MAX_AGE.name}: skipped ({lineup.skipped[MAX_AGE.key]})")
        return
    lab = lineup.lab
    lab.apply(lineup.manifests / "headless" / "deployment-max-connection-age.yaml")
    before = lab.wait_ready(DEPLOYMENT, timeout=90)
    spec = run_spec(
        lineup.specs["round_robin"],
        duration_s=seconds,
        concurrency=2,
        interval_s=0.1,
        # The server's age (5 s here) is far below the client's 30 s DNS cool-down default.
        channel_options={"grpc.dns_min_time_between_resolutions_ms": 1000},
    )
    run = run_with_scale(lab, spec, replicas=len(before) + 1, at_s=at_s)
    rows[MAX_AGE.key] = Row(
        MAX_AGE,
        pickup_s=run.pickup_s(),
        pickup_window_s=run.result.elapsed_s - run.ready_at_s,
        rss_note="n/a (no proxy)",
        extra={"max_age_failed": run.result.failed, "max_age_total": run.result.total},
    )
    out(f"max connection age: scaled at {run.scaled_at_s:.1f} s, ready at {run.ready_at_s:.1f} s")


def measure(
    lineup: Lineup, max_age: bool = True, steady_rounds: int = 3, out: Out = print
) -> Comparison:
    """All phases, in the order that keeps them apart: steady, scale-up, crash, memory, age."""
    rows, baseline = measure_steady(lineup, rounds=steady_rounds, out=out)
    measure_scale_up(lineup, rows, out=out)
    measure_crash(lineup, rows, out=out)
    measure_memory(lineup, rows)
    if max_age:
        measure_max_age(lineup, rows, out=out)
    return Comparison(rows, dict(lineup.skipped), baseline)


# -- the table and the stable summary ---------------------------------------------------------


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


COLUMNS = (
    ("solution", "<"),
    ("balances in", "<"),
    ("max/min", ">"),
    ("sd/mean", ">"),
    ("p50 ms", ">"),
    ("p99 ms", ">"),
    ("p50 vs direct", ">"),
    ("p99 vs direct", ">"),
    ("new pod served", ">"),
    ("failed at kill", ">"),
    ("proxy RSS MB", ">"),
)


def table_rows(comparison: Comparison) -> list[list[str]]:
    """One list of cell texts per row, in COLUMNS order."""
    lines = []
    for row in comparison.rows.values():
        crash = "-" if row.crash_failed is None else f"{row.crash_failed} of {row.crash_total}"
        rss = _number(row.rss_mb) if row.rss_mb is not None else row.rss_note or "-"
        if row.rss_mb is not None and row.rss_note:
            rss = f"{rss} ({row.rss_note})"
        lines.append(
            [
                row.solution.name,
                row.solution.balancer,
                _number(row.max_min, 2),
                _number(row.cv, 2),
                _number(row.p50_ms, 2),
                _number(row.p99_ms, 2),
                _number(row.p50_over_ms, 2, signed=True),
                _number(row.p99_over_ms, 2, signed=True),
                pickup_words(row),
                crash,
                rss,
            ]
        )
    return lines


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
    if comparison.direct:
        lines.append(
            f"direct call to one pod (the baseline): p50 {comparison.direct['p50']:.2f} ms, "
            f"p99 {comparison.direct['p99']:.2f} ms"
        )
    for key, reason in comparison.skipped.items():
        name = next((s.name for s in (*SOLUTIONS, MAX_AGE) if s.key == key), key)
        lines.append(f"skipped: {name}: {reason}")
    return "\n".join(lines)


def stable_summary(comparison: Comparison) -> str:
    """Statements that hold run after run on a noisy machine: classes and thresholds met.

    One line per solution; a phase that did not measure a solution shows "-".
    """
    rows = list(comparison.rows.values())

    def yes(condition: bool) -> str:
        return "yes" if condition else "no"

    columns = [
        ("solution", lambda r: r.solution.name),
        ("calls spread", lambda r: evenness_word(r) if r.max_min is not None else "-"),
        (
            f"p50 within {P50_WITHIN_MS:g} ms of direct",
            lambda r: "-" if r.p50_over_ms is None else yes(r.p50_over_ms <= P50_WITHIN_MS),
        ),
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
            lambda r: "-" if r.crash_failed is None else yes(r.served_after_crash),
        ),
    ]
    cells = [[name for name, _ in columns]] + [[cell(r) for _, cell in columns] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = [
        "  ".join(f"{c:<{w}}" for c, w in zip(line, widths, strict=True)).rstrip() for line in cells
    ]
    steady_failures = [r.solution.name for r in rows if r.extra.get("steady_failed")]
    lines.append(f"failed calls under steady load: {', '.join(steady_failures) or 'none'}")
    with_proxy = [r for r in rows if r.rss_mb is not None]
    if with_proxy:
        smallest = min(with_proxy, key=lambda r: r.rss_mb or 0.0)
        lines.append(f"smallest proxy in memory: {smallest.solution.name}")
    return "\n".join(lines)
