"""Gateway API's Gateway, GRPCRoute and HTTPRoute (v1), and Envoy Gateway's
BackendTrafficPolicy: the fields grpclab supports.

The sandbox serves Gateways with Envoy (grpclab.xds.gateway) and reads GRPCRoutes whose
parent is a Service as mesh routes (Linkerd's retry annotations). Values the translator
would refuse are refused here, at apply time, by the same code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from grpclab.cluster.crds.shapes import (
    NAME,
    PORT,
    STRING,
    Kinds,
    array,
    custom_resource,
    strict,
)
from grpclab.xds.gateway import (
    ENVOY_GATEWAY_API_VERSION,
    GATEWAY_API_VERSION,
    LB_TYPES,
    GatewayConfigError,
    check_backend_traffic_policy,
    check_gateway,
    check_route,
)
from grpclab.xds.linkerd import LinkerdConfigError, check_retry_annotations

_GROUP = {"type": "string"}
_PARENT_REF = strict(
    {
        "group": _GROUP,
        "kind": {"enum": ["Gateway", "Service"]},
        "namespace": STRING,
        "name": NAME,
        "sectionName": STRING,
        "port": PORT,
    },
    required=("name",),
)
_BACKEND_REF = strict(
    {
        "group": _GROUP,
        "kind": {"const": "Service"},
        "name": NAME,
        "namespace": STRING,
        "port": PORT,
        "weight": {"type": "integer", "minimum": 0, "maximum": 1000000},
    },
    required=("name",),
)
_HEADER_MATCH = strict(
    {"type": {"const": "Exact"}, "name": NAME, "value": STRING}, required=("name", "value")
)
_HOSTNAMES = array({"type": "string", "minLength": 1})

GATEWAY = custom_resource(
    GATEWAY_API_VERSION,
    "Gateway",
    strict(
        {
            "gatewayClassName": NAME,
            "listeners": array(
                strict(
                    {
                        "name": NAME,
                        "hostname": STRING,
                        "port": PORT,
                        "protocol": NAME,
                        "tls": strict(
                            {
                                "mode": {"enum": ["Terminate", "Passthrough"]},
                                "certificateRefs": array(
                                    strict(
                                        {
                                            "group": _GROUP,
                                            "kind": STRING,
                                            "name": NAME,
                                            "namespace": STRING,
                                        },
                                        required=("name",),
                                    )
                                ),
                            }
                        ),
                        "allowedRoutes": strict(
                            {
                                "namespaces": strict({"from": {"enum": ["All", "Same"]}}),
                                "kinds": array(
                                    strict({"group": _GROUP, "kind": NAME}, required=("kind",))
                                ),
                            }
                        ),
                    },
                    required=("name", "port", "protocol"),
                ),
                min_items=1,
            ),
        },
        required=("gatewayClassName", "listeners"),
    ),
)


def _route(kind: str, match: Mapping[str, Any]) -> dict[str, Any]:
    """A GRPCRoute or HTTPRoute: the same parents, hostnames and rules; `match` is what a
    rule's match says about the request besides its headers (a gRPC method, an HTTP path)."""
    match_schema = strict({**match, "headers": array(_HEADER_MATCH)})
    rule = strict({"matches": array(match_schema), "backendRefs": array(_BACKEND_REF)})
    return custom_resource(
        GATEWAY_API_VERSION,
        kind,
        strict({"parentRefs": array(_PARENT_REF), "hostnames": _HOSTNAMES, "rules": array(rule)}),
    )


GRPC_ROUTE = _route(
    "GRPCRoute",
    {
        "method": strict(
            {
                "type": {"enum": ["Exact", "RegularExpression"]},
                "service": STRING,
                "method": STRING,
            }
        )
    },
)
HTTP_ROUTE = _route(
    "HTTPRoute",
    {
        "path": strict(
            {
                "type": {"enum": ["Exact", "PathPrefix"]},
                "value": {"type": "string", "pattern": "^/"},
            },
            required=("value",),
        )
    },
)


BACKEND_TRAFFIC_POLICY = custom_resource(
    ENVOY_GATEWAY_API_VERSION,
    "BackendTrafficPolicy",
    strict(
        {
            "targetRefs": array(
                strict(
                    {"group": _GROUP, "kind": NAME, "name": NAME},
                    required=("group", "kind", "name"),
                ),
                min_items=1,
            ),
            "loadBalancer": strict(
                {"type": {"enum": list(LB_TYPES)}},
                required=("type",),
            ),
        },
        required=("targetRefs",),
    ),
)


def _check_route(route: Mapping[str, Any]) -> None:
    check_route(route)
    try:
        check_retry_annotations(route)
    except LinkerdConfigError as error:  # the same shape of error, for the same checker
        raise GatewayConfigError(error.object, error.field, error.reason) from None


# Gateway, GRPCRoute, HTTPRoute and BackendTrafficPolicy, for the manifest checker.
KINDS: Kinds = {
    (GATEWAY_API_VERSION, "Gateway"): (GATEWAY, check_gateway, GatewayConfigError),
    (GATEWAY_API_VERSION, "GRPCRoute"): (GRPC_ROUTE, _check_route, GatewayConfigError),
    (GATEWAY_API_VERSION, "HTTPRoute"): (HTTP_ROUTE, _check_route, GatewayConfigError),
    (ENVOY_GATEWAY_API_VERSION, "BackendTrafficPolicy"): (
        BACKEND_TRAFFIC_POLICY,
        check_backend_traffic_policy,
        GatewayConfigError,
    ),
}
