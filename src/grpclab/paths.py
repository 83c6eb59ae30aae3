"""Where the repository's own files are, and where grpclab keeps its state on this machine:
one home for every path the library reads or writes.

The package is installed editable from its checkout (make setup), so the checkout is two
levels above this file. tools/wheelhouse.py keeps its own copy: it runs before install.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
MANIFESTS = REPO / "cluster" / "manifests"
ADDONS = REPO / "cluster" / "addons"
LABS = REPO / "labs"
PROTOS = REPO / "protos"
NODE_CLIENT = REPO / "clients" / "node"


def state_root() -> Path:
    """Where running sandboxes, TLS material and the like live: $GRPCLAB_STATE_DIR, else
    grpclab/ in the system's temporary directory (read on each call, so tests can move it)."""
    return Path(os.environ.get("GRPCLAB_STATE_DIR", Path(tempfile.gettempdir()) / "grpclab"))
