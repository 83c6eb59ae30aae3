"""Notebooks 02, 03 and 10 in JupyterLab in a real browser: every chart draws, every table fits.

One JupyterLab serves the notebooks as a subprocess on a free loopback port with a random
token, over a temporary root that holds copies of them (running them in the browser would
otherwise rewrite the committed files). The copies are signed with a notary kept in the
server's own temporary state, so JupyterLab opens them trusted, as a learner's own run.
Debian's Chromium is driven through Playwright's Python package; nothing is downloaded.

Notebook 03 makes every kind of grpclab live chart (DistributionChart, TimelineChart and a
Playground; a test here checks that it still does): it is opened, its outputs cleared and
Run All clicked, as a learner would. Then, for every grpclab chart:

- its live view reported that it drew (the page-wide registry chart.js keeps), with data;
- its final figure (the saved output that replaces the live view) says "(done)" and its
  traces hold data.

The other notebooks add no kind of live chart: 02 makes DistributionCharts only, and 10
(the comparison) none. What the browser adds for them is how their stored outputs look, and
notebooks are stored executed (nbval runs them elsewhere). So each is opened without running
a cell, as a new tab of the same page (a double click in the file browser, as a learner opens
the next notebook: the app loads once; JupyterLab may start its kernel on open, and nothing
is sent to it), and its stored outputs are read as rendered: each stored plotly figure (a
chart's final figure) must draw with a title and data, and the page must show as many HTML
tables and figures as the file stores. The stored run must have run every cell, hold no
error, and hold a table or a figure. Notebook 02 must also show the L4 lesson: one pod
served every call of the one channel.

In every notebook, each HTML table in an output (10's comparison) must fit the output area
at 1400 px with the file browser open, and no word in it may wrap mid-word.

Screenshots of every chart land in artifacts/browser/<notebook>/, and the websocket bytes
the page received while each notebook was in front are printed (`pytest -s` shows them;
bench/README.md has the measured numbers). $GRPCLAB_BROWSER_NOTEBOOKS (paths, separated by
":") replaces the three notebooks, each run if it makes a live chart and only opened
otherwise, e.g. to show that a broken chart cell, or a table too wide, fails this test.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import pytest
import yaml
from nbformat.sign import NotebookNotary
from support import REPO

NOTEBOOKS = [
    REPO / "notebooks" / name
    for name in (
        "02-l4-imbalance.ipynb",
        "03-headless-client-side.ipynb",
        "10-compare-solutions.ipynb",
    )
]
CHOSEN = os.environ.get("GRPCLAB_BROWSER_NOTEBOOKS")
if CHOSEN:
    NOTEBOOKS = [Path(p) for p in CHOSEN.split(":")]
# Run All where it shows what the stored file cannot: live charts drawing. One notebook that
# makes every kind of chart is enough: a live run in the browser costs what its nbval run
# costs once more, and the suite is CPU-bound.
RUN_LIVE = ("03-headless-client-side.ipynb",)
CHART_KINDS = ("DistributionChart", "TimelineChart", "Playground")
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "artifacts" / "browser"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# JupyterLab settings for this run only: no news prompt over the page, the notebook's kernel
# starts without a dialog, and every cell stays attached to the DOM (off-screen ones too).
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false"},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {
        "autoStartDefaultKernel": True,
        "windowingMode": "none",
    },
}
RUN_TIMEOUT_S = 420
# A notebook opened without running: its stored outputs render in seconds on a quiet machine.
OPEN_TIMEOUT_S = 120
# Waits for the page itself (its first cell, an idle kernel, Run All taking hold): under 10 s
# on a quiet machine; at load 20 on 2 cores a page took over 90 s to show its first cell.
PAGE_TIMEOUT_MS = 240_000
PLOTLY_MIME = "application/vnd.plotly.v1+json"
# JupyterLab printed nothing in 90 s once, under make test at load 16 on 2 cores.
SERVER_START_TIMEOUT_S = 240
# A grpclab chart's title carries its run: "<title><br><sup>N OK, N failed, T s (state)</sup>".
RUN_SUBTITLE = re.compile(r"<sup>(\d+) OK, (\d+) failed, [\d.]+ s \((done|running)\)</sup>")

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"{CHROMIUM} not found: apt-get install -y chromium (.ci/run does)",
)


def expected_pods() -> int:
    """The replicas of the base Deployment that notebook 02 applies."""
    text = (REPO / "cluster" / "manifests" / "base" / "deployment.yaml").read_text()
    return yaml.safe_load(text)["spec"]["replicas"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def code_of(path: Path) -> str:
    notebook = nbformat.read(path, as_version=4)
    return "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")


def charts_made(path: Path) -> list[str]:
    """The kind of each grpclab chart the notebook makes (a Playground holds one)."""
    return re.findall(rf"\b({'|'.join(CHART_KINDS)})\(", code_of(path))


def expected_live_charts(path: Path) -> int:
    return len(charts_made(path))


def runs_live(path: Path) -> bool:
    """RUN_LIVE's notebooks; with GRPCLAB_BROWSER_NOTEBOOKS, each that makes a live chart."""
    return expected_live_charts(path) > 0 if CHOSEN else path.name in RUN_LIVE


def stored_outputs(path: Path) -> dict[str, int]:
    """The HTML tables, plotly figures and errors in the notebook's stored outputs."""
    tables = graphs = errors = 0
    for cell in nbformat.read(path, as_version=4).cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            tables += str(data.get("text/html", "")).count("<table")
            graphs += PLOTLY_MIME in data
            errors += output.get("output_type") == "error"
    return {"tables": tables, "graphs": graphs, "errors": errors}


@pytest.fixture(scope="module")
def jupyter_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The server's settings, workspaces, runtime files and notary: none in the user's own."""
    return tmp_path_factory.mktemp("jupyter-state")


@pytest.fixture(scope="module")
def lab_root(tmp_path_factory: pytest.TempPathFactory, jupyter_state: Path) -> Path:
    """A root for JupyterLab: notebooks/<each notebook> and cluster/ as the notebooks expect.

    Each copy is signed with the server's notary, so its stored outputs render trusted (as
    a learner's own run's do) and a table keeps every style it was given.
    """
    root = tmp_path_factory.mktemp("lab-root")
    (root / "notebooks").mkdir()
    (jupyter_state / "notary").mkdir()
    notary = NotebookNotary(data_dir=str(jupyter_state / "notary"))
    for source in NOTEBOOKS:
        copy = root / "notebooks" / source.name
        shutil.copy(source, copy)
        notary.sign(nbformat.read(copy, as_version=4))
    (root / "cluster").symlink_to(REPO / "cluster")  # ../cluster/manifests from notebooks/
    return root


@pytest.fixture(scope="module")
def jupyter_lab(lab_root: Path, jupyter_state: Path) -> Iterator[tuple[str, str]]:
    """One JupyterLab server on 127.0.0.1 for every notebook; yields its URL and token."""
    state = jupyter_state
    for name, values in LAB_SETTINGS.items():
        path = state / "settings" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    port, token = free_port(), secrets.token_hex(24)
    argv = [
        str(REPO / ".venv" / "bin" / "jupyter"),
        "lab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",  # the port we chose, or a loud failure
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={lab_root}",
        f"--LabApp.user_settings_dir={state / 'settings'}",
        f"--LabApp.workspaces_dir={state / 'workspaces'}",
        f"--NotebookNotary.data_dir={state / 'notary'}",
        "--LabApp.extension_manager=readonly",  # no package index lookups
        "--allow-root",  # CI containers run as root; harmless otherwise
    ]
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(state / "runtime"))
    log_path = state / "jupyter.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(argv, cwd=lab_root, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            try:
                urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2
                ).close()
                break
            except OSError:
                tail = log_path.read_text(errors="replace")[-2000:]
                assert server.poll() is None, f"JupyterLab exited:\n{tail}"
                assert time.monotonic() < deadline, (
                    f"JupyterLab did not answer in {SERVER_START_TIMEOUT_S} s:\n{tail}"
                )
                time.sleep(0.3)
        yield f"http://127.0.0.1:{port}", token
    finally:
        # SIGTERM lets the server shut its kernel down; the kernel's sandbox takes its pods
        # and proxies with it (parent-death signal).
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


# The notebook in front: the one notebook panel of the main area that is not hidden.
PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden) "


def run_all_cells(page) -> None:
    """Clear the stored outputs, Run → Run All Cells, and wait until no cell is queued."""
    page.wait_for_selector(f"{PANEL}.jp-Cell", timeout=PAGE_TIMEOUT_MS)
    idle = "() => document.querySelector('.jp-StatusBar-TextItem') && [...document.querySelectorAll('.jp-StatusBar-TextItem')].some(e => /\\|\\s*Idle/.test(e.textContent))"  # noqa: E501
    page.wait_for_function(idle, timeout=PAGE_TIMEOUT_MS)
    page.click(".lm-MenuBar-itemLabel:text-is('Edit')")
    page.click(".lm-Menu-itemLabel:text-is('Clear Outputs of All Cells')")
    page.click(".lm-MenuBar-itemLabel:text-is('Run')")
    page.click(".lm-Menu-itemLabel:text-is('Run All Cells')")
    queued = f"() => [...document.querySelectorAll('{PANEL}.jp-InputPrompt')].some(e => e.textContent.includes('*'))"  # noqa: E501
    page.wait_for_function(queued, timeout=PAGE_TIMEOUT_MS)
    # Done when nothing is queued and the kernel is idle; an error stops Run All and
    # un-queues the rest, which also ends the wait (the prompts then show what ran).
    page.wait_for_function(f"() => !({queued})() && ({idle})()", timeout=RUN_TIMEOUT_S * 1000)


# The stored outputs drawn: as many output tables, and plotly graphs holding their data, as the
# file stores (plotly's renderer draws a saved figure a moment after the cell is attached).
STORED_SHOWN = """
([tables, graphs]) => {
  const panel = '.jp-NotebookPanel:not(.lm-mod-hidden) ';
  const drawn = [...document.querySelectorAll(panel + '.js-plotly-plot')].filter(g => g.data);
  return document.querySelectorAll(panel + '.jp-OutputArea-output table').length >= tables
    && drawn.length >= graphs;
}
"""


def show_stored_outputs(page, stored: dict[str, int]) -> None:
    """Wait until the opened notebook shows its stored tables and figures; run no cell."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.wait_for_selector(f"{PANEL}.jp-Cell", timeout=PAGE_TIMEOUT_MS)
    try:
        page.wait_for_function(
            STORED_SHOWN, arg=[stored["tables"], stored["graphs"]], timeout=OPEN_TIMEOUT_S * 1000
        )
    except PlaywrightTimeout:
        pass  # the counts read next say what did not show


def prompts(page) -> list[str]:
    return page.eval_on_selector_all(
        f"{PANEL}.jp-CodeCell .jp-InputPrompt",
        "els => els.map(e => e.textContent.trim())",
    )


# Every plotly graph of the notebook, read from the page: plotly's own data and layout on the
# graph div (live views and saved figures alike), scrolled into view for its screenshot.
READ_GRAPHS = """
() => [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .js-plotly-plot')]
  .map((graph, index) => {
    graph.dataset.testIndex = String(index);
    return {
      index,
      title: (graph.layout && graph.layout.title && graph.layout.title.text) || '',
      live: Boolean(graph.closest('.grpclab-chart')),
      notes: ((graph.layout && graph.layout.annotations) || []).map(a => a.text),
      traces: (graph.data || []).map(t => ({
        type: t.type, name: t.name || '', points: Array.from(t.y || []).length,
      })),
    };
  })
"""
# What chart.js's live views reported on this page: title -> {ready, draws, points}.
READ_LIVE_VIEWS = "() => globalThis.__grpclabCharts || {}"
# Every HTML table in the outputs (notebook 10's comparison): its width against the room the
# output area gives it beside the open file browser, and any word that wraps mid-word.
READ_TABLES = """
() => {
  const browser = document.querySelector('.jp-FileBrowser');
  const open = Boolean(browser && browser.getBoundingClientRect().width > 0);
  const panel = '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output table';
  return [...document.querySelectorAll(panel)].map(table => {
    const split = [];
    for (const cell of table.querySelectorAll('th, td')) {
      const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
      for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        for (const word of node.data.matchAll(/\\S+/g)) {
          const range = document.createRange();
          range.setStart(node, word.index);
          range.setEnd(node, word.index + word[0].length);
          const tops = new Set([...range.getClientRects()].filter(r => r.width > 0)
            .map(r => Math.round(r.top)));
          if (tops.size > 1) split.push(word[0]);
        }
      }
    }
    return {
      header: table.querySelector('th') ? table.querySelector('th').textContent : '',
      width: table.scrollWidth,
      room: table.closest('.jp-OutputArea-output').clientWidth,
      split, fileBrowserOpen: open,
    };
  });
}
"""


def base_title(title: str) -> str:
    return title.split("<br>")[0]


def count_websocket_bytes(page) -> dict[str, int]:
    """Bytes the page receives and sends over its websockets (the kernel's channels)."""
    totals = {"received": 0, "sent": 0}

    def size(payload) -> int:
        return len(payload.encode() if isinstance(payload, str) else payload)

    def watch(ws) -> None:
        ws.on(
            "framereceived", lambda p: totals.__setitem__("received", totals["received"] + size(p))
        )
        ws.on("framesent", lambda p: totals.__setitem__("sent", totals["sent"] + size(p)))

    page.on("websocket", watch)
    return totals


@dataclass
class LabTab:
    """The one Chromium page every notebook opens in, as a learner's one browser tab of
    JupyterLab, with what it has seen so far."""

    page: Any
    websocket_bytes: dict[str, int]
    console: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def lab_tab() -> Iterator[LabTab]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = chromium.new_page(viewport={"width": 1400, "height": 1000})
            tab = LabTab(page, count_websocket_bytes(page))
            page.on(
                "console",
                lambda m: tab.console.append(f"{time.monotonic():.1f} {m.type}: {m.text}"),
            )
            page.on(
                "pageerror", lambda e: tab.console.append(f"{time.monotonic():.1f} pageerror: {e}")
            )
            yield tab
        finally:
            chromium.close()


# The main area's tab in front is the notebook named `name`.
CURRENT_TAB_IS = """
(name) => [...document.querySelectorAll('.lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current')]
  .some(tab => tab.textContent.includes(name))
"""


def open_from_file_browser(page, path: Path) -> None:
    """Open `path` as a new tab of the running JupyterLab: a double click in its file
    browser (which shows notebooks/, where the first notebook was opened), as a learner
    opens the next notebook, without loading the app again."""
    name = path.name
    page.locator(".jp-DirListing-item").filter(has_text=name).dblclick(timeout=PAGE_TIMEOUT_MS)
    page.wait_for_function(CURRENT_TAB_IS, arg=name, timeout=PAGE_TIMEOUT_MS)


def open_notebook(
    tab: LabTab, jupyter_lab: tuple[str, str], path: Path, live: bool, first: bool
) -> dict:
    """Open `path` in JupyterLab (the app's first page load if `first`, else a new tab of it),
    Run All if `live` (else run nothing), and read back every chart and table of its tab;
    screenshots as artifacts."""
    base, token = jupyter_lab
    shots = ARTIFACTS / path.stem
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir(parents=True)
    page = tab.page
    websocket_before = dict(tab.websocket_bytes)
    console_from = len(tab.console)
    started = time.monotonic()
    if first:
        page.goto(f"{base}/lab/tree/notebooks/{path.name}?reset&token={token}")
    else:
        open_from_file_browser(page, path)
    if live:
        run_all_cells(page)
    else:
        show_stored_outputs(page, stored_outputs(path))
    seconds = time.monotonic() - started
    graphs = page.evaluate(READ_GRAPHS)
    for graph in graphs:
        output = page.locator(f"{PANEL}.js-plotly-plot[data-test-index='{graph['index']}']")
        output.scroll_into_view_if_needed()
        time.sleep(0.3)  # let the scrolled-to chart paint before the picture
        output.screenshot(path=str(shots / f"chart-{graph['index']:02d}.png"))
    page.screenshot(path=str(shots / "page.png"))
    (shots / "console.log").write_text("\n".join(tab.console[console_from:]) + "\n")
    return {
        "prompts": prompts(page),
        "graphs": graphs,
        "live_views": page.evaluate(READ_LIVE_VIEWS),
        "websocket": {k: tab.websocket_bytes[k] - websocket_before[k] for k in websocket_before},
        "seconds": seconds,
        "summaries": page.locator(f"{PANEL}.jp-OutputArea-output").all_inner_texts(),
        "tables": page.evaluate(READ_TABLES),
    }


def chart_problems(path: Path, run: dict, live: bool) -> list[str]:
    """Every way the notebook's charts failed to draw, in words (empty: all drew).

    Not `live`: the notebook was only opened, so only its saved figures are checked."""
    problems = []
    live_charts = []
    for graph in run["graphs"]:
        title = graph["title"]
        if not title:
            problems.append(f"chart {graph['index']} drew blank: no title (plotly's empty axes)")
            continue
        if not any(trace["points"] for trace in graph["traces"]):
            problems.append(f"chart {graph['index']} {base_title(title)!r}: no trace holds data")
        if RUN_SUBTITLE.search(title) or graph["live"]:
            live_charts.append(graph)
    if not live:
        return problems
    for graph in live_charts:
        title = graph["title"]
        run_state = RUN_SUBTITLE.search(title)
        playground = "(playground)" in title  # no run until a learner clicks Run
        if not playground and (run_state is None or run_state.group(3) != "done"):
            problems.append(f"chart {graph['index']} {base_title(title)!r} has no (done) subtitle")
        if any(note.startswith("scale to") for note in graph["notes"]) and not any(
            note in ("new pods serving", "the new pods served nothing") for note in graph["notes"]
        ):
            problems.append(f"{base_title(title)!r}: a scale-up timeline without its pickup mark")
        view = run["live_views"].get(base_title(title))
        if view is None:
            problems.append(f"{base_title(title)!r}: its live view never reached the page")
    # A live view draws once the page has placed it; on a starved machine a run of a few
    # seconds can end (and its saved figure replace the view) before that. So each view
    # must have started, and the front end must have drawn live data in at least one.
    drew = [v for v in run["live_views"].values() if v.get("ready") and v.get("points")]
    if live_charts and not drew:
        problems.append("no live view reported that it drew data: the chart front end is broken")
    expected = expected_live_charts(path)
    if len(live_charts) != expected:
        found = [base_title(g["title"]) for g in live_charts]
        problems.append(f"{expected} grpclab charts made, {len(live_charts)} drawn: {found}")
    return problems


def stored_problems(path: Path, run: dict) -> list[str]:
    """Where an opened notebook's stored run failed, lacks a table, or does not show."""
    stored = stored_outputs(path)
    problems = []
    if stored.pop("errors"):
        problems.append("its stored run raised: a stored output is an error")
    if not stored["tables"] and not stored["graphs"]:
        problems.append("it stores no HTML table and no figure: opened unrun, it shows nothing")
    shown = {"tables": len(run["tables"]), "graphs": len(run["graphs"])}
    if shown != stored:
        problems.append(f"the file stores {stored}, the page shows {shown}")
    return problems


LIVE = [path for path in NOTEBOOKS if runs_live(path)]


def test_the_notebooks_run_live_make_every_kind_of_chart():
    made = {kind for path in LIVE for kind in charts_made(path)}
    assert made == set(CHART_KINDS), f"no notebook run live makes {set(CHART_KINDS) - made}"


@pytest.mark.timeout(
    RUN_TIMEOUT_S * len(LIVE)
    + OPEN_TIMEOUT_S * (len(NOTEBOOKS) - len(LIVE))
    + PAGE_TIMEOUT_MS // 1000 * len(NOTEBOOKS)
    + SERVER_START_TIMEOUT_S
    + 240
)
def test_every_chart_draws_live_and_is_saved_with_its_final_run(lab_tab, jupyter_lab):
    report, problems = {}, {}
    # The live runs first, on the app's first load; the others open as tabs beside them.
    in_order = sorted(NOTEBOOKS, key=lambda path: path not in LIVE)
    for index, path in enumerate(in_order):
        live = path in LIVE
        run = open_notebook(lab_tab, jupyter_lab, path, live, first=index == 0)
        report[path.stem] = {
            "ran": live,
            "seconds": round(run["seconds"]),
            "websocket_bytes_received": run["websocket"]["received"],
            "websocket_bytes_sent": run["websocket"]["sent"],
            "charts": len(run["graphs"]),
            "live_views": run["live_views"] if live else {},  # the registry is page-wide
            "notes": {base_title(g["title"]): g["notes"] for g in run["graphs"] if g["notes"]},
        }
        print(f"browser {path.stem}: {json.dumps(report[path.stem])}")
        found = chart_problems(path, run, live)
        if not live:
            found += stored_problems(path, run)
        for table in run["tables"]:
            # At 1400 px with the file browser open, a table fits and no word wraps mid-word.
            if not table["fileBrowserOpen"] or table["width"] > table["room"] or table["split"]:
                found.append(f"table {table['header']!r} does not fit: {table}")
        if not all(re.fullmatch(r"\[\d+\]:", p) for p in run["prompts"]):
            found.insert(0, f"not every cell ran: {run['prompts']}")
        if path.stem.startswith("02-"):
            # The L4 chart tells the truth: one pod took every call of the one channel.
            lesson = f"pods that served requests: 1 of {expected_pods()}"
            if not any(lesson in text for text in run["summaries"]):
                found.append(f"no output says {lesson!r}")
        if found:
            problems[path.name] = found
    (ARTIFACTS / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    assert not problems, json.dumps(problems, indent=2) + f"\n(screenshots in {ARTIFACTS})"
