"""Fixtures that several test modules share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import grpclab
from grpclab.cluster import Cluster

BASE = Path(__file__).resolve().parents[1] / "cluster" / "manifests" / "base"


@pytest.fixture(scope="module")
def lab() -> Iterator[Cluster]:
    """A sandbox per test module with cluster/manifests/base applied and rolled out.

    A module that needs more (add-ons, other manifests) defines its own `lab`.
    """
    with grpclab.connect("sandbox") as sandbox:
        sandbox.apply(BASE)
        sandbox.wait_ready("grpc-server", timeout=60)
        yield sandbox
