"""Schemas and sandbox checks of the custom resources grpclab knows (Istio, ...).

Imported on first need only (`custom_kinds`): these modules import the xDS translators,
whose protobufs the kind backend never needs for Kubernetes' own kinds.
"""

from __future__ import annotations

import functools

from grpclab.cluster.crds.shapes import Kinds


@functools.cache
def custom_kinds() -> Kinds:
    """(apiVersion, kind) -> (schema, None for Kubernetes' own; sandbox check; its error)
    for Istio, Ingress and TLS Secrets, Gateway API, Linkerd and Traefik, in that order."""
    from grpclab.cluster.crds import gateway_api, ingress, istio, linkerd, traefik

    modules = (istio, ingress, gateway_api, linkerd, traefik)
    return {key: entry for module in modules for key, entry in module.KINDS.items()}
