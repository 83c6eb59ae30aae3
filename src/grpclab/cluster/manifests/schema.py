"""The Kubernetes API schema check: every object against Kubernetes' own JSON schema, and
custom resources against the schemas grpclab knows (cluster/crds/, registered on first need).
"""

from __future__ import annotations

import difflib
import threading
from collections.abc import Mapping
from typing import Any

from grpclab.cluster.manifests import schema_index
from grpclab.cluster.manifests.errors import (
    ManifestError,
    ManifestObject,
    located_error,
    show,
)
from grpclab.cluster.manifests.schema_index import KUBERNETES_VERSION

# Custom resources grpclab knows, as (apiVersion, kind) -> JSON schema of the whole object.
# Filled from cluster/crds/ the first time an object may be one (see `_custom_schema`); a kind
# that is neither here nor in the Kubernetes schema is rejected as unknown.
CRD_SCHEMAS: dict[tuple[str, str], Mapping[str, Any]] = {}
_registration = threading.Lock()
_registered = False


def _register_custom_resources() -> None:
    """Add the schemas of cluster/crds/. Not at import: those modules import the xDS
    translators and their protobufs, which built-in kinds (all the kind backend needs for
    the base manifests) never need."""
    global _registered
    with _registration:
        if _registered:
            return
        from grpclab.cluster.crds import custom_kinds

        for key, (schema, _, _) in custom_kinds().items():
            if schema is not None:
                CRD_SCHEMAS[key] = schema
        _registered = True


def _custom_schema(key: tuple[str, str]) -> Mapping[str, Any] | None:
    if key not in CRD_SCHEMAS:
        _register_custom_resources()
    return CRD_SCHEMAS.get(key)


def _is_builtin_group(api_version: str) -> bool:
    group = api_version.rpartition("/")[0]
    return "." not in group or group.endswith(".k8s.io")


def check_schema(obj: ManifestObject) -> None:
    """Raise ManifestError at the first field the API server's schema would refuse."""
    api_version, kind = obj["apiVersion"], obj["kind"]
    # A known custom resource first; Kubernetes' own groups need no custom resources
    # registered unless the Kubernetes schema lacks the kind (Gateway API's *.k8s.io group).
    crd_schema = CRD_SCHEMAS.get((api_version, kind))
    if crd_schema is None and not _is_builtin_group(api_version):
        crd_schema = _custom_schema((api_version, kind))
        if crd_schema is None:
            raise _unknown_kind(obj)
    if crd_schema is None:
        builtin = schema_index.lookup(api_version, kind)
        if builtin is not None:
            error = schema_index.first_error(obj, builtin)
            if error is not None:
                _raise_schema_error(obj, error)
            return
        crd_schema = _custom_schema((api_version, kind))
        if crd_schema is None:
            raise _unknown_kind(obj)
    import jsonschema  # slow to import (its format checkers): custom resources only

    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(crd_schema).iter_errors(obj)
    )
    if error is not None:
        _raise_schema_error(obj, error)


def _unknown_kind(obj: ManifestObject) -> ManifestError:
    api_version, kind = obj["apiVersion"], obj["kind"]
    served = schema_index.api_versions_of(kind)
    if served:
        return located_error(
            obj,
            obj.origin,
            f"Kubernetes {KUBERNETES_VERSION} has no {kind} at apiVersion {api_version}",
            ("apiVersion",),
            detail="use apiVersion: " + " or ".join(served),
        )
    _register_custom_resources()
    known = ", ".join(sorted(k for _, k in CRD_SCHEMAS)) or "none yet"
    return located_error(
        obj,
        obj.origin,
        f"kind {kind} (apiVersion {api_version}) is not a Kubernetes kind grpclab knows",
        ("kind",),
        detail=f"grpclab knows the Kubernetes {KUBERNETES_VERSION} API and these custom "
        f"resources: {known}",
    )


def _raise_schema_error(obj: ManifestObject, error: Any) -> None:
    path = tuple(error.path)
    instance, schema = error.instance, error.schema
    detail = None
    if error.validator == "additionalProperties" and isinstance(instance, Mapping):
        known = set(schema.get("properties", {}))
        extras = [key for key in instance if key not in known]
        unknown = extras[0] if extras else "?"
        path += (unknown,)
        reason = f"unknown field {unknown!r}"
        close = difflib.get_close_matches(str(unknown), sorted(known), n=1)
        if close:
            detail = f"did you mean {close[0]!r}?"
        elif known:
            detail = "known fields here: " + ", ".join(sorted(known))
    elif error.validator == "required":
        missing = [key for key in error.validator_value if key not in (instance or {})]
        path += (missing[0],) if missing else ()
        reason = "required field is missing"
    elif error.validator == "type":
        reason = f"{show(instance)} is not of type {_types(error.validator_value)}"
        if path[-2:] == ("grpc", "port"):
            detail = (
                "a gRPC probe takes a port number only (GRPCAction.port is an int32 in the "
                "Kubernetes API, unlike tcpSocket and httpGet ports); write the number"
            )
        elif "string" in _as_list(error.validator_value) and isinstance(instance, int | float):
            # YAML reads 5000, true and 1.0 as numbers and booleans; env values stay text.
            detail = f'quote it: "{show(instance)}"'
    elif error.validator == "enum":
        allowed = [value for value in error.validator_value if value is not None]
        reason = f"{show(instance)} is not one of " + ", ".join(repr(v) for v in allowed)
        if path in (("kind",), ("apiVersion",)):
            detail = "kinds and apiVersions are case-sensitive"
    elif error.validator in ("oneOf", "anyOf") and all(
        set(sub) == {"type"} for sub in error.validator_value
    ):
        types = [t for sub in error.validator_value for t in _as_list(sub["type"])]
        reason = f"{show(instance)} is not of type {_types(types)}"
    else:
        reason = error.message if len(error.message) <= 200 else error.message[:200] + "..."
    raise located_error(obj, obj.origin, reason, path, detail=detail)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _types(value: Any) -> str:
    names = [name for name in _as_list(value) if name != "null"]
    return " or ".join(repr(name) for name in names)
