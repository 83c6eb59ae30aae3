"""ManifestError, and how every check names where a problem is: file:line, object, field.

The bottom of the package: it imports nothing from grpclab.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml


class ManifestError(ValueError):
    """Bad or unsupported manifest input; names the file, the object and the field."""

    def __init__(
        self,
        source: str,
        reason: str,
        *,
        document: int | None = None,
        object: str | None = None,
        field: str | None = None,
        line: int | None = None,
        column: int | None = None,
        detail: str | None = None,
    ) -> None:
        self.source = source
        self.document = document
        self.object = object
        self.field = field
        self.reason = reason
        self.line = line
        self.column = column
        self.detail = detail
        super().__init__(self._text())

    def _text(self) -> str:
        where = self.source
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        parts = [where, self.object, self.field, self.reason]
        text = ": ".join(part for part in parts if part)
        return f"{text}\n  {self.detail}" if self.detail else text


@dataclass(frozen=True)
class Origin:
    """Where one object came from: file (or "<text>"/"<dict>"), document, YAML node."""

    source: str
    document: int | None
    node: yaml.Node | None = None
    item: int | None = None  # index in a `kind: List`'s items


class ManifestObject(dict):
    """A plain dict (one Kubernetes object) that remembers where it was read from."""

    origin: Origin


# A dict subclass is not a dict to PyYAML's safe dumpers; teach them, so these dump as dicts.
for _dumper in (yaml.SafeDumper, getattr(yaml, "CSafeDumper", yaml.SafeDumper)):
    _dumper.add_representer(ManifestObject, yaml.SafeDumper.represent_dict)


def refusal(
    obj: Mapping[str, Any],
    source_label: str,
    index: int,
    reason: str,
    field: Sequence[Any],
    detail: str | None = None,
) -> ManifestError:
    """A ManifestError about `obj`, at its own file and line when `load_objects` read it,
    else at `source_label` and its position `index` there."""
    origin = getattr(obj, "origin", None) or Origin(source_label, index)
    return located_error(obj, origin, reason, field, detail=detail)


# --- what a check finds: a field, a reason and a hint ---------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing a check refuses: the field (a path of keys and indexes), why, and what to do."""

    field: tuple[Any, ...]
    reason: str
    hint: str | None = None


Checker = Callable[[Mapping[str, Any]], Iterator[Problem]]


def entries(value: Any) -> list[Mapping[str, Any]]:
    """A list field's entries; the schema lets entries be null, which reads as empty here."""
    return [item or {} for item in value or []]


# --- error locations ---------------------------------------------------------------------------


def field_path(parts: Sequence[Any]) -> str:
    """("spec", "ports", 0, "name") -> "spec.ports[0].name"; odd keys go in brackets."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_$][\w$-]*", str(part)):
            text += f".{part}" if text else str(part)
        else:
            text += f"[{str(part)!r}]"
    return text


def node_at(node: yaml.Node | None, parts: Sequence[Any]) -> yaml.Node | None:
    """The YAML node at `parts`, or the deepest node on the way there."""
    for part in parts:
        child = None
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(part):
                    child = value_node
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            child = node.value[part] if part < len(node.value) else None
        if child is None:
            return node
        node = child
    return node


def line_of(node: yaml.Node | None, parts: Sequence[Any]) -> int | None:
    if node is None:
        return None
    parent = node_at(node, parts[:-1]) if parts else None
    if parts and isinstance(parent, yaml.MappingNode):
        # For a mapping key, point at the key itself: that is where the reader looks.
        for key_node, _ in parent.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(parts[-1]):
                return key_node.start_mark.line + 1
    found = node_at(node, parts)
    return found.start_mark.line + 1 if found is not None else None


def document_label(origin: Origin) -> str:
    """Counts documents from 1, as an editor counts lines; `ManifestError.document` is 0-based."""
    parts = []
    if origin.document is not None:
        parts.append(f"document {origin.document + 1}")
    if origin.item is not None:
        parts.append(f"items[{origin.item}]")
    return ", ".join(parts) or "object"


def _object_label(obj: Mapping[str, Any], origin: Origin) -> str:
    kind = obj.get("kind") if isinstance(obj.get("kind"), str) else None
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
    name = metadata.get("name") if isinstance(metadata.get("name"), str) else None
    if not kind:
        return document_label(origin)
    if not name:
        return f"{kind} in {document_label(origin)}"
    namespace = metadata.get("namespace")
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"


def describe_origin(origin: Origin) -> str:
    line = line_of(origin.node, ())
    text = f"{origin.source}:{line}" if line else origin.source
    return f"{text} ({document_label(origin)})" if origin.document is not None else text


def located_error(
    obj: Mapping[str, Any],
    origin: Origin,
    reason: str,
    field: Sequence[Any] | None,
    detail: str | None = None,
) -> ManifestError:
    return ManifestError(
        origin.source,
        reason,
        document=origin.document,
        object=_object_label(obj, origin),
        field=field_path(field) if field else None,
        line=line_of(origin.node, field or ()),
        detail=detail,
    )


# --- how a value reads in a reason ---------------------------------------------------------------


def show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping | list):
        return describe(value)
    return repr(value)


def describe(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "an empty document"
    if isinstance(value, str):
        return f"the text {value!r}"[:80]
    return f"the value {value!r}"[:80]
