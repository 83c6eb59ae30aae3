"""How `make test` spreads the tests over workers (pytest-xdist, `--dist loadgroup`).

Each test module is one group, run whole by one worker, so its module-scoped sandbox is built
once; each notebook's nbval run is a group of its own, and so are each lab's tests on a
cluster (tests/test_labs.py: a sandbox per lab). The notebooks' groups (nbval and the
browser test) start first, then all others; each kind longest first, by the seconds in
tests/group_seconds.json, so the short modules fill in at the end. At the end the run
prints the nbval wall time, issue 19's benchmark for the notebooks.

xdist's own `xdist_group` marker does nothing with pytest 9 (xdist 3.8 renames the node id
through an attribute pytest 9 no longer reads), so the groups come from the node ids here.
Refresh the seconds after adding a slow module or notebook:
`make test PYTEST_ARGS=--store-group-seconds` (a group missing from the table counts as the
median).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from pathlib import Path

import pytest
from xdist.scheduler import LoadScopeScheduling

GROUP_SECONDS = Path(__file__).with_name("group_seconds.json")
NBVAL_GROUP = "nbval:"
# Tests each of whose cases is a group of its own, by node id prefix, and their groups' prefix.
ALONE = {"tests/test_notebooks.py::test_notebook_passes_nbval_and_leaves_no_process[": NBVAL_GROUP}
LAB_GROUP = "lab:"
BROWSER_GROUP = "tests/browser/test_notebook_in_browser.py"
# Tests on a lab's own sandbox, by node id prefix: each case joins the group of the lab whose
# number its id starts with ("lab:03"), so a lab's sandbox is built once, on one worker, and
# the labs run side by side. The module's cluster-free tests stay in the module's group.
ON_A_LAB = tuple(
    f"tests/test_labs.py::{name}["
    for name in (
        "test_the_check_fails_on_the_starter_and_passes_on_the_solution",
        "test_a_cheat_fails_and_the_check_names_why",
        "test_the_lab_swaps_its_service_both_ways_and_says_replaced",
        "test_a_file_that_does_not_apply_is_a_failed_item_naming_the_file",
        "test_start_lab_copies_the_starter_once_and_keeps_edits",
    )
)


def group_of(nodeid: str) -> str:
    """The group of a test: its module, or for a test in ALONE, the case on its own, or for
    one in ON_A_LAB, its lab's."""
    for prefix, group in ALONE.items():
        if nodeid.startswith(prefix) and nodeid.endswith("]"):
            return group + nodeid[len(prefix) : -1]
    for prefix in ON_A_LAB:
        if nodeid.startswith(prefix) and nodeid.endswith("]"):
            return LAB_GROUP + nodeid[len(prefix) :].split("-", 1)[0].rstrip("]")
    return nodeid.split("::", 1)[0]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--store-group-seconds",
        action="store_true",
        help=f"write each group's measured seconds to tests/{GROUP_SECONDS.name}",
    )


# A worker runs a test only once it holds the next one (pytest needs the next item), so xdist
# hands every worker a second group while it runs its first. Behind a group this long, that
# second group would wait for minutes: a notebook queued behind the browser test started
# after 470 s once. Such a worker gets the shortest group left instead, and the next long
# one after it.
HOLDS_BACK_S = 100.0


class GroupScheduling(LoadScopeScheduling):
    """xdist's scheduling by scope, with `group_of` as the scope, in collection order; a
    worker busy with a long group gets the shortest group left."""

    def __init__(self, config: pytest.Config, log=None) -> None:
        super().__init__(config, log)
        self._seconds = seconds_of(_seconds_table())  # read once, asked at every hand-out

    def _split_scope(self, nodeid: str) -> str:
        return group_of(nodeid)

    def _assign_work_unit(self, node) -> None:
        unfinished = [
            scope
            for scope, tests in self.assigned_work.get(node, {}).items()
            if not all(tests.values())
        ]
        group = next_group(list(self.workqueue), unfinished, self._seconds)
        self.workqueue.move_to_end(group, last=False)  # xdist hands out the queue's first
        super()._assign_work_unit(node)


def next_group(queue: list[str], unfinished: list[str], seconds: Callable[[str], float]) -> str:
    """The group a worker gets next: the queue's first, or the shortest one while the worker
    still has at least HOLDS_BACK_S of groups to run."""
    if sum(map(seconds, unfinished)) >= HOLDS_BACK_S:
        return min(queue, key=seconds)
    return queue[0]


def seconds_of(table: dict[str, float]) -> Callable[[str], float]:
    """Each group's seconds in `table`; a group missing from it counts as the median."""
    unknown = statistics.median(table.values()) if table else 0.0
    return lambda group: table.get(group, unknown)


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log) -> GroupScheduling | None:
    if config.getvalue("dist") != "loadgroup":
        return None
    config.option.loadscopereorder = False  # the workers' order (longest first) stands
    return GroupScheduling(config, log)


@pytest.hookimpl(trylast=True)  # after pytest has ordered the items by their fixtures
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On an xdist worker, put the longest groups first: xdist hands groups out in this order."""
    if not hasattr(config, "workerinput"):
        return
    expected = seconds_of(_seconds_table())
    groups = {item.nodeid: group_of(item.nodeid) for item in items}
    seconds = {group: expected(group) for group in groups.values()}
    # A stable sort: within a group the order pytest chose (by fixtures) stays; ties by name,
    # so every worker collects the same order, as xdist requires.
    items.sort(key=lambda item: start_order(groups[item.nodeid], seconds))


def start_order(group: str, seconds: dict[str, float]) -> tuple[bool, float, str]:
    """The sort key of a group: the notebooks' groups before all others (the nbval runs, and
    the browser test, which runs notebooks in JupyterLab), then longest first, then by name."""
    notebooks = group.startswith(NBVAL_GROUP) or group == BROWSER_GROUP
    return (not notebooks, -seconds[group], group)


def _seconds_table() -> dict[str, float]:
    try:
        return json.loads(GROUP_SECONDS.read_text())
    except FileNotFoundError:
        return {}


class Timing:
    """On the controller: each group's seconds, and when the nbval runs started and ended."""

    def __init__(self) -> None:
        self.group_seconds: dict[str, float] = {}
        self.nbval_start = float("inf")
        self.nbval_stop = 0.0
        self.notebooks: set[str] = set()

    def add(self, report: pytest.TestReport) -> None:
        group = group_of(report.nodeid)
        self.group_seconds[group] = self.group_seconds.get(group, 0.0) + report.duration
        if group.startswith(NBVAL_GROUP) and not report.skipped:
            self.nbval_start = min(self.nbval_start, report.start)
            self.nbval_stop = max(self.nbval_stop, report.stop)
            self.notebooks.add(group)


TIMING = Timing()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    TIMING.add(report)


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    if TIMING.notebooks:
        wall = TIMING.nbval_stop - TIMING.nbval_start
        terminalreporter.write_line(
            f"nbval wall time: {wall:.0f} s over {len(TIMING.notebooks)} notebook"
            + ("s" if len(TIMING.notebooks) > 1 else "")
        )
    if config.getoption("store_group_seconds") and not hasattr(config, "workerinput"):
        table = {**_seconds_table(), **TIMING.group_seconds}
        ordered = dict(sorted(((k, round(v, 1)) for k, v in table.items()), key=lambda kv: -kv[1]))
        GROUP_SECONDS.write_text(json.dumps(ordered, indent=1) + "\n")
        terminalreporter.write_line(f"stored {len(TIMING.group_seconds)} groups' seconds")
