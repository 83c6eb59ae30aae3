"""Controllers behind Ingress, Gateway and mesh objects, one call for every backend.

Applying an Ingress does nothing until an Ingress controller runs; the same holds for
Gateways and meshes. `install_addon` brings up the one named through the Cluster
interface: on kind the real controller (cluster/addons/<name>.sh), in the sandbox its
stand-in, which says whether it is the real data plane or an emulation. Notebooks call
these and never branch on the backend.
"""

from __future__ import annotations

from grpclab.cluster import Cluster


def install_addon(lab: Cluster, name: str) -> str:
    """Install (once) the controller add-on `name`; returns what now runs, in one line.

    That is the last line the install said: on a real cluster its script's lines have
    already shown as they came; in the sandbox it is the stand-in's one line.
    """
    said = lab.install_addon(name).strip().splitlines()
    return said[-1] if said else f"{name}: installed on {lab.backend}"


def describe_addon(lab: Cluster, name: str) -> str:
    """What the controller `name` serves now; in the sandbox, how it stands in for the real one."""
    return lab.describe_addon(name)
