"""Traefik's IngressRoute and ServersTransport (traefik.io/v1alpha1): the emulated subset.

Traefik v3 serves these under traefik.io; the older traefik.containo.us group (still in
many guides) was removed in v3.
"""

from __future__ import annotations

from grpclab.cluster.crds.shapes import NAME, STRING, Kinds, array, custom_resource, strict
from grpclab.xds.gateway import (
    TRAEFIK_API_VERSION,
    GatewayConfigError,
    check_ingress_route,
    check_servers_transport,
)

_DURATION = {"type": ["string", "integer"]}

INGRESS_ROUTE = custom_resource(
    TRAEFIK_API_VERSION,
    "IngressRoute",
    strict(
        {
            "entryPoints": array(NAME),
            "routes": array(
                strict(
                    {
                        "match": NAME,
                        "kind": {"const": "Rule"},
                        "services": array(
                            strict(
                                {
                                    "name": NAME,
                                    "kind": {"const": "Service"},
                                    "namespace": STRING,
                                    "port": {"type": ["integer", "string"]},
                                    "scheme": {"enum": ["http", "https", "h2c"]},
                                    "weight": {"type": "integer", "minimum": 0},
                                    "serversTransport": STRING,
                                },
                                required=("name", "port"),
                            ),
                            min_items=1,
                        ),
                    },
                    required=("match", "services"),
                ),
                min_items=1,
            ),
            "tls": strict({"secretName": NAME}),
        },
        required=("routes",),
    ),
)

SERVERS_TRANSPORT = custom_resource(
    TRAEFIK_API_VERSION,
    "ServersTransport",
    strict(
        {
            # TLS to the backend only (scheme https): the sandbox's h2c backends ignore them.
            "serverName": STRING,
            "insecureSkipVerify": {"type": "boolean"},
            "forwardingTimeouts": strict({"dialTimeout": _DURATION, "idleConnTimeout": _DURATION}),
        }
    ),
)


# IngressRoute and ServersTransport, for the manifest checker.
KINDS: Kinds = {
    (TRAEFIK_API_VERSION, "IngressRoute"): (
        INGRESS_ROUTE,
        check_ingress_route,
        GatewayConfigError,
    ),
    (TRAEFIK_API_VERSION, "ServersTransport"): (
        SERVERS_TRANSPORT,
        check_servers_transport,
        GatewayConfigError,
    ),
}
