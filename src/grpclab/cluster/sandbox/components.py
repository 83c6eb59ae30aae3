"""What plays each component of the calls' path in the sandbox, and its memory now.

`Sandbox.component` answers from here. Memory is the resident set (`VmRSS` in
/proc/<pid>/status) of the process the stand-in started, with its children (nginx's
workers) and without a wrapper shell; it covers only what runs here (one Envoy worker, a
handful of Services), never the real component in a real cluster.
"""

from __future__ import annotations

import os
from pathlib import Path
from subprocess import Popen
from typing import TYPE_CHECKING, Any

from grpclab.cluster import Component

if TYPE_CHECKING:
    from grpclab.cluster.sandbox import Sandbox

# Component -> what plays it here, where that is not the real component ("" where it is),
# in the few words a table cell has:
# - ztunnel: Istio's is a Rust L4 proxy with HBONE (mTLS) tunnels; the stand-in is Envoy
#   tcp_proxy, which keeps what matters here, one endpoint per connection;
# - kube-proxy: a kind node programs iptables or IPVS rules; calls never pass a process;
# - linkerd: linkerd2-proxy is a different proxy (Rust), with its own balancer (EWMA);
# - ingress-nginx: the controller runs OpenResty with a Lua balancer (balancer_by_lua,
#   kubernetes/ingress-nginx rootfs/etc/nginx/lua/balancer.lua) and its Go controller in
#   the same pod; the sandbox runs plain nginx with a generated config.
# The data planes of Istio's sidecar and waypoint and of Envoy Gateway are real Envoys; only their
# control planes are grpclab's.
STAND_INS = {
    "kube-proxy": "Envoy tcp_proxy",
    "istio": "",
    "linkerd": "Envoy",
    "ingress-nginx": "plain nginx",
    "envoy-gateway": "",
    "ztunnel": "Envoy tcp_proxy",
    "waypoint": "",
}
NOTES = {
    "kube-proxy": "shared by every Service",
    "istio": "the client's sidecar",
    "ingress-nginx": "all workers",
    "ztunnel": "the client's node proxy",
    "waypoint": "one per waypoint Gateway",
}
# The wrappers a proxy may run under (nginx's guard shell): not part of its memory.
WRAPPERS = {"sh", "dash", "bash", "setpriv"}


def tree_rss_kb(pid: int) -> int:
    """VmRSS summed over `pid` and its descendants, wrapper shells left out (kB)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry))
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        stack += children.get(current, [])
        try:
            if Path(f"/proc/{current}/comm").read_text().strip() in WRAPPERS:
                continue
            status = Path(f"/proc/{current}/status").read_text()
        except OSError:
            continue  # it ended meanwhile
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def _process(sandbox: Sandbox, name: str) -> Popen | None:
    """The process that carries calls for `name`, if it runs."""
    from grpclab.cluster.sandbox.catalog import installed

    if name == "kube-proxy":
        return sandbox.kube_proxy.process
    if name in ("ztunnel", "waypoint"):
        ambient: Any = installed(sandbox, "istio-ambient")
        if ambient is None:
            return None
        return (
            ambient.ztunnel.process
            if name == "ztunnel" and ambient.ztunnel
            else (ambient.waypoint_process() if name == "waypoint" else None)
        )
    addon: Any = installed(sandbox, name)
    if addon is None:
        return None
    if name == "ingress-nginx":
        return addon.process
    envoy = addon.envoy  # an EnvoyFrontend wraps an EnvoyProxy
    return getattr(getattr(envoy, "proxy", envoy), "process", None)


def component(sandbox: Sandbox, name: str) -> Component:
    if name not in STAND_INS:
        raise ValueError(f"the sandbox knows no component {name!r}; it has {', '.join(STAND_INS)}")
    process = _process(sandbox, name)
    if process is None or process.poll() is not None:
        return Component(name, STAND_INS[name], None, "not running")
    return Component(name, STAND_INS[name], tree_rss_kb(process.pid) / 1024, NOTES.get(name, ""))
