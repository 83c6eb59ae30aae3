"""Notebook 02 run in JupyterLab in a real browser: the live chart must render and tell the truth.

JupyterLab runs as a subprocess on a free loopback port with a random token, over a
temporary root that holds a copy of the notebook (running it in the browser would
otherwise rewrite the committed file). Debian's Chromium is driven through Playwright's
Python package; nothing is downloaded. $GRPCLAB_BROWSER_NOTEBOOK names another notebook
to open instead (used to show that a broken chart cell fails this test).
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
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "notebooks" / "02-l4-imbalance.ipynb"
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = REPO / "artifacts" / "browser" / "02-l4-imbalance.png"
CHART_TITLE = "one channel through the ClusterIP Service"
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
RUN_TIMEOUT_S = 300

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


@pytest.fixture
def lab_root(tmp_path: Path) -> Path:
    """A root for JupyterLab: notebooks/<the notebook> and cluster/ as the notebook expects."""
    source = Path(os.environ.get("GRPCLAB_BROWSER_NOTEBOOK", NOTEBOOK))
    (tmp_path / "notebooks").mkdir()
    shutil.copy(source, tmp_path / "notebooks" / NOTEBOOK.name)
    (tmp_path / "cluster").symlink_to(REPO / "cluster")  # ../cluster/manifests from notebooks/
    return tmp_path


@pytest.fixture
def jupyter_lab(lab_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A JupyterLab server on 127.0.0.1; yields its base URL with the token as a query."""
    state = tmp_path_factory.mktemp("jupyter-state")
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
        "--LabApp.extension_manager=readonly",  # no package index lookups
        "--allow-root",  # CI containers run as root; harmless otherwise
    ]
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(state / "runtime"))
    log_path = state / "jupyter.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(argv, cwd=lab_root, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2
                ).close()
                break
            except OSError:
                tail = log_path.read_text(errors="replace")[-2000:]
                assert server.poll() is None, f"JupyterLab exited:\n{tail}"
                assert time.monotonic() < deadline, f"JupyterLab did not answer in 90 s:\n{tail}"
                time.sleep(0.3)
        yield f"http://127.0.0.1:{port}/lab/tree/notebooks/{NOTEBOOK.name}?reset&token={token}"
    finally:
        # SIGTERM lets the server shut its kernel down; the kernel's sandbox takes its pods
        # and proxies with it (parent-death signal).
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def run_all_cells(page) -> None:
    """Clear the stored outputs, Run → Run All Cells, and wait until no cell is queued."""
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=90_000)
    idle = "() => document.querySelector('.jp-StatusBar-TextItem') && [...document.querySelectorAll('.jp-StatusBar-TextItem')].some(e => /\\|\\s*Idle/.test(e.textContent))"  # noqa: E501
    page.wait_for_function(idle, timeout=90_000)
    page.click(".lm-MenuBar-itemLabel:text-is('Edit')")
    page.click(".lm-Menu-itemLabel:text-is('Clear Outputs of All Cells')")
    page.click(".lm-MenuBar-itemLabel:text-is('Run')")
    page.click(".lm-Menu-itemLabel:text-is('Run All Cells')")
    queued = "() => [...document.querySelectorAll('.jp-InputPrompt')].some(e => e.textContent.includes('*'))"  # noqa: E501
    page.wait_for_function(queued, timeout=30_000)
    # Done when nothing is queued and the kernel is idle; an error stops Run All and
    # un-queues the rest, which also ends the wait (the prompts then show what ran).
    page.wait_for_function(f"() => !({queued})() && ({idle})()", timeout=RUN_TIMEOUT_S * 1000)


def prompts(page) -> list[str]:
    return page.eval_on_selector_all(
        ".jp-CodeCell .jp-InputPrompt", "els => els.map(e => e.textContent.trim())"
    )


# What the chart holds, read from the page: plotly's own data and layout on the graph div,
# and each drawn bar's SVG path with its height in pixels.
READ_CHART = """
(title) => {
  const graph = [...document.querySelectorAll('.js-plotly-plot')]
    .find(g => ((g.layout && g.layout.title && g.layout.title.text) || '').startsWith(title));
  if (!graph) return null;
  graph.scrollIntoView({block: "center"});
  const bars = [...graph.querySelectorAll('.barlayer .trace.bars .point path')];
  return {
    title: graph.layout.title.text,
    traces: graph.data.map(t => ({type: t.type, x: Array.from(t.x), y: Array.from(t.y)})),
    barHeights: bars.map(p => p.getBBox().height),
  };
}
"""


@pytest.mark.timeout(RUN_TIMEOUT_S + 240)
def test_l4_chart_renders_one_bar_per_pod_with_one_pod_taking_everything(jupyter_lab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(jupyter_lab)
            run_all_cells(page)
            chart = page.evaluate(READ_CHART, CHART_TITLE)
            time.sleep(0.5)  # let the scrolled-to chart paint before the picture
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT))
            ran = prompts(page)
            summary = page.locator(".jp-OutputArea-output", has_text="pods that served requests")
            summary_text = summary.first.inner_text() if summary.count() else None
        finally:
            browser.close()

    assert all(re.fullmatch(r"\[\d+\]:", p) for p in ran), f"not every cell ran: {ran}"
    assert chart is not None, f"no plotly chart titled {CHART_TITLE!r} rendered (see {SCREENSHOT})"
    pods = expected_pods()
    (bars,) = chart["traces"]
    assert bars["type"] == "bar" and len(set(bars["x"])) == len(bars["x"]) == pods, bars
    # Drawn, not only held in data: one SVG bar per pod, and only the busiest has height.
    assert len(chart["barHeights"]) == pods, chart["barHeights"]
    busiest = bars["y"].index(max(bars["y"]))
    assert chart["barHeights"][busiest] > 0
    assert [h for i, h in enumerate(chart["barHeights"]) if i != busiest] == [0] * (pods - 1)
    # The busiest bar holds every OK reply the load generator counted (the title says how many).
    ok = int(re.search(r"(\d+) OK, (\d+) failed", chart["title"]).group(1))
    assert ok > 0 and bars["y"][busiest] == ok == sum(bars["y"]), chart
    assert summary_text and f"pods that served requests: 1 of {pods}" in summary_text
