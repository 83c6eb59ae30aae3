"""Where the repository's own files are: one home for every path the library reads.

The package is installed editable from its checkout (make setup), so the checkout is two
levels above this file. tools/wheelhouse.py keeps its own copy: it runs before install.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
MANIFESTS = REPO / "cluster" / "manifests"
ADDONS = REPO / "cluster" / "addons"
LABS = REPO / "labs"
PROTOS = REPO / "protos"
NODE_CLIENT = REPO / "clients" / "node"
