"""Linkerd's ServiceProfile (linkerd.io/v1alpha2): the fields the sandbox's emulation maps."""

from __future__ import annotations

from grpclab.cluster.crds.shapes import NAME, STRING, Kinds, array, custom_resource, strict
from grpclab.xds.linkerd import PROFILE_API_VERSION, LinkerdConfigError, check_service_profile

_STATUS = {"type": "integer", "minimum": 100, "maximum": 599}

SERVICE_PROFILE = custom_resource(
    PROFILE_API_VERSION,
    "ServiceProfile",
    strict(
        {
            "routes": array(
                strict(
                    {
                        "name": NAME,
                        "condition": strict({"method": NAME, "pathRegex": NAME}),
                        "responseClasses": array(
                            strict(
                                {
                                    "condition": strict(
                                        {"status": strict({"min": _STATUS, "max": _STATUS})},
                                        required=("status",),
                                    ),
                                    "isFailure": {"type": "boolean"},
                                },
                                required=("condition",),
                            )
                        ),
                        "isRetryable": {"type": "boolean"},
                        "timeout": STRING,
                    },
                    required=("name", "condition"),
                )
            ),
            "retryBudget": strict(
                {
                    "retryRatio": {"type": "number", "minimum": 0},
                    "minRetriesPerSecond": {"type": "integer", "minimum": 0},
                    "ttl": STRING,
                },
                # Linkerd's CRD requires all three when a budget is given.
                required=("retryRatio", "minRetriesPerSecond", "ttl"),
            ),
        }
    ),
)


# ServiceProfile, for the manifest checker.
KINDS: Kinds = {
    (PROFILE_API_VERSION, "ServiceProfile"): (
        SERVICE_PROFILE,
        check_service_profile,
        LinkerdConfigError,
    )
}
