"""Istio's DestinationRule and VirtualService: the schema of the fields grpclab supports.

Strict on purpose: an unknown field is an error, not a setting that silently does
nothing. The schemas mirror Istio's CRDs (networking.istio.io v1 and v1beta1) for
the fields the sandbox translates; values Istio's webhook would refuse (a bad
duration, an unknown retry condition) are refused by the sandbox check, which runs
the same translator the sandbox's control plane uses.
"""

from __future__ import annotations

from grpclab.cluster.crds.shapes import NAME, PORT, STRING, custom_resource, strict
from grpclab.xds.istio import (
    API_VERSIONS,
    IstioConfigError,
    check_destination_rule,
    check_virtual_service,
)

_UINT32 = {"type": "integer", "minimum": 0, "maximum": 2**32 - 1}
_DURATION = {"type": "string", "minLength": 1}  # checked by the translator, with a readable error

_DESTINATION_RULE_SPEC = strict(
    {
        "host": NAME,
        "trafficPolicy": strict(
            {
                "loadBalancer": strict(
                    {
                        "simple": {"enum": ["ROUND_ROBIN", "LEAST_REQUEST", "RANDOM"]},
                        "localityLbSetting": strict(
                            {
                                "enabled": {"type": "boolean"},
                                "distribute": {
                                    "type": "array",
                                    "items": strict(
                                        {
                                            "from": NAME,
                                            "to": {
                                                "type": "object",
                                                "minProperties": 1,
                                                "additionalProperties": {
                                                    "type": "integer",
                                                    "minimum": 0,
                                                    "maximum": 100,
                                                },
                                            },
                                        },
                                        required=("from", "to"),
                                    ),
                                },
                            }
                        ),
                    }
                ),
                "outlierDetection": strict(
                    {
                        "consecutive5xxErrors": _UINT32,
                        "consecutiveGatewayErrors": _UINT32,
                        "interval": _DURATION,
                        "baseEjectionTime": _DURATION,
                        "maxEjectionPercent": {"type": "integer", "minimum": 0, "maximum": 100},
                    }
                ),
                "connectionPool": strict(
                    {
                        "tcp": strict({"maxConnections": _UINT32}),
                        "http": strict(
                            {
                                "http2MaxRequests": _UINT32,
                                "maxRequestsPerConnection": _UINT32,
                                "h2UpgradePolicy": {
                                    "enum": ["DEFAULT", "UPGRADE", "DO_NOT_UPGRADE"]
                                },
                            }
                        ),
                    }
                ),
            }
        ),
    },
    required=("host",),
)

_VIRTUAL_SERVICE_SPEC = strict(
    {
        "hosts": {
            "type": "array",
            "minItems": 1,
            "items": NAME,
        },
        "http": {
            "type": "array",
            "items": strict(
                {
                    "name": STRING,
                    "match": {
                        "type": "array",
                        "items": strict({"name": STRING, "port": PORT}),
                    },
                    "route": {
                        "type": "array",
                        "minItems": 1,
                        "items": strict(
                            {
                                "destination": strict(
                                    {
                                        "host": NAME,
                                        "port": strict({"number": PORT}, ("number",)),
                                    },
                                    required=("host",),
                                ),
                                "weight": {"type": "integer", "minimum": 0, "maximum": 100},
                            },
                            required=("destination",),
                        ),
                    },
                    "retries": strict(
                        {
                            "attempts": {"type": "integer", "minimum": 0},
                            "perTryTimeout": _DURATION,
                            "retryOn": STRING,
                        }
                    ),
                    "timeout": _DURATION,
                },
                required=("route",),
            ),
        },
    },
    required=("hosts",),
)


# Both API versions of each kind, for the manifest checker.
KINDS = {
    (api_version, kind): (custom_resource(api_version, kind, spec), check, IstioConfigError)
    for api_version in API_VERSIONS
    for kind, spec, check in (
        ("DestinationRule", _DESTINATION_RULE_SPEC, check_destination_rule),
        ("VirtualService", _VIRTUAL_SERVICE_SPEC, check_virtual_service),
    )
}
