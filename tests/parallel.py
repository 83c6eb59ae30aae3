"""How `make test` spreads the tests over workers (pytest-xdist with `--dist loadgroup`).

Each test module is one group, run whole by one worker, so its module-scoped sandbox is built
once; a test that names its own `xdist_group` (each notebook's nbval run) keeps it. Groups
start longest first, by the seconds in tests/group_seconds.json, so the notebooks start at
once on every worker and the short modules fill in at the end. At the end the run prints
the nbval wall time, issue 19's benchmark for the notebooks.

Refresh the seconds after adding a slow module or notebook:
`make test PYTEST_ARGS=--store-group-seconds` (a group missing from the table counts as the
median).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

GROUP_SECONDS = Path(__file__).with_name("group_seconds.json")
# The nbval runs' groups (tests/test_notebooks.py): "nbval:<notebook stem>".
NBVAL_GROUP = "nbval:"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--store-group-seconds",
        action="store_true",
        help=f"write each xdist group's measured seconds to {GROUP_SECONDS.name}",
    )


def group_of(nodeid: str) -> str:
    """The xdist group in a node id ("path::test[id]@group"), else the test's module."""
    head, at, group = nodeid.rpartition("@")
    if at and "]" not in group:  # "@" inside a parameter id is no group (as xdist reads it)
        return group
    return nodeid.split("::", 1)[0]


def pytest_itemcollected(item: pytest.Item) -> None:
    if item.get_closest_marker("xdist_group") is None:
        item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))


@pytest.hookimpl(trylast=True)  # after pytest has ordered the items by their fixtures
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On an xdist worker, put the longest groups first: xdist hands groups out in this order."""
    if not hasattr(config, "workerinput"):
        return
    table = _seconds_table()
    unknown = statistics.median(table.values()) if table else 0.0
    seconds = {name: table.get(name, unknown) for name in map(_group_name, items)}
    # A stable sort: within a group the order pytest chose (by fixtures) stays; ties by name,
    # so every worker collects the same order, as xdist requires.
    items.sort(key=lambda item: (-seconds[_group_name(item)], _group_name(item)))


def _group_name(item: pytest.Item) -> str:
    return str(item.get_closest_marker("xdist_group").args[0])


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
            f"nbval wall time: {wall:.0f} s over {len(TIMING.notebooks)} notebooks"
        )
    if config.getoption("store_group_seconds") and not hasattr(config, "workerinput"):
        table = {**_seconds_table(), **TIMING.group_seconds}
        ordered = dict(sorted(((k, round(v, 1)) for k, v in table.items()), key=lambda kv: -kv[1]))
        GROUP_SECONDS.write_text(json.dumps(ordered, indent=1) + "\n")
        terminalreporter.write_line(f"stored {len(TIMING.group_seconds)} groups' seconds")
