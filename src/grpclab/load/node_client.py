"""The same experiments from Node: clients/node (@grpc/grpc-js) driven from Python.

`run` hands LoadSpecs to clients/node/client.js as JSON on stdin and reads one LoadResult
per spec back from its stdout, so the Node counts go into the same charts and checks as
the Python ones. The targets come from `Cluster.target`, as for `Cluster.run_load`, and the
Node process inherits this process's environment (an `xds:///` target's bootstrap file).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from grpclab.cluster import Cluster
from grpclab.load import LoadResult, LoadSpec, private_resolver
from grpclab.measure import checks
from grpclab.paths import NODE_CLIENT
from grpclab.tools.missing import MissingTool

CLIENT_DIR = NODE_CLIENT
CLIENT = CLIENT_DIR / "client.js"
# grpc-js sends a dns://SERVER/name target's name to SERVER only with this set to "true";
# otherwise it asks the machine's resolver, which does not know cluster names.
RESOLVER_ENV = "GRPC_NODE_USE_ALTERNATIVE_RESOLVER"
MIN_NODE_MAJOR = 18
RUN_TIMEOUT_S = 300.0
# The LoadSpec fields client.js understands; any other field set away from its default is
# refused rather than silently ignored.
SUPPORTED = frozenset({"target", "rpcs", "concurrency", "lb_policy", "deadline_s"})
URI = re.compile(r"^(?:([A-Za-z0-9+.-]+):)?(?://([^/]*)/)?(.+)$")
# The schemes grpc-js 1.14 and @grpc/grpc-js-xds register besides dns: (no DNS lookup).
NOT_DNS = frozenset({"ipv4", "ipv6", "unix", "xds"})


@dataclass
class NodeResult(LoadResult):
    """A LoadResult from the Node client, with the first error message for each status code."""

    error_details: dict[str, str] = field(default_factory=dict)
    # With run(..., alternative_resolver=False): what the client asked the machine's
    # resolver (grpclab.load.private_resolver's stand-in), "TYPE name", each once.
    system_resolver_asked: list[str] = field(default_factory=list)


def node_version(node: str) -> str:
    """`node --version` (e.g. "v20.20.2")."""
    done = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30)
    return done.stdout.strip()


def missing() -> tuple[str, str] | None:
    """(what is missing, how to fix it) when the Node client cannot run here; else None."""
    node = shutil.which("node")
    if node is None:
        return (
            "Node.js is not installed",
            "install Node 18 or newer with npm (Debian/Ubuntu: sudo apt-get install nodejs "
            "npm), then run `make setup`",
        )
    version = node_version(node)
    try:
        major = int(version.lstrip("v").split(".")[0])
    except ValueError:
        major = 0
    if major < MIN_NODE_MAJOR:
        return (
            f"{node} is Node {version or '(unknown)'}, older than {MIN_NODE_MAJOR}",
            f"install Node {MIN_NODE_MAJOR} or newer, then run `make setup`",
        )
    if not (CLIENT_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir():
        return (
            "the Node client's packages are not installed",
            f"run `make setup` (it runs `npm ci` in {CLIENT_DIR})",
        )
    return None


def problem() -> str | None:
    """What stops the Node client from running here, and the fix, in one sentence; or None."""
    return MissingTool.sentence(missing())


def require() -> None:
    """Raise MissingTool, which names the fix, when the Node client cannot run here."""
    MissingTool.check(missing(), "This notebook runs a Node.js gRPC client.")


def versions() -> str:
    """Which node runs the client and which gRPC packages it has (package-lock.json)."""
    lock = json.loads((CLIENT_DIR / "package-lock.json").read_text())["packages"]
    packages = ", ".join(
        f"{name} {lock[f'node_modules/{name}']['version']}"
        for name in ("@grpc/grpc-js", "@grpc/grpc-js-xds", "@grpc/proto-loader")
    )
    return f"node {node_version(shutil.which('node') or 'node')}, {packages}"


def describe() -> str:
    """One line for a notebook: the versions, or what is missing and how to fix it."""
    found = problem()
    return f"Node client: not available: {found}" if found else f"Node client: {versions()}"


def experiments(lab: Cluster, rpcs: int = 600, concurrency: int = 8) -> dict[str, LoadSpec]:
    """Notebooks 02, 03 and 07 in three specs: one channel to the ClusterIP Service, the
    headless Service with round_robin, and `xds:///` from grpclab's control plane.

    The same specs run in Python with `lab.run_load` and in Node with `run`.
    """
    same = {"rpcs": rpcs, "concurrency": concurrency}
    return {
        "ClusterIP, one channel": LoadSpec(lab.target("grpc-server"), **same),
        "headless, round_robin": LoadSpec(
            lab.target("grpc-server-headless"), lb_policy="round_robin", **same
        ),
        "xds:///": LoadSpec(lab.target("grpc-server", via="xds"), **same),
    }


def to_job(name: str, spec: LoadSpec) -> dict[str, object]:
    """The JSON client.js reads for one spec; ValueError for a field it does not support."""
    spec.validate()
    defaults = LoadSpec(target=spec.target)
    unsupported = sorted(
        key
        for key, value in spec.to_dict().items()
        if key not in SUPPORTED and value != getattr(defaults, key)
    )
    if unsupported:
        raise ValueError(
            f"the Node client does not support LoadSpec.{', LoadSpec.'.join(unsupported)}; "
            f"it takes {', '.join(sorted(SUPPORTED))}"
        )
    return {"name": name, **{key: getattr(spec, key) for key in sorted(SUPPORTED)}}


def looks_up_names(target: str) -> bool:
    """Whether grpc-js hands this target's host to its DNS resolver as a name: a `dns:`
    target, or one whose scheme grpc-js does not know (then the whole target is read as
    `dns:` host:port), and whose host is not an IP address."""
    scheme, path = URI.match(target).group(1, 3)  # grpc-js uri-parser.ts
    if scheme in NOT_DNS:
        return False
    if scheme != "dns":
        path = target
    if path.startswith("["):
        host = path[1 : path.find("]")]
    else:  # grpc-js splitHostPort: one colon separates the port; more is an IPv6 address
        host = path.rsplit(":", 1)[0] if path.count(":") == 1 else path
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return True
    return False


def run(specs: Mapping[str, LoadSpec], alternative_resolver: bool = True) -> dict[str, NodeResult]:
    """Run the specs in a Node process, one after another; results by the same names.

    alternative_resolver=False sets GRPC_NODE_USE_ALTERNATIVE_RESOLVER=false, to show what a
    grpc-js client does with a dns://SERVER/name target without it: it asks the machine's
    resolver. So that no cluster name reaches the real one, each spec whose target grpc-js
    would look up then runs in its own Node process with a private stand-in for the machine's
    resolver (grpclab.load.private_resolver), and its result lists the questions that stand-in
    was asked; the other specs (address lists, xds:///) run as usual. Where the stand-in
    cannot run, MissingTool says why: the name is never sent to the machine's resolver.
    """
    require()
    jobs = {name: to_job(name, spec) for name, spec in specs.items()}
    env = {**os.environ, RESOLVER_ENV: "true" if alternative_resolver else "false"}
    private = [
        name
        for name, spec in specs.items()
        if not alternative_resolver and looks_up_names(spec.target)
    ]
    if private:
        private_resolver.require()
    results: dict[str, NodeResult] = {}
    shared = [jobs[name] for name in specs if name not in private]
    if shared:
        results.update(_parse(_run_client(shared, env, isolated=False)[0]))
    for name in private:
        done, asked = _run_client([jobs[name]], env, isolated=True)
        (result,) = _parse(done).values()
        result.system_resolver_asked = asked
        results[name] = result
    return {name: results[name] for name in specs}


def _run_client(
    jobs: list[dict[str, object]], env: dict[str, str], isolated: bool
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    argv = [shutil.which("node") or "node", str(CLIENT)]
    how = {"input": json.dumps({"runs": jobs}), "env": env, "cwd": CLIENT_DIR}
    if isolated:
        done, asked = private_resolver.run(argv, timeout=RUN_TIMEOUT_S, **how)
    else:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, **how)
        asked = []
    if done.returncode != 0:
        raise RuntimeError(
            f"the Node client exited with {done.returncode}: {done.stderr.strip()[-2000:]}"
        )
    return done, asked


def _parse(done: subprocess.CompletedProcess[str]) -> dict[str, NodeResult]:
    results = json.loads(done.stdout.strip().splitlines()[-1])["results"]
    return {name: NodeResult(**result, done=True) for name, result in results.items()}


@dataclass
class SideBySide:
    """Where the calls went, Python's run beside Node's: a static plotly figure, which renders
    from the saved notebook without a kernel; its text form is the counts per pod."""

    pods: list[str]
    title: str
    python: LoadResult
    node: LoadResult

    def figure(self) -> Any:
        from plotly.subplots import make_subplots

        from grpclab.widgets import BASE_LAYOUT, DistributionChart

        runs = {"Python": self.python, "Node": self.node}
        figure = make_subplots(rows=1, cols=2, shared_yaxes=True, subplot_titles=tuple(runs))
        for column, result in enumerate(runs.values(), start=1):
            chart = DistributionChart(self.pods)  # the bars every chart in the tutorial draws
            chart.update(result)
            figure.add_trace(chart.figure.data[0], row=1, col=column)
        top = max((count for r in runs.values() for count in r.per_pod.values()), default=0)
        figure.update_layout(BASE_LAYOUT, title=self.title, showlegend=False, width=920)
        figure.update_yaxes(range=[0, max(1, top) * 1.15], gridcolor="#ebebeb")
        figure.update_yaxes(title="OK replies", row=1, col=1)
        return figure

    def _repr_mimebundle_(self, **_: Any) -> dict[str, Any]:
        from grpclab.widgets import PLOTLY_MIME, figure_json

        text = ", ".join(
            f"{language} {'/'.join(map(str, checks.counts_for(result, self.pods)))}"
            for language, result in (("Python", self.python), ("Node", self.node))
        )
        return {PLOTLY_MIME: figure_json(self.figure()), "text/plain": f"{self.title}: {text}"}


def side_by_side(pods: list[str], title: str, python: LoadResult, node: LoadResult) -> SideBySide:
    """The calls per pod of a Python run and a Node run of the same spec, side by side."""
    return SideBySide(list(pods), title, python, node)
