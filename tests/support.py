"""What several test modules share besides fixtures: repository paths, waiting, the ready line.

The fixtures built from these live in tests/conftest.py. Test modules import this module
by name (`from support import ...`): pytest puts tests/ on sys.path for tests/conftest.py.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpclab
from grpclab.cluster import Cluster, ManifestSource

# -- Repository paths: the one place the tests learn where the checkout is ----------------

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
MANIFESTS = CLUSTER / "manifests"
BASE = MANIFESTS / "base"
HEADLESS = MANIFESTS / "headless" / "service-headless.yaml"
ISTIO = MANIFESTS / "istio"
BAD_MANIFESTS = REPO / "tests" / "fixtures" / "manifests" / "bad"

# -- Waiting for a condition instead of sleeping a fixed time ------------------------------

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T],
    what: str | Callable[[], str],
    timeout: float = 30.0,
    interval: float = 0.05,
) -> T:
    """Poll until `condition()` is truthy and return its value; fail naming `what` otherwise.

    `what` may be a function, asked only on failure, to describe the state at that moment.
    The condition is asked once more at the deadline, so a slow machine that got there
    just in time passes.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() >= deadline:
            break
        time.sleep(interval)
    if not value:
        described = what() if callable(what) else what
        raise AssertionError(f"timed out after {timeout:g} s waiting for {described}")
    return value


# -- The demo server's ready line ----------------------------------------------------------

# grpclab.demo.server prints this once it accepts calls (src/grpclab/demo/server.py, `serve`).
READY_LINE = re.compile(
    r"grpclab\.demo\.server ready pod=(?P<pod>\S+) ip=(?P<ip>\S+) port=(?P<port>\d+) "
    r"metrics=(?P<metrics>\d+)"
)


@dataclass(frozen=True)
class Ready:
    """Where a demo server said it listens."""

    pod: str
    ip: str
    port: int
    metrics_port: int


def parse_ready(text: str) -> Ready | None:
    """The first ready line in `text`, or None."""
    match = READY_LINE.search(text)
    if match is None:
        return None
    return Ready(match["pod"], match["ip"], int(match["port"]), int(match["metrics"]))


def wait_for_ready(
    output: Path, proc: subprocess.Popen[Any], timeout: float = 30.0
) -> Ready | None:
    """Wait until the server writing to `output` prints its ready line, and parse it.

    None if the process exits first or the timeout passes; the caller says why, with the
    server's stderr.
    """
    deadline = time.monotonic() + timeout
    while (ready := parse_ready(output.read_text())) is None:
        if proc.poll() is not None or time.monotonic() >= deadline:
            return parse_ready(output.read_text())
        time.sleep(0.05)
    return ready


# -- Sandboxes -----------------------------------------------------------------------------


@contextmanager
def base_sandbox(*also: ManifestSource) -> Iterator[Cluster]:
    """A fresh sandbox with cluster/manifests/base and `also` applied, the pods ready.

    It goes down when the block ends, whatever happened inside.
    """
    with grpclab.connect("sandbox") as sandbox:
        sandbox.apply(BASE)
        for source in also:
            sandbox.apply(source)
        sandbox.wait_ready("grpc-server", timeout=60)
        yield sandbox
