"""Controllers behind Ingress, Gateway and mesh objects, one call for every backend.

Applying an Ingress does nothing until an Ingress controller runs; the same holds for
Gateways and meshes. `install_addon` brings up the one named: on kind the real controller
(cluster/addons/<name>.sh), in the sandbox its stand-in, which says whether it is the real
data plane or an emulation. Notebooks call these and never branch on the backend.
"""

from __future__ import annotations

from grpclab.cluster import Cluster


def install_addon(lab: Cluster, name: str) -> str:
    """Install (once) the controller add-on `name`; returns what now runs, in words."""
    if lab.backend == "sandbox":
        from grpclab.cluster.sandbox.catalog import install

        return install(lab, name)  # type: ignore[arg-type]
    output = lab.install_addon(name)  # type: ignore[attr-defined]
    last = output.strip().splitlines()[-1:] if output else []
    return f"{name}: the real controller on {lab.backend} ({' '.join(last) or 'installed'})"


def describe_addon(lab: Cluster, name: str) -> str:
    """What the controller `name` serves now; in the sandbox, how it stands in for the real one."""
    if lab.backend == "sandbox":
        from grpclab.cluster.sandbox.catalog import describe

        return describe(lab, name)  # type: ignore[arg-type]
    return f"{name}: the real controller on {lab.backend}; inspect it with its own tools"
