"""Fixtures that several test modules share.

Plain helpers and constants (repository paths, `wait_until`, the demo server's ready line,
`base_sandbox`) live in tests/support.py, which test modules import as `support`. How the
tests are spread over pytest-xdist's workers lives in tests/parallel.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support import base_sandbox

from grpclab.cluster import Cluster

pytest_plugins = ("parallel",)


@pytest.fixture(scope="module")
def lab() -> Iterator[Cluster]:
    """A sandbox per test module with cluster/manifests/base applied and rolled out.

    A module that needs more (add-ons, other manifests) defines its own `lab`, usually
    with `support.base_sandbox(...)`.
    """
    with base_sandbox() as sandbox:
        yield sandbox
