"""The cluster every contract test talks to: whatever $GRPCLAB_BACKEND selects (sandbox here).

The same tests run on the kind cluster in .github/workflows/kind.yml, so they use only the
`Cluster` interface and the manifests a learner applies.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support import BASE, HEADLESS

import grpclab

DEPLOYMENT = "grpc-server"
REPLICAS = 3  # what cluster/manifests/base/deployment.yaml asks for
# Generous: on kind a first rollout pulls nothing but still starts three containers.
ROLLOUT_TIMEOUT = 180.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[grpclab.Cluster]:
    lab = grpclab.connect()
    try:
        lab.apply(BASE)
        lab.apply(HEADLESS)
        lab.wait_ready(DEPLOYMENT, timeout=ROLLOUT_TIMEOUT)
        yield lab
    finally:
        lab.down()
