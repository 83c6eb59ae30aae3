"""JSON-schema pieces the custom-resource schemas share, and the hook into manifest checks.

Strict on purpose: `additionalProperties: false` everywhere, so a field the sandbox does
not translate is an error that names it, not a setting that silently does nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

STRING = {"type": "string"}
NAME = {"type": "string", "minLength": 1}
PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}

Problem = Callable[[tuple[Any, ...], str], Any]
Check = Callable[[Mapping[str, Any]], None]
# (apiVersion, kind) -> (schema, None for Kubernetes' own; sandbox check; the error it raises)
Kinds = Mapping[tuple[str, str], tuple[Mapping[str, Any] | None, Check, type[ValueError]]]

_PATH_PART = re.compile(r"\[(\d+)\]|\['((?:[^'\\]|\\.)*)'\]|\.?([^.\[]+)")


def strict(properties: Mapping[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": dict(properties),
        "additionalProperties": False,
    }
    if required:
        schema["required"] = list(required)
    return schema


def array(items: Mapping[str, Any], min_items: int = 0) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "array", "items": dict(items)}
    if min_items:
        schema["minItems"] = min_items
    return schema


def custom_resource(
    api_version: str, kind: str, spec: Mapping[str, Any], namespaced: bool = True
) -> dict[str, Any]:
    """The schema of a whole object: apiVersion, kind, metadata and `spec`."""
    metadata = {"name": NAME, "labels": STRING_MAP, "annotations": STRING_MAP}
    if namespaced:
        metadata["namespace"] = STRING
    return strict(
        {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": strict(metadata, required=("name",)),
            "spec": spec,
        },
        required=("apiVersion", "kind", "metadata", "spec"),
    )


def field_parts(field: str) -> tuple[Any, ...]:
    """ "spec.http[0].retries" -> ("spec", "http", 0, "retries"), as manifest errors want it."""
    parts: list[Any] = []
    for index, quoted, name in _PATH_PART.findall(field):
        parts.append(int(index) if index else quoted if quoted else name)
    return tuple(parts)


def checker(check: Check, error_type: type[ValueError], problem: Problem):
    """A sandbox checker (yields problems) from a function that raises `error_type`."""

    def run(obj: Mapping[str, Any]) -> Iterator[Any]:
        try:
            check(obj)
        except error_type as error:
            yield problem(field_parts(error.field), error.reason)  # type: ignore[attr-defined]

    return run
