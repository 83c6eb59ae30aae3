"""The import graph of src/grpclab: no cycles, and each package imports what its __init__ says.

The graph is read from the source with `ast`; nothing is imported. A node is a module (a
package is its `__init__`). `import a.b` and `from a.b import c` are edges to a.b, or to
a.b.c when that is a module. How each kind of import counts:
- At module level (also inside `if`, `try` and class bodies): an edge. These may form no
  cycle at all.
- Inside a function: an edge too. It runs later, when the function is called, so Python
  would not fail on a cycle through it; but two modules that need each other are one
  design, cut in two. A cycle through a function's import fails like any other, unless the
  import is one of LAZY below, where the lazy import is the honest design (each says why).
- Under `if TYPE_CHECKING:`: not an edge. It never runs; an annotation names a type.
- The parent packages that Python runs before a module (importing a.b.c runs a and a.b
  first) are not edges: a package that imports its own submodules would always look cyclic.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import REPO

SRC = REPO / "src"
PACKAGE = "grpclab"


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    kind: str  # "module", "function" or "typing"
    line: int


# Imports inside a function that close a cycle, and why that is the design and not a trick.
LAZY = {
    ("grpclab.cluster", "grpclab.cluster.sandbox"): (
        "connect() picks a backend: the interface names its implementations, and each "
        "implementation builds on the interface"
    ),
    ("grpclab.cluster", "grpclab.cluster.kube"): "connect() picks a backend (as above)",
}


def modules(root: Path = SRC / PACKAGE) -> dict[str, Path]:
    """Every module under `root`, by dotted name."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(name: str, path: Path, known: Iterable[str]) -> list[Edge]:
    """The edges from module `name` (the file `path`) to the modules in `known`."""
    known = set(known)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    edges: list[Edge] = []

    def add(target: str, kind: str, line: int) -> None:
        if target in known and target != name:
            edges.append(Edge(name, target, kind, line))

    def visit(nodes: Iterable[ast.stmt], kind: str) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    add(alias.name, kind, node.lineno)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    parts = parts[: len(parts) - (node.level - 1)]
                    base = ".".join([*parts, *([node.module] if node.module else [])])
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    add(full if full in known else base, kind, node.lineno)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                visit(node.body, "typing" if kind == "typing" else "function")
            elif isinstance(node, ast.If) and _type_checking(node.test):
                visit(node.body, "typing")
                visit(node.orelse, kind)
            else:
                for field in ("body", "orelse", "finalbody", "handlers"):
                    visit(getattr(node, field, None) or [], kind)

    visit(ast.parse(path.read_text()).body, "module")
    return edges


def import_graph(found: Mapping[str, Path] | None = None) -> list[Edge]:
    """Every edge between the modules of src/grpclab (or of `found`)."""
    found = dict(found or modules())
    return [edge for name, path in found.items() for edge in imports_of(name, path, found)]


def find_cycle(edges: Iterable[Edge]) -> list[str] | None:
    """One cycle of the graph, as the modules along it (the first again at the end)."""
    graph: dict[str, list[str]] = {}
    for edge in edges:
        graph.setdefault(edge.source, []).append(edge.target)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(set(graph.get(node, []))):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def runtime(edges: Iterable[Edge], lazy: Iterable[tuple[str, str]] = ()) -> list[Edge]:
    """The edges that run (no TYPE_CHECKING ones), less the `lazy` function-level ones."""
    skip = set(lazy)
    return [
        e
        for e in edges
        if e.kind != "typing" and not (e.kind == "function" and (e.source, e.target) in skip)
    ]


def test_module_level_imports_form_no_cycle():
    edges = [edge for edge in import_graph() if edge.kind == "module"]
    cycle = find_cycle(edges)
    assert cycle is None, "module-level import cycle: " + " -> ".join(cycle or [])


def test_no_cycle_through_imports_inside_functions_either():
    cycle = find_cycle(runtime(import_graph(), LAZY))
    assert cycle is None, (
        "import cycle (through an import inside a function): "
        + " -> ".join(cycle or [])
        + ". Move what both need to its own home, or, if the lazy import is the design, "
        "add it to LAZY with the reason"
    )


def test_each_lazy_exception_is_a_function_level_import_that_exists():
    edges = {(e.source, e.target): e.kind for e in runtime(import_graph())}
    for pair in LAZY:
        assert edges.get(pair) == "function", f"LAZY names {pair[0]} -> {pair[1]}, which is " + (
            "not an import any more" if pair not in edges else "imported at module level"
        )


# -- What each package may import, as its __init__ docstring says --------------------------

BACKENDS = ("grpclab.cluster.sandbox", "grpclab.cluster.kube")
# Each part of grpclab, and the rest of grpclab it may import (besides itself). The most
# specific name applies: grpclab.load.runner has a rule of its own.
MAY_IMPORT = {
    "grpclab.demo": set(),
    "grpclab.load.runner": {"grpclab.demo", "grpclab.local_http", "grpclab.load.client_code"},
    "grpclab.load": {
        "grpclab.demo",
        "grpclab.local_http",
        "grpclab.cluster",
        "grpclab.xds",
        "grpclab.paths",
        "grpclab.tools.missing",
        "grpclab.measure.checks",
        "grpclab.widgets",
    },
    "grpclab.measure": {
        "grpclab.load",
        "grpclab.cluster",
        "grpclab.xds",
        "grpclab.prometheus",
        "grpclab.notes",
        "grpclab.side_by_side",
        "grpclab.widgets",
        "grpclab.tls",
    },
    # Leaves that any part may use: neither may reach a backend (the measure package uses
    # tls, so a backend import here would be one there).
    "grpclab.tls": {"grpclab.paths"},
    "grpclab.paths": set(),
}
# Backend modules a part may still import, each a machine tool (tests/test_backdoors.py).
MAY_IMPORT_BACKEND = {
    ("grpclab.measure.checks", "grpclab.cluster.sandbox.processes"),
}


def rule_of(module: str) -> str | None:
    """The MAY_IMPORT key that governs `module`, or None."""
    keys = [key for key in MAY_IMPORT if module == key or module.startswith(key + ".")]
    return max(keys, key=len, default=None)


def _within(target: str, prefix: str) -> bool:
    return target == prefix or target.startswith(prefix + ".")


def rule_breaks(edges: Iterable[Edge]) -> list[str]:
    """Each runtime import that a package's rule does not allow, in words."""
    broken = []
    for edge in runtime(edges):
        rule = rule_of(edge.source)
        if rule is None:
            continue
        allowed = MAY_IMPORT[rule] | {rule}  # and itself
        backend = any(_within(edge.target, b) for b in BACKENDS)
        if backend and (edge.source, edge.target) not in MAY_IMPORT_BACKEND:
            broken.append(f"{edge.source}:{edge.line} imports the backend {edge.target}")
        elif not any(_within(edge.target, prefix) for prefix in allowed):
            broken.append(f"{edge.source}:{edge.line} imports {edge.target} ({rule}'s rule)")
    return broken


def test_each_package_imports_only_what_its_init_says():
    assert rule_breaks(import_graph()) == []


@pytest.mark.parametrize("package", ["grpclab.demo", "grpclab.load", "grpclab.measure"])
def test_the_init_docstring_names_what_the_package_may_import(package):
    found = modules()
    doc = ast.get_docstring(ast.parse(found[package].read_text())) or ""
    assert "May import:" in doc, f"{package}/__init__.py does not say what it may import"
    claim = " ".join(doc.split("May import:", 1)[1].split())
    named = set().union(*(MAY_IMPORT[key] for key in MAY_IMPORT if _within(key, package)))
    missing = sorted(name for name in named if name not in claim)
    assert not missing, f"{package}'s docstring does not name {', '.join(missing)}"


def test_nothing_outside_tools_imports_tools_but_its_leaf_missing():
    outside = [
        f"{edge.source}:{edge.line} imports {edge.target}"
        for edge in runtime(import_graph())
        if _within(edge.target, "grpclab.tools")
        and not _within(edge.source, "grpclab.tools")
        and edge.target != "grpclab.tools.missing"
    ]
    assert outside == []


# -- The checks above find what they look for ----------------------------------------------


def fake_tree(tmp_path: Path, files: Mapping[str, str]) -> dict[str, Path]:
    for relative, text in files.items():
        path = tmp_path / PACKAGE / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return modules(tmp_path / PACKAGE)


def test_the_cycle_check_finds_and_names_a_cycle(tmp_path):
    found = fake_tree(
        tmp_path,
        {
            "__init__.py": "",
            "cluster/__init__.py": "from grpclab.measure import monitoring\n",
            "measure/__init__.py": "",
            "measure/monitoring.py": "from grpclab.cluster import Cluster\n",
        },
    )
    edges = [edge for edge in import_graph(found) if edge.kind == "module"]
    assert find_cycle(edges) == [
        "grpclab.cluster",
        "grpclab.measure.monitoring",
        "grpclab.cluster",
    ]


def test_imports_in_functions_count_and_type_checking_ones_do_not(tmp_path):
    found = fake_tree(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "def f():\n    from grpclab import b\n",
            "b.py": "import typing\nif typing.TYPE_CHECKING:\n    from grpclab import a\n",
            "c.py": "from . import a\ndef g():\n    import grpclab.c2\n",
            "c2.py": "import grpclab.c\n",
        },
    )
    edges = import_graph(found)
    kinds = {(e.source, e.target): e.kind for e in edges}
    assert kinds[("grpclab.a", "grpclab.b")] == "function"
    assert kinds[("grpclab.b", "grpclab.a")] == "typing"
    assert kinds[("grpclab.c", "grpclab.a")] == "module"  # a relative import
    assert find_cycle(runtime(edges)) == ["grpclab.c", "grpclab.c2", "grpclab.c"]
    assert find_cycle(runtime(edges, [("grpclab.c", "grpclab.c2")])) is None
    assert find_cycle(runtime([e for e in edges if e.source != "grpclab.c"])) is None


def test_the_rule_check_finds_a_part_that_imports_too_much():
    edges = [
        Edge("grpclab.load.runner", "grpclab.cluster", "module", 3),
        Edge("grpclab.demo.server", "grpclab.load", "function", 9),
        Edge("grpclab.measure.compare", "grpclab.cluster.sandbox", "function", 5),
        Edge("grpclab.load.drills", "grpclab.cluster", "module", 1),  # allowed
    ]
    assert rule_breaks(edges) == [
        "grpclab.load.runner:3 imports grpclab.cluster (grpclab.load.runner's rule)",
        "grpclab.demo.server:9 imports grpclab.load (grpclab.demo's rule)",
        "grpclab.measure.compare:5 imports the backend grpclab.cluster.sandbox",
    ]
