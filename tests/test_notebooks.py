"""The notebooks, checked by nbval from top to bottom, and what they leave behind.

Regenerate the stored outputs after changing a notebook (from the repo root):
    .venv/bin/jupyter nbconvert --to notebook --execute --inplace \
        --ExecutePreprocessor.store_widget_state=False notebooks/*.ipynb
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import parallel
import pytest
from support import REPO

from grpclab.load import node_client, private_resolver
from grpclab.tools import preflight

NOTEBOOKS = REPO / "notebooks"
SANITIZE = REPO / "tests" / "nbval_sanitize.cfg"
POLL_S = 1.0
PATH_NOTEBOOKS = sorted(NOTEBOOKS.glob("[0-9][0-9]-*.ipynb"))
MAX_BYTES = 300_000  # "well under 1 MB": widget state would add megabytes
BACKEND = os.environ.get("GRPCLAB_BACKEND", "sandbox")
BACKENDS = ("sandbox", "kind", "kubeconfig")
# A checked cell whose stored output is the sandbox's own (its binaries, its addresses, the
# translation grpclab's control plane sends). Elsewhere the cell runs but is not compared.
SANDBOX_OUTPUT = "grpclab-sandbox-output"
# On a real cluster one cell may install an add-on (istioctl install waits for istiod).
CELL_TIMEOUT_S = 240 if BACKEND == "sandbox" else 900
NOTEBOOK_TIMEOUT_S = 600 if BACKEND == "sandbox" else 2400
# What a notebook may declare in its metadata grpclab.needs, and the check its first cells
# run: each raises MissingTool, with the fix, where this machine lacks the tool.
NEEDS = {
    "node": node_client.require,
    "prometheus": preflight.require_prometheus,  # on the sandbox; on kind it is an add-on
    "user-namespaces": private_resolver.require,
}


def read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def code_cells(notebook: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def tags(cell: nbformat.NotebookNode) -> set[str]:
    return set(cell.metadata.get("tags", []))


def test_the_learner_path_starts_and_ends_where_the_readme_says():
    names = [path.stem for path in PATH_NOTEBOOKS]
    first = ["00-setup", "01-deploy-demo-server", "02-l4-imbalance", "03-headless-client-side"]
    assert names[:4] == first and names[-1] == "99-cleanup", names


# "**Next:**" followed by a markdown link; the link's target is the next notebook.
NEXT_LINK = re.compile(r"\*\*Next:\*\*\s*\[[^\]]+\]\(([^)\s]+)\)")


def next_link(notebook: nbformat.NotebookNode) -> str | None:
    """The file a notebook's "**Next:**" links to, or None when Next is not a link."""
    for cell in notebook.cells:
        if cell.cell_type == "markdown" and (match := NEXT_LINK.search(cell.source)):
            return match.group(1)
    return None


def test_next_links_lead_through_every_notebook_in_order_to_the_cleanup():
    # Derived from notebooks/, so a notebook added to the path must join the chain too.
    names = [path.name for path in PATH_NOTEBOOKS]
    assert names[-1] == "99-cleanup.ipynb", names
    links = {path.name: next_link(read(path)) for path in PATH_NOTEBOOKS[:-1]}
    expected = dict(zip(names[:-1], names[1:], strict=True))
    assert links == expected, "each Next must link the following notebook"


@pytest.mark.parametrize("path", PATH_NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_executed_small_and_without_widget_state(path):
    notebook = read(path)
    assert path.stat().st_size < MAX_BYTES, f"{path.name}: {path.stat().st_size} bytes"
    assert "widgets" not in notebook.metadata, f"{path.name} stores widget state"
    cells = code_cells(notebook)
    assert all(cell.execution_count for cell in cells), f"{path.name} has unexecuted cells"
    errors = [o for cell in cells for o in cell.outputs if o.output_type == "error"]
    assert not errors, f"{path.name} stored an error: {errors[0].ename}: {errors[0].evalue}"
    checked = [cell for cell in cells if "nbval-check-output" in tags(cell)]
    assert checked and all(cell.outputs for cell in checked), (
        f"{path.name}: every nbval-check-output cell needs a stored output to compare"
    )


@pytest.mark.parametrize("path", PATH_NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_follows_the_house_shape(path):
    notebook = read(path)
    opening = notebook.cells[0].source
    assert "What you will learn" in opening and "How long it takes" in opening, path.name
    text = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "markdown")
    for part in ("## What you saw", "## Pitfalls", "**Next:**"):
        assert part in text, f"{path.name} lacks {part!r}"
    for cell in code_cells(notebook):
        # Manifests live in cluster/manifests/ and are shown from there, never written inline.
        assert "apiVersion:" not in cell.source, f"{path.name}: inline manifest"
    if path.stem != "99-cleanup":
        assert code_cells(notebook)[-1].source.strip() == "lab.down()", (
            f"{path.name}: the last cell must stop the notebook's cluster"
        )


def _process_table() -> dict[int, tuple[int, str, str]]:
    """pid -> (parent pid, start time in clock ticks, state) for every process."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses; the fields after its last ")" do not.
        fields = stat.rsplit(")", 1)[1].split()
        table[int(entry.name)] = (int(fields[1]), fields[19], fields[0])
    return table


def _descendants(root: int, table: dict[int, tuple[int, str, str]]) -> dict[int, str]:
    """pid -> start time of every process below `root`."""
    children: dict[int, list[int]] = {}
    for pid, (parent, _, _) in table.items():
        children.setdefault(parent, []).append(pid)
    found, stack = {}, list(children.get(root, []))
    while stack:
        pid = stack.pop()
        found[pid] = table[pid][1]
        stack += children.get(pid, [])
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "?"


def backends_of(notebook: nbformat.NotebookNode) -> tuple[str, ...]:
    """The backends a notebook runs on: notebook metadata grpclab.backends, default all."""
    return tuple(notebook.metadata.get("grpclab", {}).get("backends", BACKENDS))


def needs_of(notebook: nbformat.NotebookNode) -> tuple[str, ...]:
    """What a notebook runs besides grpclab: notebook metadata grpclab.needs, default none."""
    return tuple(notebook.metadata.get("grpclab", {}).get("needs", ()))


def unmet_needs(notebook: nbformat.NotebookNode) -> list[str]:
    """Why this machine cannot run the notebook: the MissingTool message of each unmet need."""
    unmet = []
    for need in needs_of(notebook):
        try:
            NEEDS[need]()
        except preflight.MissingTool as missing:
            unmet.append(str(missing))
    return unmet


def for_backend(notebook: nbformat.NotebookNode, backend: str) -> nbformat.NotebookNode:
    """The notebook as nbval must check it on `backend` (a copy; the original is unchanged)."""
    copy = nbformat.from_dict(notebook)
    if backend == "sandbox":
        return copy
    for cell in code_cells(copy):
        if SANDBOX_OUTPUT in tags(cell):
            cell.metadata["tags"] = [t for t in cell.metadata["tags"] if t != "nbval-check-output"]
    return copy


def notebook_to_run(path: Path, backend: str) -> Path:
    """The file nbval runs: the notebook itself on the sandbox, else an adjusted copy.

    The copy sits in a sibling of notebooks/, so the notebooks' relative paths
    (../cluster/manifests) still resolve.
    """
    if backend == "sandbox":
        return path
    folder = REPO / f".nbval-{backend}"
    folder.mkdir(exist_ok=True)
    copy = folder / path.name
    nbformat.write(for_backend(read(path), backend), copy)
    return copy


def run_nbval(notebooks: Path, log: Path) -> tuple[int, dict[int, str]]:
    """Run nbval on a notebook or a folder; returns its exit code and every process it started."""
    # The kernels and their sandboxes' pods and proxies all descend from the pytest started
    # here; polling its process tree records them, so a leftover is found by PID and start
    # time and never mistaken for a process of another test run.
    argv = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "--nbval-lax",
        "--nbval-current-env",
        f"--nbval-sanitize-with={SANITIZE}",
        f"--nbval-cell-timeout={CELL_TIMEOUT_S}",
        "-q",
        str(notebooks),
    ]
    seen: dict[int, str] = {}
    with open(log, "wb") as output:
        process = subprocess.Popen(
            argv, cwd=REPO, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            while process.poll() is None:
                seen.update(_descendants(process.pid, _process_table()))
                # Once a second: a scan reads every process's stat, and under make test the
                # machine runs some hundreds (six notebooks' sandboxes, Chromium...). Only a
                # process started and orphaned between two scans could go unseen; the
                # kernel's children live as long as it does.
                time.sleep(POLL_S)
        finally:
            if process.poll() is None:  # interrupted: end the run we started, by its group id
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    return process.returncode, seen


def _still_running(seen: dict[int, str]) -> list[int]:
    table = _process_table()
    return [
        pid
        for pid, started in seen.items()
        # Same PID and start time: the same process, not a new one that reused the PID.
        if pid in table and table[pid][1] == started and table[pid][2] != "Z"
    ]


def test_a_process_a_notebook_leaves_behind_is_found(tmp_path):
    # What the nbval test's leftover check rests on: a process the kernel started and left
    # running (in a session of its own, as the sandbox starts pods) is seen by the polling.
    cell = (
        "import subprocess, time\n"
        "subprocess.Popen(['sleep', '60'], start_new_session=True)\n"
        f"time.sleep({POLL_S * 2})  # the polling sees it before the kernel goes"
    )
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell)])
    path = tmp_path / "leaves-a-process.ipynb"
    nbformat.write(notebook, path)
    returncode, seen = run_nbval(path, tmp_path / "nbval.log")
    leftover = _still_running(seen)
    try:
        assert returncode == 0, (tmp_path / "nbval.log").read_text()[-2000:]
        assert [_cmdline(pid).strip() for pid in leftover] == ["sleep 60"]
    finally:
        for pid in leftover:
            os.kill(pid, signal.SIGKILL)


@pytest.mark.timeout(NOTEBOOK_TIMEOUT_S)
@pytest.mark.parametrize("path", PATH_NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_passes_nbval_and_leaves_no_process(path, tmp_path):
    runs_on = backends_of(read(path))
    if BACKEND not in runs_on:
        pytest.skip(
            f"{path.name} runs on {', '.join(runs_on)} only (its metadata grpclab.backends)"
        )
    unmet = unmet_needs(read(path))
    if unmet:
        pytest.skip(f"{path.name} cannot run here (its metadata grpclab.needs): {' '.join(unmet)}")
    log = tmp_path / "nbval.log"
    returncode, seen = run_nbval(notebook_to_run(path, BACKEND), log)
    # Give the kernel's children a moment to take their parent-death signal.
    deadline = time.monotonic() + 10
    while _still_running(seen) and time.monotonic() < deadline:
        time.sleep(0.2)
    leftover = _still_running(seen)
    report = {pid: _cmdline(pid) for pid in leftover}
    for pid in leftover:  # we started them (they descend from our run): end them by PID
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-80:])
    assert returncode == 0, f"nbval failed on {path.name} (exit {returncode}):\n{tail}"
    assert seen, f"{path.name}: no kernel process was ever seen: did nbval run anything?"
    assert not leftover, f"processes left after {path.name} ran: {report}"


def test_each_nbval_run_is_a_group_of_its_own_on_the_xdist_workers(request):
    # tests/parallel.py finds the nbval runs by their node ids: a rename here must reach it.
    module = request.node.nodeid.split("::")[0]
    nodeid = f"{module}::{test_notebook_passes_nbval_and_leaves_no_process.__name__}[04-istio]"
    assert parallel.group_of(nodeid) == "nbval:04-istio"
    assert parallel.group_of(request.node.nodeid) == module  # the rest: one group per module


def test_the_notebooks_groups_start_first_then_the_longest():
    # Issue 19 times the nbval runs from the first to the last: they start before any other
    # group, with the browser test (a rename of its file must reach tests/parallel.py).
    assert (REPO / parallel.BROWSER_GROUP).is_file()
    seconds = {
        "nbval:00-setup": 12,
        parallel.BROWSER_GROUP: 190,
        "lab:06": 98,
        "tests/test_x.py": 1,
    }
    order = sorted(seconds, key=lambda group: parallel.start_order(group, seconds))
    assert order == [parallel.BROWSER_GROUP, "nbval:00-setup", "lab:06", "tests/test_x.py"]
    # A worker that holds a long group gets the shortest next, not a notebook to hold back.
    expected = parallel.seconds_of(seconds)
    assert parallel.next_group(order[1:], [parallel.BROWSER_GROUP], expected) == "tests/test_x.py"
    assert parallel.next_group(order[2:], ["nbval:00-setup"], expected) == "lab:06"
    assert parallel.next_group(order[1:], [], expected) == "nbval:00-setup"


def test_notebook_backends_and_sandbox_output_tags_are_used_as_documented():
    for path in PATH_NOTEBOOKS:
        notebook = read(path)
        assert set(backends_of(notebook)) <= set(BACKENDS), path.name
        assert "sandbox" in backends_of(notebook), f"{path.name}: the sandbox runs every notebook"
        assert set(needs_of(notebook)) <= set(NEEDS), f"{path.name}: unknown grpclab.needs"
        for cell in code_cells(notebook):
            if SANDBOX_OUTPUT in tags(cell):
                assert "nbval-check-output" in tags(cell), (
                    f"{path.name}: {SANDBOX_OUTPUT} marks a checked cell; this one is not checked"
                )


def test_on_kind_sandbox_output_cells_run_unchecked_and_the_rest_stay_checked():
    notebook = read(NOTEBOOKS / "00-setup.ipynb")
    marked = [
        i for i, c in enumerate(notebook.cells) if SANDBOX_OUTPUT in c.metadata.get("tags", [])
    ]
    assert marked, "00-setup's machine check is sandbox output"
    checked_before = {
        i
        for i, c in enumerate(notebook.cells)
        if "nbval-check-output" in c.metadata.get("tags", [])
    }
    kind = for_backend(notebook, "kind")
    checked_on_kind = {
        i for i, c in enumerate(kind.cells) if "nbval-check-output" in c.metadata.get("tags", [])
    }
    assert checked_on_kind == checked_before - set(marked) and checked_on_kind
    assert for_backend(notebook, "sandbox") == notebook
    # The stored notebook is untouched.
    assert {
        i
        for i in marked
        if "nbval-check-output" in read(NOTEBOOKS / "00-setup.ipynb").cells[i].metadata["tags"]
    }


def nbval_test_of(stem: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """This file's nbval test of one notebook, run as `make test` would run it, with `env`."""
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", "-q", __file__]
    return subprocess.run(
        [*argv, "-k", f"passes_nbval and {stem}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_sandbox_only_notebook_is_skipped_elsewhere_with_its_reason():
    notebook = read(NOTEBOOKS / "07-xds-proxyless.ipynb")
    assert backends_of(notebook) == ("sandbox",)
    assert "kind" in backends_of(read(NOTEBOOKS / "04-istio.ipynb"))
    # What the kind workflow sees: the nbval run of 07 is skipped, and says why.
    done = nbval_test_of("07-xds", {**os.environ, "GRPCLAB_BACKEND": "kind"})
    assert "1 skipped" in done.stdout, done.stdout[-2000:]
    assert "07-xds-proxyless.ipynb runs on sandbox only" in done.stdout


def test_a_notebook_needing_a_tool_the_machine_lacks_is_skipped_with_the_fix(tmp_path):
    assert needs_of(read(NOTEBOOKS / "11-other-languages.ipynb")) == ("node", "user-namespaces")
    assert needs_of(read(NOTEBOOKS / "09-monitoring.ipynb")) == ("prometheus",)
    # What `make test` sees on a machine without Node: the nbval run of 11 is skipped, with
    # the fix the notebook's first cell would show.
    done = nbval_test_of("11-other", {**os.environ, "PATH": str(tmp_path)})  # no node on it
    assert "1 skipped" in done.stdout, done.stdout[-2000:]
    assert "11-other-languages.ipynb cannot run here (its metadata grpclab.needs): " in done.stdout
    assert "This notebook runs a Node.js gRPC client. Node.js is not installed" in done.stdout
