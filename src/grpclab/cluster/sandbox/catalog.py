"""The sandbox's stand-ins for the controllers that cluster/addons/ installs on kind.

On kind, `install_addon("ingress-nginx")` runs the real controller's install script. In the
sandbox the same name starts what plays that controller here; each stand-in says what it
is, and whether it is the real data plane or an emulation.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from grpclab.cluster.sandbox import Sandbox

# Add-on name (as in cluster/addons/<name>.sh) -> what plays it in the sandbox.
STAND_INS = {
    "ingress-nginx": "real nginx with a config generated from Ingress objects",
    "envoy-gateway": "a real Envoy, configured from Gateway and routes by grpclab's control plane",
    "traefik": "EMULATED by Envoy (IngressRoute translated to Envoy routes)",
    "linkerd": "EMULATED by Envoy (the meshed client's proxy)",
    "istio": (
        "a real Envoy as the notebook client's sidecar, configured from DestinationRule and "
        "VirtualService by grpclab's control plane (istiod and the injection are emulated, "
        "the data plane is not)"
    ),
    "istio-ambient": (
        "ztunnel EMULATED by Envoy tcp_proxy (one endpoint per connection); each waypoint a "
        "real Envoy configured from DestinationRule and VirtualService by grpclab's control "
        "plane; no HBONE or mTLS between them"
    ),
    "gateway-api": "nothing to run: the sandbox knows the Gateway API kinds' schemas",
}


# Add-on name -> (module of grpclab.cluster.sandbox, class) of its stand-in, imported when
# the add-on is installed: a sandbox that never asks for one loads none of it.
_STAND_IN_CLASSES = {
    "ingress-nginx": ("ingress_nginx", "IngressNginx"),
    "envoy-gateway": ("gateways", "EnvoyGateway"),
    "traefik": ("gateways", "TraefikEmulation"),
    "linkerd": ("linkerd", "LinkerdEmulation"),
    "istio": ("mesh", "MeshAddon"),
    "istio-ambient": ("ambient", "AmbientAddon"),
}


def _addon(sandbox: Sandbox, name: str):
    if name not in _STAND_IN_CLASSES:
        return None
    module, cls = _STAND_IN_CLASSES[name]
    return getattr(importlib.import_module(f"grpclab.cluster.sandbox.{module}"), cls)(sandbox)


# Add-on name -> its stand-in's key in Sandbox.addons, where the two differ: Istio's sidecar
# is keyed by the via it serves ("mesh"), as the rest of grpclab looks it up.
ADDON_KEYS = {"istio": "mesh", "istio-ambient": "ambient"}


def installed(sandbox: Sandbox, name: str):
    """The running stand-in for add-on `name`, or None."""
    return sandbox.addons.get(ADDON_KEYS.get(name, name))


def install(sandbox: Sandbox, name: str) -> str:
    """Start the stand-in for add-on `name` (once); returns one line that says what it is."""
    if name not in STAND_INS:
        raise ValueError(
            f"the sandbox has no stand-in for add-on {name!r}; it has {', '.join(STAND_INS)}"
        )
    if installed(sandbox, name) is None:
        addon = _addon(sandbox, name)
        if addon is not None:
            try:
                sandbox.add_addon(addon)
            except BaseException:
                addon.stop()
                sandbox.addons.pop(addon.name, None)
                raise
    return f"{name}: {STAND_INS[name]} (sandbox; on kind: cluster/addons/{name}.sh)"


def describe(sandbox: Sandbox, name: str) -> str:
    """What the stand-in for `name` serves right now (routes, addresses, mappings)."""
    addon = installed(sandbox, name)
    if addon is None:
        return f"{name}: not installed (install_addon(lab, {name!r}))"
    return addon.describe()


# The `via` each stand-in owns in Cluster.target, so the sandbox can start one on first use.
VIA = {
    "ingress": "ingress-nginx",
    "gateway": "envoy-gateway",
    "traefik": "traefik",
    "linkerd": "linkerd",
    "mesh": "istio",
    "ambient": "istio-ambient",
}


def addon_for_via(sandbox: Sandbox, via: str) -> str | None:
    """Start (once) the stand-in that owns `via`; returns its add-on name, None if none does."""
    name = VIA.get(via)
    if name is not None:
        install(sandbox, name)
    return name
