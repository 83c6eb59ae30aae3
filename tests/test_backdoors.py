"""No back doors: above the backends, code sees only the `Cluster` interface.

An AST check over src/grpclab and every notebook's code cells. Outside the backends
(cluster/sandbox/, cluster/kube/) and connect() (cluster/__init__.py), nothing may:
- import the sandbox package (a few machine tools may; each says why below);
- branch on the backend (`.backend == ...`, isinstance against a backend class, $GRPCLAB_BACKEND);
- use an attribute of a Cluster that the interface does not have (`lab.kube_proxy`,
  `getattr(lab, "addons")`).
The self-test at the end shows that the check finds each kind of back door.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator

import nbformat
import pytest
from support import REPO

from grpclab.cluster import Cluster

SRC = REPO / "src" / "grpclab"
SANDBOX_PACKAGE = "grpclab.cluster.sandbox"
BACKEND_CLASSES = {"Sandbox", "KubeCluster"}
# The backends themselves, and connect(), which chooses one: they may know the backend.
BACKENDS = ("cluster/sandbox/", "cluster/kube/", "cluster/__init__.py")
# Tools that act on this machine, not on a cluster, and so may import the sandbox package.
MACHINE_TOOLS = {
    # It also reads $GRPCLAB_BACKEND, to check what the chosen backend needs.
    "tools/preflight.py": "checks that this machine can run the sandbox (Envoy, setpriv, loopback)",
    "tools/cli.py": "`grpclab down` ends the processes of sandboxes whose owner died",
    "measure/checks.py": "leftover_sandbox_processes finds what `grpclab down` would end",
    "tls.py": "keeps its TLS files in the sandbox's state directory",
}
# Where the check stands today, known and named (none left); anything else it finds fails.
KNOWN: set[tuple[str, str]] = set()
INTERFACE = {name for name in dir(Cluster) if not name.startswith("_")} | {
    "backend",
    "namespace",
}


def back_doors(tree: ast.AST, notebook: bool = False) -> Iterator[str]:
    """Each back door in `tree`, in words (no line numbers, so that KNOWN stays stable).

    In a notebook, `lab` is the Cluster (cells are checked one by one, and the first
    assigns it from connect()).
    """
    clusters = _cluster_names(tree) | ({"lab"} if notebook else set())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(SANDBOX_PACKAGE):
                    yield f"imports {alias.name}"
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(SANDBOX_PACKAGE):
            yield f"imports {node.module}"
        elif isinstance(node, ast.ImportFrom) and node.module == "grpclab.cluster":
            if any(alias.name == "sandbox" for alias in node.names):
                yield "imports grpclab.cluster.sandbox"
        elif isinstance(node, ast.Compare):
            for side in (node.left, *node.comparators):
                if (
                    isinstance(side, ast.Attribute)
                    and side.attr == "backend"
                    and isinstance(side.value, ast.Name)
                    and side.value.id in clusters
                ):
                    yield f"branches on the backend: {ast.unparse(side)}"
                if any(
                    isinstance(n, ast.Constant) and n.value == "GRPCLAB_BACKEND"
                    for n in ast.walk(side)
                ):
                    yield "branches on the backend: compares $GRPCLAB_BACKEND"
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in ("isinstance", "issubclass") and len(node.args) == 2:
                names = {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)}
                names |= {n.attr for n in ast.walk(node.args[1]) if isinstance(n, ast.Attribute)}
                if names & BACKEND_CLASSES:
                    yield f"branches on the backend: {ast.unparse(node)}"
            if node.func.id in ("getattr", "hasattr") and len(node.args) >= 2:
                target, name = node.args[0], node.args[1]
                if (
                    isinstance(target, ast.Name)
                    and target.id in clusters
                    and isinstance(name, ast.Constant)
                    and name.value not in INTERFACE
                ):
                    yield f"uses {target.id}.{name.value}, which Cluster does not have"
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in clusters
            and node.attr not in INTERFACE
        ):
            yield f"uses {node.value.id}.{node.attr}, which Cluster does not have"


def _cluster_names(tree: ast.AST) -> set[str]:
    """Names that hold a Cluster: annotated `Cluster` (or `Cluster | None`), or assigned
    from connect()."""
    names = set()
    # Envoy has a Cluster too (xds/): only grpclab's own counts.
    ours = any(
        isinstance(node, ast.ImportFrom)
        and node.module in ("grpclab", "grpclab.cluster")
        and any(alias.name == "Cluster" for alias in node.names)
        for node in ast.walk(tree)
    )
    for node in ast.walk(tree):
        if ours and isinstance(node, ast.arg | ast.AnnAssign) and node.annotation is not None:
            annotation = ast.unparse(node.annotation).strip("'\"")
            if re.fullmatch(r"(\w+\.)*Cluster( \| None)?", annotation):
                target = node.arg if isinstance(node, ast.arg) else ast.unparse(node.target)
                names.add(target)
        elif isinstance(node, ast.Assign | ast.withitem):
            value = node.value if isinstance(node, ast.Assign) else node.context_expr
            targets = node.targets if isinstance(node, ast.Assign) else [node.optional_vars]
            if isinstance(value, ast.Call) and ast.unparse(value.func).endswith("connect"):
                names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


def source_files() -> Iterator[tuple[str, ast.AST, bool]]:
    for path in sorted(SRC.rglob("*.py")):
        relative = path.relative_to(SRC).as_posix()
        if relative.startswith(BACKENDS):
            continue
        yield relative, ast.parse(path.read_text(), str(path)), False
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        for index, cell in enumerate(notebook.cells):
            if cell.cell_type == "code":
                # IPython's magics and shell escapes are not Python; the rest is.
                lines = [
                    "" if line.lstrip().startswith(("%", "!")) else line
                    for line in cell.source.splitlines()
                ]
                yield f"notebooks/{path.name}#cell{index}", ast.parse("\n".join(lines)), True


def found() -> set[tuple[str, str]]:
    doors = set()
    for where, tree, notebook in source_files():
        for door in back_doors(tree, notebook):
            if where in MACHINE_TOOLS and door.startswith(
                (f"imports {SANDBOX_PACKAGE}", "branches on the backend: compares $GRPCLAB")
            ):
                continue
            doors.add((where, door))
    return doors


def known(where: str, door: str) -> tuple[str, str] | None:
    """The KNOWN entry that covers this back door, if any."""
    for entry in KNOWN:
        if where.startswith(entry[0]) and (entry[0].endswith("#") or where == entry[0]):
            if door == entry[1]:
                return entry
    return None


def test_nothing_above_the_backends_reaches_past_the_cluster_interface():
    assert {door for door in found() if known(*door) is None} == set()


def test_the_known_back_doors_are_still_there():
    # Once one is fixed, this fails: take its entry out of KNOWN then.
    assert {known(*door) for door in found()} >= KNOWN


@pytest.mark.parametrize(
    ("code", "door"),
    [
        ("lab.xds.resources('node')", "uses lab.xds"),  # in a notebook cell
        ("from grpclab.cluster.sandbox.pods import PodRuntime", "imports"),
        ("import grpclab.cluster.sandbox", "imports"),
        ("from grpclab.cluster import sandbox", "imports"),
        ("def f(lab: Cluster):\n    return lab.backend == 'sandbox'", "branches"),
        ("if isinstance(lab, Sandbox): pass", "branches"),
        ("import os\nif os.environ.get('GRPCLAB_BACKEND') == 'kind': pass", "branches"),
        ("lab = grpclab.connect()\nlab.kube_proxy.process", "uses lab.kube_proxy"),
        (
            "from grpclab.cluster import Cluster\ndef f(c: Cluster):\n    getattr(c, '_pods')",
            "uses c._pods",
        ),
        ("with grpclab.connect() as lab:\n    lab._objects", "uses lab._objects"),
    ],
)
def test_the_check_finds_each_kind_of_back_door(code, door):
    doors = list(back_doors(ast.parse(code), notebook=True))
    assert any(found.startswith(door) for found in doors), code


def test_the_interface_itself_passes():
    code = (
        "lab = grpclab.connect()\nlab.apply('x')\nlab.logs('p')\nprint(lab.backend)\n"
        "print(os.environ.get('GRPCLAB_BACKEND'))\nrun: Callable[[Cluster], int]\nrun.total"
    )
    assert list(back_doors(ast.parse(code), notebook=True)) == []
    # Outside notebooks, `lab` may be anything (labs.py's Lab objects).
    assert list(back_doors(ast.parse("lab.number"))) == []
