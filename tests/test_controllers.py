"""install_addon and describe_addon go through the Cluster interface, whatever the backend."""

from __future__ import annotations

from grpclab.cluster import Cluster
from grpclab.cluster.controllers import describe_addon, install_addon


class ScriptedCluster(Cluster):
    """A backend whose add-on install prints lines, as the kube backend's scripts do."""

    backend = "kind"

    def __init__(self, said: str) -> None:
        self.said, self.asked = said, []

    def install_addon(self, name: str) -> str:
        self.asked.append(name)
        return self.said


for _name in list(ScriptedCluster.__abstractmethods__):
    if _name != "install_addon":
        setattr(ScriptedCluster, _name, lambda self, *a, **k: None)
ScriptedCluster.__abstractmethods__ = frozenset()


def test_install_addon_asks_the_cluster_and_keeps_the_line_that_says_what_runs():
    lab = ScriptedCluster("applying CRDs\nwaiting for istiod\nistio 1.24.2: istiod ready\n")
    assert install_addon(lab, "istio") == "istio 1.24.2: istiod ready"
    assert lab.asked == ["istio"]
    assert install_addon(ScriptedCluster(""), "linkerd") == "linkerd: installed on kind"


def test_describe_addon_on_a_real_cluster_points_at_its_own_tools():
    lab = ScriptedCluster("")
    assert describe_addon(lab, "linkerd") == (
        "linkerd: the real controller on kind; inspect it with its own tools"
    )
