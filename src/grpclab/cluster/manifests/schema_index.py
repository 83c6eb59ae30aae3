"""Kubernetes' own JSON schema (strict), as one compact generated index, and its validator.

kubernetes-validate ships the schema as 637 files per version (4 MB for 1.31, a 1.3 MB
definitions file read again for every object), and importing it imports jsonschema's
format checkers: 1.2 to 1.6 s here on a quiet machine, 6 s on a busy one. The index keeps
only the keywords that assert something (descriptions and x-kubernetes-* annotations go),
in one file of 490 KiB.
Regenerate it with `python -m grpclab.cluster.manifests.index_build` (`--check` tells
whether it is current; a test runs that). `first_error` walks it as jsonschema's Draft
2020-12 validator walks the original files, and stops at the same first error.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The one Kubernetes version every manifest is checked against. Keep it at the minor version
# of the kind node image that cluster/ pins, so "valid here" means "kubectl apply accepts it".
KUBERNETES_VERSION = "1.31"
INDEX = Path(__file__).with_name(f"kubernetes-{KUBERNETES_VERSION}-strict.json")


@dataclass(frozen=True)
class SchemaError:
    """The first problem, with the fields of jsonschema's ValidationError that errors read."""

    validator: str
    validator_value: Any
    instance: Any
    schema: Mapping[str, Any]
    path: tuple[Any, ...]
    message: str


def schema_name(api_version: str, kind: str) -> str:
    """The schema's file name without .json, found as kubernetes-validate finds it:
    `networking.k8s.io/v1` + `Ingress` -> `ingress-networking-v1`."""
    mangled = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    return f"{kind.lower()}-{mangled}"


@functools.cache
def _index() -> dict[str, Any]:
    return json.loads(INDEX.read_text(encoding="utf-8"))


def lookup(api_version: str, kind: str) -> Mapping[str, Any] | None:
    """The schema of a whole object, or None when Kubernetes has no such schema file."""
    return _index()["kinds"].get(schema_name(api_version, kind))


def api_versions_of(kind: str) -> list[str]:
    """apiVersions at which the schema has `kind` (exact case), in file-name order."""
    found: list[str] = []
    kinds = _index()["kinds"]
    prefix = f"{kind.lower()}-"
    for name in sorted((n for n in kinds if n.startswith(prefix)), key=lambda n: n + ".json"):
        properties = kinds[name].get("properties", {})
        if kind in properties.get("kind", {}).get("enum", []):
            found.extend(properties.get("apiVersion", {}).get("enum", []))
    return found


def first_error(instance: Any, schema: Mapping[str, Any]) -> SchemaError | None:
    """The error jsonschema's `Draft202012Validator(schema).validate` would raise first."""
    return next(_errors(instance, schema, (), _index()["defs"]), None)


def _errors(
    instance: Any, schema: Mapping[str, Any], path: tuple[Any, ...], defs: Mapping[str, Any]
) -> Iterator[SchemaError]:
    # Keyword by keyword in the schema's own order, as jsonschema's iter_errors goes.
    for keyword, value in schema.items():
        if keyword == "$ref":
            yield from _errors(instance, defs[value], path, defs)
        elif keyword == "type":
            types = value if isinstance(value, list) else [value]
            if not any(_is_type(instance, name) for name in types):
                shown = ", ".join(repr(name) for name in types)
                yield SchemaError(
                    keyword, value, instance, schema, path, f"{instance!r} is not of type {shown}"
                )
        elif keyword == "enum":
            if all(not _equal(each, instance) for each in value):
                message = f"{instance!r} is not one of {value!r}"
                yield SchemaError(keyword, value, instance, schema, path, message)
        elif keyword == "required" and isinstance(instance, dict):
            for name in value:
                if name not in instance:
                    message = f"{name!r} is a required property"
                    yield SchemaError(keyword, value, instance, schema, path, message)
        elif keyword == "properties" and isinstance(instance, dict):
            for name, subschema in value.items():
                if name in instance:
                    yield from _errors(instance[name], subschema, (*path, name), defs)
        elif keyword == "additionalProperties" and isinstance(instance, dict):
            known = schema.get("properties", {})
            extras = [name for name in instance if name not in known]
            if isinstance(value, dict):
                # jsonschema walks a set of the extras here, in no fixed order; the
                # object's own order is the one a reader expects.
                for name in extras:
                    yield from _errors(instance[name], value, (*path, name), defs)
            elif value is False and extras:
                names = sorted(extras, key=str)
                verb = "was" if len(names) == 1 else "were"
                message = (
                    "Additional properties are not allowed "
                    f"({', '.join(repr(name) for name in names)} {verb} unexpected)"
                )
                yield SchemaError(keyword, value, instance, schema, path, message)
        elif keyword == "items" and isinstance(instance, list):
            for index, item in enumerate(instance):
                yield from _errors(item, value, (*path, index), defs)
        elif keyword == "oneOf":
            valid = [sub for sub in value if next(_errors(instance, sub, path, defs), None) is None]
            if not valid:
                message = f"{instance!r} is not valid under any of the given schemas"
                yield SchemaError(keyword, value, instance, schema, path, message)
            elif len(valid) > 1:
                shown = ", ".join(repr(sub) for sub in [*valid[1:], valid[0]])
                message = f"{instance!r} is valid under each of {shown}"
                yield SchemaError(keyword, value, instance, schema, path, message)


def _is_type(instance: Any, name: str) -> bool:
    """Draft 2020-12's types: a bool is no number, and 1.0 is an integer."""
    if name == "object":
        return isinstance(instance, dict)
    if name == "array":
        return isinstance(instance, list)
    if name == "string":
        return isinstance(instance, str)
    if name == "null":
        return instance is None
    if name == "boolean":
        return isinstance(instance, bool)
    if isinstance(instance, bool):
        return False
    if name == "integer":
        return isinstance(instance, int) or (isinstance(instance, float) and instance.is_integer())
    if name == "number":
        return isinstance(instance, int | float)
    raise ValueError(f"unknown JSON schema type {name!r}")


def _equal(one: Any, two: Any) -> bool:
    """jsonschema's `equal`: deep, and True is not 1."""
    if one is two:
        return True
    if isinstance(one, str) or isinstance(two, str):
        return one == two
    if isinstance(one, Sequence) and isinstance(two, Sequence):
        return len(one) == len(two) and all(_equal(a, b) for a, b in zip(one, two, strict=True))
    if isinstance(one, Mapping) and isinstance(two, Mapping):
        return len(one) == len(two) and all(k in two and _equal(v, two[k]) for k, v in one.items())
    if isinstance(one, bool) or isinstance(two, bool):
        return False  # `one is two` was not true
    return one == two
