"""Reading manifests: files, directories, YAML text or dicts, as kubectl reads them, into
objects that remember their file and line; `load_objects` then runs every API check.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from grpclab.cluster.manifests import api_server, namespaces, schema
from grpclab.cluster.manifests.errors import (
    ManifestError,
    ManifestObject,
    Origin,
    describe,
    describe_origin,
    document_label,
    line_of,
    located_error,
    node_at,
    show,
)
from grpclab.paths import REPO

log = logging.getLogger(__name__)

_YAML_SUFFIXES = (".yaml", ".yml")
# The checkout root, so that "cluster/manifests/..." also works from a notebook whose
# working directory is notebooks/.
_CHECKOUT_ROOT = REPO


def load_objects(
    source: str | Path | Mapping[str, Any] | Sequence[Mapping[str, Any]],
    default_namespace: str | None = None,
) -> list[dict[str, Any]]:
    """Parse and schema-check every object in `source`: a .yaml file or directory, YAML text,
    a mapping or a list of mappings. Raises ManifestError for the first problem."""
    objects: list[ManifestObject] = []
    for origin, value in _documents(source):
        objects.extend(_objects_in(origin, value))
    if not objects:
        raise ManifestError(source_label(source), "no Kubernetes objects found")
    for obj in objects:
        _check_identity(obj)
        namespaces.fill_default_namespace(obj, default_namespace)
    _check_duplicates(objects)
    began = time.perf_counter()
    for obj in objects:
        schema.check_schema(obj)
        problem = next(api_server.problems(obj), None)
        if problem is not None:
            raise located_error(obj, obj.origin, problem.reason, problem.field, detail=problem.hint)
    took = time.perf_counter() - began
    # bench/bench_sandbox_start.py reads `schema_seconds` to show what the check costs.
    log.debug(
        "schema check of %d objects: %.4f s", len(objects), took, extra={"schema_seconds": took}
    )
    return list(objects)


def kubectl_ref(obj: Mapping[str, Any]) -> str:
    """`deployment.apps/grpc-server`, as kubectl names an object in its output."""
    api_version = obj.get("apiVersion", "")
    group = api_version.split("/")[0] if "/" in api_version else ""
    kind = str(obj.get("kind", "")).lower() + (f".{group}" if group else "")
    return f"{kind}/{obj.get('metadata', {}).get('name', '')}"


def source_label(source: Any) -> str:
    """How errors name a source: its path, or "<text>" / "<dict>"."""
    if isinstance(source, Path):
        return str(source)
    if isinstance(source, str):
        return str(source) if _looks_like_path(source) else "<text>"
    return "<dict>"


def _looks_like_path(text: str) -> bool:
    """A path is one line; YAML text has a newline or a ':' (and is not an existing file)."""
    if "\n" in text or not text.strip():
        return False
    if text.strip().endswith(_YAML_SUFFIXES) or ":" not in text:
        return True
    try:
        return Path(text).exists()
    except OSError:  # e.g. one long line of flow-style YAML: too long for a file name
        return False


def _documents(source: Any) -> Iterator[tuple[Origin, Any]]:
    if isinstance(source, Mapping):
        yield Origin("<dict>", None), source
    elif isinstance(source, Path) or (isinstance(source, str) and _looks_like_path(source)):
        for path, label in _yaml_files(Path(source)):
            yield from _read_yaml(_read_text(path, label), label)
    elif isinstance(source, str):
        yield from _read_yaml(source, "<text>")
    elif isinstance(source, Sequence) and not isinstance(source, bytes):
        for index, value in enumerate(source):
            yield Origin("<dict>", index), value
    else:
        raise ManifestError(
            "<input>",
            f"expected a path, YAML text, a mapping or a list of mappings, "
            f"got {type(source).__name__}",
        )


def _yaml_files(given: Path) -> list[tuple[Path, str]]:
    """The files `given` names, each with the label errors will show."""
    path, label = given, str(given)
    if not path.exists() and not path.is_absolute() and (_CHECKOUT_ROOT / given).exists():
        path = _CHECKOUT_ROOT / given
        label = str(path)
    if not path.exists():
        tried = [str(given.resolve())]
        if not given.is_absolute():
            tried.append(str(_CHECKOUT_ROOT / given))
        raise ManifestError(
            str(given),
            "file not found",
            detail="looked for " + " and ".join(dict.fromkeys(tried)),
        )
    if path.is_dir():
        # Like `kubectl apply -f DIR`: this directory only, in name order.
        files = sorted(p for p in path.iterdir() if p.suffix in _YAML_SUFFIXES and p.is_file())
        if not files:
            raise ManifestError(label, "directory has no .yaml or .yml files")
        return [(p, str(Path(label) / p.name)) for p in files]
    return [(path, label)]


def _read_text(path: Path, label: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ManifestError(
            label, f"not UTF-8 text ({error.reason} at byte {error.start})"
        ) from None
    except OSError as error:
        raise ManifestError(label, f"cannot read: {error.strerror}") from None


class _ManifestLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """Safe YAML, read the way kubectl reads it."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        # PyYAML keeps the last of two equal keys; kubectl refuses the file. A silently
        # dropped `ports:` or `env:` block is a miserable bug to hunt, so refuse it too.
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:  # an unhashable key; the base class reports it
                continue
            if first is not key_node:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} appears twice in one mapping "
                    f"(first on line {first.start_mark.line + 1})",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


def _timestamp_as_text(loader: yaml.Loader, node: yaml.Node) -> str:
    # Kubernetes fields are strings; a date-looking value must stay the text it was.
    return loader.construct_scalar(node)


_ManifestLoader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_as_text)
# A bare "=" is a YAML 1.1 "value" key; kubectl reads it as the string "=".
_ManifestLoader.add_constructor("tag:yaml.org,2002:value", _timestamp_as_text)


def _read_yaml(text: str, label: str) -> Iterator[tuple[Origin, Any]]:
    """Every document of a YAML stream; the whole stream is parsed before the first yield."""
    loader = _ManifestLoader(text)
    documents: list[tuple[Origin, Any]] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            documents.append((Origin(label, len(documents), node), loader.construct_document(node)))
    except yaml.YAMLError as error:
        raise _yaml_error(error, text, label, len(documents)) from None
    finally:
        loader.dispose()
    yield from documents


def _yaml_error(error: yaml.YAMLError, text: str, label: str, document: int) -> ManifestError:
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    context = getattr(error, "context", None)
    kind = (
        "YAML error"
        if isinstance(error, yaml.constructor.ConstructorError)
        else "YAML syntax error"
    )
    reason = f"{kind}: {problem}" + (f" ({context})" if context else "")
    if mark is None:
        return ManifestError(label, reason, document=document, object=f"document {document + 1}")
    lines = text.splitlines()
    shown = lines[mark.line].rstrip() if mark.line < len(lines) else ""
    detail = None
    if shown.strip():
        # Tabs would throw the caret off; show them as one space each, and say so.
        detail = f"{shown.replace(chr(9), ' ')}\n  {' ' * mark.column}^"
        if "\t" in shown[: mark.column + 1]:
            detail += " (a tab: YAML indents with spaces only)"
    return ManifestError(
        label,
        reason,
        document=document,
        object=f"document {document + 1}",
        line=mark.line + 1,
        column=mark.column + 1,
        detail=detail,
    )


def _plain(value: Any) -> Any:
    """A deep copy made of dicts and lists, so callers' objects are never changed."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _objects_in(origin: Origin, value: Any, in_list: bool = False) -> Iterator[ManifestObject]:
    if value is None and origin.node is not None and not in_list:
        return  # an empty YAML document, as between two `---` lines
    if not isinstance(value, Mapping):
        raise ManifestError(
            origin.source,
            f"expected a Kubernetes object (a mapping with apiVersion, kind and metadata), "
            f"found {describe(value)}",
            document=origin.document,
            object=document_label(origin),
            line=line_of(origin.node, ()),
        )
    if value.get("kind") == "List" and "items" in value:
        items = value["items"]
        if not isinstance(items, list):
            raise ManifestError(
                origin.source,
                f"a List's items must be a list, found {describe(items)}",
                document=origin.document,
                object=document_label(origin),
                field="items",
                line=line_of(origin.node, ("items",)),
            )
        for index, item in enumerate(items):
            item_node = node_at(origin.node, ("items", index))
            yield from _objects_in(
                Origin(origin.source, origin.document, item_node, index), item, in_list=True
            )
        return
    obj = ManifestObject(_plain(value))
    obj.origin = origin
    yield obj


# --- identity and duplicates -------------------------------------------------------------------


def _check_identity(obj: ManifestObject) -> None:
    metadata = obj.get("metadata")
    if metadata is not None and not isinstance(metadata, Mapping):
        raise located_error(
            obj, obj.origin, f"must be a mapping, not {show(metadata)}", ("metadata",)
        )
    for path in (("apiVersion",), ("kind",), ("metadata", "name")):
        value = obj.get(path[0]) if len(path) == 1 else (metadata or {}).get(path[1])
        if value is None:
            hint = None
            if "generateName" in (metadata or {}):
                hint = "kubectl apply needs a fixed name; generateName works only with create"
            raise located_error(obj, obj.origin, "required field is missing", path, detail=hint)
        if not isinstance(value, str) or not value:
            reason = f"must be a non-empty string, not {show(value)}"
            raise located_error(obj, obj.origin, reason, path)
    namespace = (metadata or {}).get("namespace")
    if namespace is not None and not isinstance(namespace, str):
        reason = f"must be a string, not {show(namespace)}"
        raise located_error(obj, obj.origin, reason, ("metadata", "namespace"))


def _check_duplicates(objects: list[ManifestObject]) -> None:
    seen: dict[tuple[str, str, str | None, str], ManifestObject] = {}
    for obj in objects:
        group = obj["apiVersion"].rpartition("/")[0]
        key = (group, obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"])
        first = seen.setdefault(key, obj)
        if first is not obj:
            raise located_error(
                obj,
                obj.origin,
                "the same object appears twice in one apply",
                ("metadata", "name"),
                detail=f"first at {describe_origin(first.origin)}; keep one of them",
            )
