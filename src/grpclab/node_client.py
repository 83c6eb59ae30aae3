"""The same experiments from Node: clients/node (@grpc/grpc-js) driven from Python.

`run` hands LoadSpecs to clients/node/client.js as JSON on stdin and reads one LoadResult
per spec back from its stdout, so the Node counts go into the same charts and checks as
the Python ones. The targets come from `Cluster.target`, as for `Cluster.run_load`, and the
Node process inherits this process's environment (an `xds:///` target's bootstrap file).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grpclab.cluster import Cluster
from grpclab.load import LoadResult, LoadSpec
from grpclab.preflight import MissingTool

CLIENT_DIR = Path(__file__).resolve().parents[2] / "clients" / "node"
CLIENT = CLIENT_DIR / "client.js"
# grpc-js sends a dns://SERVER/name target's name to SERVER only with this set to "true";
# otherwise it asks the machine's resolver, which does not know cluster names.
RESOLVER_ENV = "GRPC_NODE_USE_ALTERNATIVE_RESOLVER"
MIN_NODE_MAJOR = 18
RUN_TIMEOUT_S = 300.0
# The LoadSpec fields client.js understands; any other field set away from its default is
# refused rather than silently ignored.
SUPPORTED = frozenset({"target", "rpcs", "concurrency", "lb_policy", "deadline_s"})


@dataclass
class NodeResult(LoadResult):
    """A LoadResult from the Node client, with the first error message for each status code."""

    error_details: dict[str, str] = field(default_factory=dict)


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
    found = missing()
    return f"{found[0]}: {found[1]}" if found else None


def require() -> None:
    """Raise MissingTool, which names the fix, when the Node client cannot run here."""
    found = problem()
    if found:
        raise MissingTool(f"This notebook runs a Node.js gRPC client. {found}.")


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


def run(specs: Mapping[str, LoadSpec], alternative_resolver: bool = True) -> dict[str, NodeResult]:
    """Run each spec in one Node process, one after another; results by the same names.

    alternative_resolver=False sets GRPC_NODE_USE_ALTERNATIVE_RESOLVER=false, to show
    what a grpc-js client does with a dns://SERVER/name target without it.
    """
    require()
    jobs = [to_job(name, spec) for name, spec in specs.items()]
    env = {**os.environ, RESOLVER_ENV: "true" if alternative_resolver else "false"}
    done = subprocess.run(
        [shutil.which("node") or "node", str(CLIENT)],
        input=json.dumps({"runs": jobs}),
        capture_output=True,
        text=True,
        env=env,
        cwd=CLIENT_DIR,
        timeout=RUN_TIMEOUT_S,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"the Node client exited with {done.returncode}: {done.stderr.strip()[-2000:]}"
        )
    results = json.loads(done.stdout.strip().splitlines()[-1])["results"]
    return {name: NodeResult(**results[name], done=True) for name in specs}


def side_by_side(
    pods: list[str], title: str, python: LoadResult, node: LoadResult, width: int = 460
) -> Any:
    """Two DistributionCharts in a row: the Python client's counts, then the Node client's."""
    import ipywidgets

    from grpclab.widgets import DistributionChart

    figures = []
    for language, result in (("Python", python), ("Node", node)):
        chart = DistributionChart(pods, f"{title}: {language}")
        chart.figure.layout.width = width
        chart.update(result)
        figures.append(chart.figure)
    return ipywidgets.HBox(figures)
