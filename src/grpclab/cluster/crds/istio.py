"""Istio's DestinationRule and VirtualService: the schema of the fields grpclab supports.

Strict on purpose: an unknown field is an error, not a setting that silently does
nothing. The schemas mirror Istio's CRDs (networking.istio.io v1 and v1beta1) for
the fields the sandbox translates; values Istio's webhook would refuse (a bad
duration, an unknown retry condition) are refused by `sandbox_problems`, which
runs the same translator the sandbox's control plane uses.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import Any

from grpclab.xds.istio import (
    API_VERSIONS,
    IstioConfigError,
    check_destination_rule,
    check_virtual_service,
)

_UINT32 = {"type": "integer", "minimum": 0, "maximum": 2**32 - 1}
_PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
_DURATION = {"type": "string", "minLength": 1}  # checked by the translator, with a readable error


def _strict(properties: Mapping[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": dict(properties),
        "additionalProperties": False,
    }
    if required:
        schema["required"] = list(required)
    return schema


def _object(kind: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    return _strict(
        {
            "apiVersion": {"enum": list(API_VERSIONS)},
            "kind": {"const": kind},
            "metadata": _strict(
                {
                    "name": {"type": "string"},
                    "namespace": {"type": "string"},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
                },
                required=("name",),
            ),
            "spec": spec,
        },
        required=("apiVersion", "kind", "metadata", "spec"),
    )


DESTINATION_RULE = _object(
    "DestinationRule",
    _strict(
        {
            "host": {"type": "string", "minLength": 1},
            "trafficPolicy": _strict(
                {
                    "loadBalancer": _strict(
                        {
                            "simple": {"enum": ["ROUND_ROBIN", "LEAST_REQUEST", "RANDOM"]},
                            "localityLbSetting": _strict(
                                {
                                    "enabled": {"type": "boolean"},
                                    "distribute": {
                                        "type": "array",
                                        "items": _strict(
                                            {
                                                "from": {"type": "string", "minLength": 1},
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
                    "outlierDetection": _strict(
                        {
                            "consecutive5xxErrors": _UINT32,
                            "consecutiveGatewayErrors": _UINT32,
                            "interval": _DURATION,
                            "baseEjectionTime": _DURATION,
                            "maxEjectionPercent": {"type": "integer", "minimum": 0, "maximum": 100},
                        }
                    ),
                    "connectionPool": _strict(
                        {
                            "tcp": _strict({"maxConnections": _UINT32}),
                            "http": _strict(
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
    ),
)

VIRTUAL_SERVICE = _object(
    "VirtualService",
    _strict(
        {
            "hosts": {
                "type": "array",
                "minItems": 1,
                "items": {"type": "string", "minLength": 1},
            },
            "http": {
                "type": "array",
                "items": _strict(
                    {
                        "name": {"type": "string"},
                        "match": {
                            "type": "array",
                            "items": _strict({"name": {"type": "string"}, "port": _PORT}),
                        },
                        "route": {
                            "type": "array",
                            "minItems": 1,
                            "items": _strict(
                                {
                                    "destination": _strict(
                                        {
                                            "host": {"type": "string", "minLength": 1},
                                            "port": _strict({"number": _PORT}, ("number",)),
                                        },
                                        required=("host",),
                                    ),
                                    "weight": {"type": "integer", "minimum": 0, "maximum": 100},
                                },
                                required=("destination",),
                            ),
                        },
                        "retries": _strict(
                            {
                                "attempts": {"type": "integer", "minimum": 0},
                                "perTryTimeout": _DURATION,
                                "retryOn": {"type": "string"},
                            }
                        ),
                        "timeout": _DURATION,
                    },
                    required=("route",),
                ),
            },
        },
        required=("hosts",),
    ),
)

KINDS = {"DestinationRule": DESTINATION_RULE, "VirtualService": VIRTUAL_SERVICE}
_CHECKS: dict[str, Callable[[Mapping[str, Any]], None]] = {
    "DestinationRule": check_destination_rule,
    "VirtualService": check_virtual_service,
}
_PATH_PART = re.compile(r"\[(\d+)\]|\['((?:[^'\\]|\\.)*)'\]|\.?([^.\[]+)")


def field_parts(field: str) -> tuple[Any, ...]:
    """ "spec.http[0].retries" -> ("spec", "http", 0, "retries"), as manifest errors want it."""
    parts: list[Any] = []
    for index, quoted, name in _PATH_PART.findall(field):
        parts.append(int(index) if index else quoted if quoted else name)
    return tuple(parts)


def sandbox_problems(obj: Mapping[str, Any]) -> Iterator[tuple[tuple[Any, ...], str]]:
    """(field, reason) for each value the sandbox's translator refuses (at most one)."""
    try:
        _CHECKS[obj["kind"]](obj)
    except IstioConfigError as error:
        yield field_parts(error.field), error.reason


def register(
    schemas: MutableMapping[tuple[str, str], Mapping[str, Any]],
    sandbox_kinds: MutableMapping[tuple[str, str], Callable[[Mapping[str, Any]], Iterator[Any]]],
    problem: Callable[[tuple[Any, ...], str], Any],
) -> None:
    """Add the Istio kinds to a manifest checker's tables; `problem(field, reason)` builds
    one of its problem records."""
    for api_version in API_VERSIONS:
        for kind, schema in KINDS.items():
            schemas[(api_version, kind)] = schema
            sandbox_kinds[(api_version, kind)] = _checker(problem)


def _checker(problem: Callable[[tuple[Any, ...], str], Any]):
    def check(obj: Mapping[str, Any]) -> Iterator[Any]:
        for field, reason in sandbox_problems(obj):
            yield problem(field, reason)

    return check
