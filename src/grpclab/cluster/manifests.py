"""Read Kubernetes manifests, check them against the API schema, and say what the sandbox can run.

Nothing is applied here: a backend calls `load_objects` (and the sandbox also
`check_sandbox_support`) first, so bad input fails before any state changes.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from grpclab.paths import REPO

# The one Kubernetes version every manifest is checked against. Keep it at the minor version
# of the kind node image that cluster/ pins, so "valid here" means "kubectl apply accepts it".
KUBERNETES_VERSION = "1.31"

# Kinds that live outside namespaces, so `default_namespace` must not be filled in for them.
CLUSTER_SCOPED_KINDS = frozenset(
    {
        "APIService",
        "CertificateSigningRequest",
        "ClusterRole",
        "ClusterRoleBinding",
        "CSIDriver",
        "CSINode",
        "CustomResourceDefinition",
        "FlowSchema",
        "GatewayClass",
        "IngressClass",
        "MutatingWebhookConfiguration",
        "Namespace",
        "Node",
        "PersistentVolume",
        "PriorityClass",
        "PriorityLevelConfiguration",
        "RuntimeClass",
        "StorageClass",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "ValidatingWebhookConfiguration",
        "VolumeAttachment",
    }
)

# Custom resources grpclab knows, as (apiVersion, kind) -> JSON schema of the whole object.
# Empty until the Istio, Gateway API and Linkerd notebooks add theirs; a kind that is
# neither here nor in the Kubernetes schema is rejected as unknown.
CRD_SCHEMAS: dict[tuple[str, str], Mapping[str, Any]] = {}

# The sandbox runs only grpclab's demo server, whatever tag is asked for. These repositories
# name it: our own image, its flat spelling, and the guide's `<registry>/grpc-server`.
DEMO_SERVER_REPOSITORIES = ("grpclab/demo-server", "grpclab-demo-server", "grpc-server")

# Each sandbox pod is a real process; on a 2-core laptop more than this only measures the
# laptop, not the load balancer.
SANDBOX_MAX_REPLICAS = 20

# The Downward API fields the sandbox fills in for a pod.
SANDBOX_FIELD_REFS = ("metadata.name", "metadata.namespace", "status.podIP")

_YAML_SUFFIXES = (".yaml", ".yml")
# The checkout root, so that "cluster/manifests/..." also works from a notebook whose
# working directory is notebooks/.
_CHECKOUT_ROOT = REPO


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
class _Origin:
    """Where one object came from: file (or "<text>"/"<dict>"), document, YAML node."""

    source: str
    document: int | None
    node: yaml.Node | None = None
    item: int | None = None  # index in a `kind: List`'s items


class ManifestObject(dict):
    """A plain dict (one Kubernetes object) that remembers where it was read from."""

    origin: _Origin


# A dict subclass is not a dict to PyYAML's safe dumpers; teach them, so these dump as dicts.
for _dumper in (yaml.SafeDumper, getattr(yaml, "CSafeDumper", yaml.SafeDumper)):
    _dumper.add_representer(ManifestObject, yaml.SafeDumper.represent_dict)


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
        _default_namespace(obj, default_namespace)
    _check_duplicates(objects)
    for obj in objects:
        _check_schema(obj)
        problem = next(_api_server_rules(obj), None)
        if problem is not None:
            raise _error(obj, obj.origin, problem.reason, problem.field, detail=problem.hint)
    return list(objects)


def check_sandbox_support(objects: Sequence[Mapping[str, Any]], source_label: str) -> None:
    """Raise ManifestError if the sandbox cannot run one of `objects` (from `load_objects`).
    Objects that load_objects returned name their own file; plain dicts get `source_label`."""
    for index, obj in enumerate(objects):
        checker = SANDBOX_KINDS.get((obj.get("apiVersion"), obj.get("kind")))
        if checker is None:
            supported = ", ".join(kind for _, kind in SANDBOX_KINDS)
            problem: _Problem | None = _Problem(
                ("kind",),
                f"the sandbox backend does not support kind {obj.get('kind')} yet; "
                f"it supports {supported}",
                "use the kind backend (GRPCLAB_BACKEND=kind) for everything else",
            )
        else:
            problem = next(checker(obj), None)
        if problem is not None:
            raise refusal(obj, source_label, index, problem.reason, problem.field, problem.hint)


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
    origin = getattr(obj, "origin", None) or _Origin(source_label, index)
    return _error(obj, origin, reason, field, detail=detail)


# --- reading ---------------------------------------------------------------------------------


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


def _documents(source: Any) -> Iterator[tuple[_Origin, Any]]:
    if isinstance(source, Mapping):
        yield _Origin("<dict>", None), source
    elif isinstance(source, Path) or (isinstance(source, str) and _looks_like_path(source)):
        for path, label in _yaml_files(Path(source)):
            yield from _read_yaml(_read_text(path, label), label)
    elif isinstance(source, str):
        yield from _read_yaml(source, "<text>")
    elif isinstance(source, Sequence) and not isinstance(source, bytes):
        for index, value in enumerate(source):
            yield _Origin("<dict>", index), value
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


def _read_yaml(text: str, label: str) -> Iterator[tuple[_Origin, Any]]:
    """Every document of a YAML stream; the whole stream is parsed before the first yield."""
    loader = _ManifestLoader(text)
    documents: list[tuple[_Origin, Any]] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            documents.append(
                (_Origin(label, len(documents), node), loader.construct_document(node))
            )
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


def _objects_in(origin: _Origin, value: Any, in_list: bool = False) -> Iterator[ManifestObject]:
    if value is None and origin.node is not None and not in_list:
        return  # an empty YAML document, as between two `---` lines
    if not isinstance(value, Mapping):
        raise ManifestError(
            origin.source,
            f"expected a Kubernetes object (a mapping with apiVersion, kind and metadata), "
            f"found {_describe(value)}",
            document=origin.document,
            object=_document_label(origin),
            line=_line_of(origin.node, ()),
        )
    if value.get("kind") == "List" and "items" in value:
        items = value["items"]
        if not isinstance(items, list):
            raise ManifestError(
                origin.source,
                f"a List's items must be a list, found {_describe(items)}",
                document=origin.document,
                object=_document_label(origin),
                field="items",
                line=_line_of(origin.node, ("items",)),
            )
        for index, item in enumerate(items):
            item_node = _node_at(origin.node, ("items", index))
            yield from _objects_in(
                _Origin(origin.source, origin.document, item_node, index), item, in_list=True
            )
        return
    obj = ManifestObject(_plain(value))
    obj.origin = origin
    yield obj


# --- identity, namespace, duplicates -----------------------------------------------------------


def _check_identity(obj: ManifestObject) -> None:
    metadata = obj.get("metadata")
    if metadata is not None and not isinstance(metadata, Mapping):
        raise _error(obj, obj.origin, f"must be a mapping, not {_show(metadata)}", ("metadata",))
    for path in (("apiVersion",), ("kind",), ("metadata", "name")):
        value = obj.get(path[0]) if len(path) == 1 else (metadata or {}).get(path[1])
        if value is None:
            hint = None
            if "generateName" in (metadata or {}):
                hint = "kubectl apply needs a fixed name; generateName works only with create"
            raise _error(obj, obj.origin, "required field is missing", path, detail=hint)
        if not isinstance(value, str) or not value:
            reason = f"must be a non-empty string, not {_show(value)}"
            raise _error(obj, obj.origin, reason, path)
    namespace = (metadata or {}).get("namespace")
    if namespace is not None and not isinstance(namespace, str):
        reason = f"must be a string, not {_show(namespace)}"
        raise _error(obj, obj.origin, reason, ("metadata", "namespace"))


def _default_namespace(obj: ManifestObject, default_namespace: str | None) -> None:
    # Like `kubectl apply -n NS`: fill in objects that name no namespace, keep those that do.
    # (kubectl would refuse a mismatch; here the caller's default is only a default.)
    if default_namespace is None or obj["kind"] in CLUSTER_SCOPED_KINDS:
        return
    if not obj["metadata"].get("namespace"):
        obj["metadata"]["namespace"] = default_namespace


def _check_duplicates(objects: list[ManifestObject]) -> None:
    seen: dict[tuple[str, str, str | None, str], ManifestObject] = {}
    for obj in objects:
        group = obj["apiVersion"].rpartition("/")[0]
        key = (group, obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"])
        first = seen.setdefault(key, obj)
        if first is not obj:
            raise _error(
                obj,
                obj.origin,
                "the same object appears twice in one apply",
                ("metadata", "name"),
                detail=f"first at {_where(first.origin)}; keep one of them",
            )


# --- schema ------------------------------------------------------------------------------------


def _is_builtin_group(api_version: str) -> bool:
    group = api_version.rpartition("/")[0]
    return "." not in group or group.endswith(".k8s.io")


def _check_schema(obj: ManifestObject) -> None:
    import kubernetes_validate  # slow to import (jsonschema's format checkers); only when needed

    api_version, kind = obj["apiVersion"], obj["kind"]
    crd_schema = CRD_SCHEMAS.get((api_version, kind))
    if crd_schema is not None:
        import jsonschema

        error = jsonschema.exceptions.best_match(
            jsonschema.Draft202012Validator(crd_schema).iter_errors(obj)
        )
        if error is not None:
            _raise_schema_error(obj, error)
        return
    if not _is_builtin_group(api_version):
        raise _unknown_kind(obj)
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        raise _unknown_kind(obj) from None
    except kubernetes_validate.ValidationError as error:
        _raise_schema_error(obj, error)


def _unknown_kind(obj: ManifestObject) -> ManifestError:
    api_version, kind = obj["apiVersion"], obj["kind"]
    served = _builtin_api_versions(kind)
    if served:
        return _error(
            obj,
            obj.origin,
            f"Kubernetes {KUBERNETES_VERSION} has no {kind} at apiVersion {api_version}",
            ("apiVersion",),
            detail="use apiVersion: " + " or ".join(served),
        )
    known = ", ".join(sorted(k for _, k in CRD_SCHEMAS)) or "none yet"
    return _error(
        obj,
        obj.origin,
        f"kind {kind} (apiVersion {api_version}) is not a Kubernetes kind grpclab knows",
        ("kind",),
        detail=f"grpclab knows the Kubernetes {KUBERNETES_VERSION} API and these custom "
        f"resources: {known}",
    )


def _builtin_api_versions(kind: str) -> list[str]:
    """apiVersions at which the Kubernetes schema has `kind` (exact case), for hints."""
    import json

    import kubernetes_validate

    folder = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    folder /= f"v{KUBERNETES_VERSION}.0-local-strict"
    found: list[str] = []
    for path in sorted(folder.glob(f"{kind.lower()}-*.json")):
        properties = json.loads(path.read_text()).get("properties", {})
        if kind in properties.get("kind", {}).get("enum", []):
            found.extend(properties.get("apiVersion", {}).get("enum", []))
    return found


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
        reason = f"{_show(instance)} is not of type {_types(error.validator_value)}"
        if path[-2:] == ("grpc", "port"):
            detail = (
                "a gRPC probe takes a port number only (GRPCAction.port is an int32 in the "
                "Kubernetes API, unlike tcpSocket and httpGet ports); write the number"
            )
        elif "string" in _as_list(error.validator_value) and isinstance(instance, int | float):
            # YAML reads 5000, true and 1.0 as numbers and booleans; env values stay text.
            detail = f'quote it: "{_show(instance)}"'
    elif error.validator == "enum":
        allowed = [value for value in error.validator_value if value is not None]
        reason = f"{_show(instance)} is not one of " + ", ".join(repr(v) for v in allowed)
        if path in (("kind",), ("apiVersion",)):
            detail = "kinds and apiVersions are case-sensitive"
    elif error.validator in ("oneOf", "anyOf") and all(
        set(sub) == {"type"} for sub in error.validator_value
    ):
        types = [t for sub in error.validator_value for t in _as_list(sub["type"])]
        reason = f"{_show(instance)} is not of type {_types(types)}"
    else:
        reason = error.message if len(error.message) <= 200 else error.message[:200] + "..."
    raise _error(obj, obj.origin, reason, path, detail=detail)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _types(value: Any) -> str:
    names = [name for name in _as_list(value) if name != "null"]
    return " or ".join(repr(name) for name in names)


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping | list):
        return _describe(value)
    return repr(value)


def _describe(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "an empty document"
    if isinstance(value, str):
        return f"the text {value!r}"[:80]
    return f"the value {value!r}"[:80]


# --- error locations ---------------------------------------------------------------------------


def _field_path(parts: Sequence[Any]) -> str:
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


def _node_at(node: yaml.Node | None, parts: Sequence[Any]) -> yaml.Node | None:
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


def _line_of(node: yaml.Node | None, parts: Sequence[Any]) -> int | None:
    if node is None:
        return None
    parent = _node_at(node, parts[:-1]) if parts else None
    if parts and isinstance(parent, yaml.MappingNode):
        # For a mapping key, point at the key itself: that is where the reader looks.
        for key_node, _ in parent.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(parts[-1]):
                return key_node.start_mark.line + 1
    found = _node_at(node, parts)
    return found.start_mark.line + 1 if found is not None else None


def _document_label(origin: _Origin) -> str:
    """Counts documents from 1, as an editor counts lines; `ManifestError.document` is 0-based."""
    parts = []
    if origin.document is not None:
        parts.append(f"document {origin.document + 1}")
    if origin.item is not None:
        parts.append(f"items[{origin.item}]")
    return ", ".join(parts) or "object"


def _object_label(obj: Mapping[str, Any], origin: _Origin) -> str:
    kind = obj.get("kind") if isinstance(obj.get("kind"), str) else None
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
    name = metadata.get("name") if isinstance(metadata.get("name"), str) else None
    if not kind:
        return _document_label(origin)
    if not name:
        return f"{kind} in {_document_label(origin)}"
    namespace = metadata.get("namespace")
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"


def _where(origin: _Origin) -> str:
    line = _line_of(origin.node, ())
    text = f"{origin.source}:{line}" if line else origin.source
    return f"{text} ({_document_label(origin)})" if origin.document is not None else text


def _error(
    obj: Mapping[str, Any],
    origin: _Origin,
    reason: str,
    field: Sequence[Any] | None,
    detail: str | None = None,
) -> ManifestError:
    return ManifestError(
        origin.source,
        reason,
        document=origin.document,
        object=_object_label(obj, origin),
        field=_field_path(field) if field else None,
        line=_line_of(origin.node, field or ()),
        detail=detail,
    )


# --- what the API server checks beyond the schema ------------------------------------------------

# Where workload kinds keep their pod spec; the API server validates every one of them.
_POD_SPEC_PATHS = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}
# kube-apiserver's default --service-node-port-range.
NODE_PORT_RANGE = (30000, 32767)


def _api_server_rules(obj: Mapping[str, Any]) -> Iterator[_Problem]:
    """Port rules that kube-apiserver enforces and the JSON schema cannot express.

    From its validation (pkg/apis/core/validation): every port is 1-65535, a named port
    is an IANA service name, and a nodePort lies in the node port range.
    """
    if obj.get("apiVersion") == "v1" and obj.get("kind") == "Service":
        yield from _service_port_rules(obj.get("spec") or {})
        return
    path = _POD_SPEC_PATHS.get(str(obj.get("kind")))
    if path is None or "." in obj.get("apiVersion", "").split("/")[0]:
        return
    pod: Any = obj
    for key in path:
        pod = (pod or {}).get(key) if isinstance(pod, Mapping) else None
    grace = (pod or {}).get("terminationGracePeriodSeconds", 30)
    for group in ("initContainers", "containers"):
        for index, container in enumerate(_items((pod or {}).get(group))):
            yield from _container_port_rules(container, (*path, group, index))
            yield from _sleep_action_rules(container, grace, (*path, group, index))


def _sleep_action_rules(
    container: Mapping[str, Any], grace: Any, path: tuple[Any, ...]
) -> Iterator[_Problem]:
    """validateSleepAction (pkg/apis/core/validation): 0 < seconds <= the grace period, as
    on the Kubernetes of cluster/kind.yaml (1.31); 1.33 and later also take 0 (KEP-4818)."""
    for hook in ("preStop", "postStart"):
        sleep = ((container.get("lifecycle") or {}).get(hook) or {}).get("sleep")
        seconds = (sleep or {}).get("seconds")
        if isinstance(seconds, int) and isinstance(grace, int) and not 0 < seconds <= grace:
            yield _Problem(
                (*path, "lifecycle", hook, "sleep", "seconds"),
                f"Invalid value: {seconds}: must be greater than 0 and less than "
                f"terminationGracePeriodSeconds ({grace})",
                "Kubernetes refuses this too: the hook counts against the grace period",
            )


def _port_number_problem(value: Any, where: tuple[Any, ...]) -> _Problem | None:
    if isinstance(value, int) and not 1 <= value <= 65535:
        return _Problem(where, f"Invalid value: {value}: must be between 1 and 65535, inclusive")
    return None


def _port_name_problem(value: Any, where: tuple[Any, ...]) -> _Problem | None:
    if isinstance(value, str) and not (
        len(value) <= 15 and _PORT_NAME.fullmatch(value) and re.search("[a-z]", value)
    ):
        return _Problem(
            where,
            f"Invalid value: {value!r}: a port is a number or an IANA service name",
            "a name has at most 15 characters: lowercase letters, digits and '-', with at "
            "least one letter",
        )
    return None


def _container_port_rules(
    container: Mapping[str, Any], path: tuple[Any, ...]
) -> Iterator[_Problem]:
    for index, port in enumerate(_items(container.get("ports"))):
        for key in ("containerPort", "hostPort"):
            if key in port:
                problem = _port_number_problem(port[key], (*path, "ports", index, key))
                if problem:
                    yield problem
    for probe_key in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = container.get(probe_key) or {}
        for handler in ("grpc", "tcpSocket", "httpGet"):
            if "port" in (probe.get(handler) or {}):
                where = (*path, probe_key, handler, "port")
                value = probe[handler]["port"]
                problem = _port_number_problem(value, where) or _port_name_problem(value, where)
                if problem:
                    yield problem


def _service_port_rules(spec: Mapping[str, Any]) -> Iterator[_Problem]:
    service_type = spec.get("type") or "ClusterIP"
    for index, port in enumerate(_items(spec.get("ports"))):
        where = ("spec", "ports", index)
        problem = _port_number_problem(port.get("port"), (*where, "port"))
        # targetPort 0 (or "") is no mistake: the API server defaults it to `port`.
        target = port.get("targetPort")
        problem = (
            problem
            or _port_number_problem(target, (*where, "targetPort"))
            or (_port_name_problem(target, (*where, "targetPort")) if target != "" else None)
        )
        if problem:
            yield problem
        node_port = port.get("nodePort")
        if not node_port:
            continue  # 0 or unset: the API server picks one for NodePort and LoadBalancer
        if service_type in ("ClusterIP", "ExternalName"):
            yield _Problem(
                (*where, "nodePort"),
                f"Forbidden: may not be used when `type` is '{service_type}'",
                "nodePort needs type NodePort or LoadBalancer",
            )
        elif not NODE_PORT_RANGE[0] <= node_port <= NODE_PORT_RANGE[1]:
            low, high = NODE_PORT_RANGE
            yield _Problem(
                (*where, "nodePort"),
                f"Invalid value: {node_port}: provided port is not in the valid range. "
                f"The range of valid ports is {low}-{high}",
                "or leave nodePort out, and Kubernetes picks a free one",
            )


# --- sandbox support ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Problem:
    field: tuple[Any, ...]
    reason: str
    hint: str | None = None


_Checker = Callable[[Mapping[str, Any]], Iterator[_Problem]]


def _items(value: Any) -> list[Mapping[str, Any]]:
    """A list field's entries; the schema lets entries be null, which reads as empty here."""
    return [item or {} for item in value or []]


_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(rf"{_DNS_LABEL.pattern}(\.{_DNS_LABEL.pattern})*")
_PORT_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def _check_name(obj: Mapping[str, Any], pattern: re.Pattern[str], limit: int) -> Iterator[_Problem]:
    # Kubernetes checks these on the server; the sandbox turns names into DNS names and pod
    # names, so it checks them the same way.
    name = obj["metadata"]["name"]
    if len(name) > limit or not pattern.fullmatch(name):
        first = (
            "a lowercase letter" if pattern is _DNS_1035_LABEL else "a lowercase letter or digit"
        )
        yield _Problem(
            ("metadata", "name"),
            f"{name!r} is not a valid {obj['kind']} name",
            f"at most {limit} characters: lowercase letters, digits and '-', starting with "
            f"{first} and ending with a letter or digit",
        )


def _check_namespace(obj: Mapping[str, Any]) -> Iterator[_Problem]:
    yield from _check_name(obj, _DNS_LABEL, 63)


def _check_service(obj: Mapping[str, Any]) -> Iterator[_Problem]:
    yield from _check_name(obj, _DNS_1035_LABEL, 63)
    spec = obj.get("spec") or {}
    service_type = spec.get("type") or "ClusterIP"
    if service_type != "ClusterIP":
        yield _Problem(
            ("spec", "type"),
            f"the sandbox backend supports only type ClusterIP, not {service_type}",
            "the sandbox has no nodes or cloud load balancer; reach Services through "
            "cluster.target(), or use the kind backend",
        )
    headless = spec.get("clusterIP") == "None"
    if spec.get("clusterIP") not in (None, "", "None"):
        yield _Problem(
            ("spec", "clusterIP"),
            "the sandbox assigns cluster IPs from its own loopback block; "
            f"remove clusterIP: {spec['clusterIP']}",
            "or set clusterIP: None for a headless Service",
        )
    cluster_ips = spec.get("clusterIPs")
    if cluster_ips and cluster_ips != ["None"] and cluster_ips != [spec.get("clusterIP")]:
        yield _Problem(
            ("spec", "clusterIPs"),
            "the sandbox assigns cluster IPs from its own loopback block; remove clusterIPs",
        )
    if spec.get("sessionAffinity") == "ClientIP":
        yield _Problem(
            ("spec", "sessionAffinity"),
            "the sandbox backend does not support sessionAffinity: ClientIP yet",
            "every client in the sandbox is on 127.0.0.1, so it would pin all of them to one pod",
        )
    if spec.get("externalTrafficPolicy"):
        # Kubernetes itself refuses this field on a ClusterIP Service.
        yield _Problem(
            ("spec", "externalTrafficPolicy"),
            "externalTrafficPolicy applies only to NodePort and LoadBalancer Services",
        )
    # internalTrafficPolicy: Local is accepted: the sandbox is one node, so every endpoint is
    # node-local and the result is the same as with Cluster (as on a one-node kind cluster).
    for key in ("externalIPs", "loadBalancerIP", "externalName", "loadBalancerSourceRanges"):
        if spec.get(key):
            yield _Problem(("spec", key), f"the sandbox backend does not support {key}")
    if not spec.get("selector"):
        yield _Problem(
            ("spec", "selector"),
            "the sandbox backend needs a selector; Services without one need hand-made "
            "EndpointSlices, which it does not support yet",
        )
    ports = _items(spec.get("ports"))
    if not ports and not headless:
        yield _Problem(("spec", "ports"), "a ClusterIP Service needs at least one port")
    names: dict[str, int] = {}
    for index, port in enumerate(ports):
        where = ("spec", "ports", index)
        name = port.get("name")
        if len(ports) > 1 and not name:
            yield _Problem(
                (*where, "name"),
                "every port needs a name when a Service has more than one",
                "Kubernetes refuses this too",
            )
        if name and names.setdefault(name, index) != index:
            yield _Problem((*where, "name"), f"port name {name!r} is used twice")
        if (port.get("protocol") or "TCP") != "TCP":
            yield _Problem(
                (*where, "protocol"),
                f"the sandbox backend carries only TCP, not {port['protocol']}",
            )


def _check_deployment(obj: Mapping[str, Any]) -> Iterator[_Problem]:
    yield from _check_name(obj, _DNS_SUBDOMAIN, 253)
    spec = obj.get("spec") or {}
    replicas = spec.get("replicas")
    if replicas is not None and replicas < 0:
        yield _Problem(("spec", "replicas"), f"replicas must be 0 or more, not {replicas}")
    if replicas is not None and replicas > SANDBOX_MAX_REPLICAS:
        yield _Problem(
            ("spec", "replicas"),
            f"the sandbox runs at most {SANDBOX_MAX_REPLICAS} replicas, not {replicas}",
            "each sandbox pod is a real process, and a 2-core laptop shows little more than "
            f"{SANDBOX_MAX_REPLICAS}; use the kind backend for more",
        )
    template = spec.get("template") or {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    yield from _check_selector(spec.get("selector") or {}, labels)
    pod = template.get("spec") or {}
    pod_path = ("spec", "template", "spec")
    containers = _items(pod.get("containers"))
    if len(containers) != 1:
        yield _Problem(
            (*pod_path, "containers"),
            f"the sandbox backend runs exactly one container per pod, not {len(containers)}",
            "each sandbox pod is one demo-server process",
        )
    for key in ("initContainers", "ephemeralContainers", "volumes"):
        if pod.get(key):
            yield _Problem((*pod_path, key), f"the sandbox backend does not support {key} yet")
    for index, container in enumerate(containers[:1]):
        yield from _check_container(container, (*pod_path, "containers", index))


def _check_selector(selector: Mapping[str, Any], labels: Mapping[str, Any]) -> Iterator[_Problem]:
    match_labels = selector.get("matchLabels") or {}
    expressions = _items(selector.get("matchExpressions"))
    if not match_labels and not expressions:
        yield _Problem(("spec", "selector"), "empty selector is invalid for deployment")
        return
    mismatched = [key for key, value in match_labels.items() if labels.get(key) != value]
    for expression in expressions:
        key, operator = expression.get("key"), expression.get("operator")
        values = expression.get("values") or []
        matches = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }.get(operator, False)
        if not matches:
            mismatched.append(key)
    if mismatched:
        yield _Problem(
            ("spec", "selector"),
            "selector does not match template labels",
            f"spec.template.metadata.labels must satisfy the selector on {', '.join(mismatched)}; "
            "Kubernetes refuses this too",
        )


def _image_repository(image: str) -> str:
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


def _check_container(container: Mapping[str, Any], path: tuple[Any, ...]) -> Iterator[_Problem]:
    from grpclab.cluster.containers import (
        IMAGE_ENTRYPOINT,
        UnsupportedHook,
        container_argv,
        prestop_sleep_seconds,
        server_flags,
    )

    command = container.get("command")
    if command and server_flags(container_argv(command, container.get("args"))) is None:
        yield _Problem(
            (*path, "command"),
            f"the sandbox runs only the demo server, not {' '.join(map(str, command))!r}",
            "drop command: the image's ENTRYPOINT is `" + " ".join(IMAGE_ENTRYPOINT) + "`, "
            "and args are its flags; or start the command with it",
        )
    image = container.get("image") or ""
    repository = _image_repository(image)
    if not any(repository == r or repository.endswith("/" + r) for r in DEMO_SERVER_REPOSITORIES):
        yield _Problem(
            (*path, "image"),
            f"the sandbox cannot pull images; it runs only the demo server, not {image!r}",
            "use grpclab/demo-server:<tag> (it runs `python -m grpclab.demo.server`); "
            "the kind backend runs any image",
        )
    for key in ("volumeMounts", "volumeDevices", "envFrom"):
        if container.get(key):
            yield _Problem((*path, key), f"the sandbox backend does not support {key} yet")
    try:
        prestop_sleep_seconds(container)
    except UnsupportedHook as refused:
        yield _Problem((*path, *refused.field.split(".")), refused.reason, refused.hint or None)
    ports = _items(container.get("ports"))
    port_names: dict[str, int] = {}
    for index, port in enumerate(ports):
        name = port.get("name")
        if name is None:
            continue
        if len(name) > 15 or not _PORT_NAME.fullmatch(name) or not re.search("[a-z]", name):
            yield _Problem(
                (*path, "ports", index, "name"),
                f"{name!r} is not a valid port name",
                "at most 15 characters: lowercase letters, digits and '-', with at least one "
                "letter; Kubernetes refuses this too",
            )
        if port_names.setdefault(name, index) != index:
            yield _Problem((*path, "ports", index, "name"), f"port name {name!r} is used twice")
    for index, port in enumerate(ports):
        if (port.get("protocol") or "TCP") != "TCP":
            yield _Problem(
                (*path, "ports", index, "protocol"),
                f"the sandbox backend carries only TCP, not {port['protocol']}",
            )
    for probe_key in ("readinessProbe", "livenessProbe", "startupProbe"):
        probe = container.get(probe_key)
        if probe:
            yield from _check_probe(probe, (*path, probe_key), port_names)
    for index, variable in enumerate(_items(container.get("env"))):
        yield from _check_env(variable, (*path, "env", index))


def _check_probe(
    probe: Mapping[str, Any], path: tuple[Any, ...], port_names: Mapping[str, int]
) -> Iterator[_Problem]:
    for handler in ("httpGet", "exec"):
        if handler in probe:
            yield _Problem(
                (*path, handler),
                f"the sandbox backend supports grpc and tcpSocket probes, not {handler}",
                "the demo server serves grpc.health.v1; use `grpc: {port: 50051}`",
            )
    port = (probe.get("tcpSocket") or {}).get("port")
    if isinstance(port, str) and port not in port_names:
        known = ", ".join(port_names) or "none"
        yield _Problem(
            (*path, "tcpSocket", "port"),
            f"no containerPort is named {port!r} (named ports: {known})",
            "on Kubernetes this probe would fail forever",
        )


def _check_env(variable: Mapping[str, Any], path: tuple[Any, ...]) -> Iterator[_Problem]:
    source = variable.get("valueFrom")
    if not source:
        return
    for key in source:
        if key != "fieldRef":
            yield _Problem(
                (*path, "valueFrom", key),
                f"the sandbox backend does not support valueFrom.{key} yet",
                "it fills in fieldRef for " + ", ".join(SANDBOX_FIELD_REFS),
            )
    field_path = (source.get("fieldRef") or {}).get("fieldPath")
    if "fieldRef" in source and field_path not in SANDBOX_FIELD_REFS:
        yield _Problem(
            (*path, "valueFrom", "fieldRef", "fieldPath"),
            f"the sandbox backend cannot fill in {field_path}",
            "it fills in " + ", ".join(SANDBOX_FIELD_REFS),
        )


# What the sandbox backend can run, one checker per (apiVersion, kind). Later issues add
# kinds here (Ingress, Gateway, DestinationRule, ...) with their own checker.
SANDBOX_KINDS: dict[tuple[str, str], _Checker] = {
    ("v1", "Namespace"): _check_namespace,
    ("apps/v1", "Deployment"): _check_deployment,
    ("v1", "Service"): _check_service,
}

# Istio, Ingress and TLS Secrets, Gateway API, Linkerd and Traefik kinds: their schemas and
# sandbox checks live in their own modules, whose KINDS tables go into the two tables above.
from grpclab.cluster.crds import gateway_api as _gateway_api_crds  # noqa: E402
from grpclab.cluster.crds import ingress as _ingress_kinds  # noqa: E402
from grpclab.cluster.crds import istio as _istio_crds  # noqa: E402
from grpclab.cluster.crds import linkerd as _linkerd_crds  # noqa: E402
from grpclab.cluster.crds import traefik as _traefik_crds  # noqa: E402
from grpclab.cluster.crds.shapes import register_all as _register_all  # noqa: E402

for _module in (_istio_crds, _ingress_kinds, _gateway_api_crds, _linkerd_crds, _traefik_crds):
    _register_all(CRD_SCHEMAS, SANDBOX_KINDS, _Problem, _module.KINDS)


# --- namespace override (one namespace per attendee) ------------------------------------


def default_is_namespaced(api_version: str, kind: str) -> bool:
    """Offline guess: every kind is namespaced except the well-known cluster-scoped ones.

    On a live cluster, discovery answers instead (see `KubeCluster._plan`).
    """
    return kind not in CLUSTER_SCOPED_KINDS


def override_namespace(
    objects: Iterable[Mapping[str, Any]],
    namespace: str,
    is_namespaced: Callable[[str, str], bool] = default_is_namespaced,
) -> list[dict[str, Any]]:
    """Copies of `objects` with every namespaced object moved into `namespace`.

    Namespace objects become the one Namespace `namespace` (their labels and annotations,
    such as istio-injection, are kept and merged), so a manifest written for `production`
    lands unchanged in one attendee's namespace on a shared cluster.
    """
    result: list[dict[str, Any]] = []
    merged_namespace: dict[str, Any] | None = None
    for original in objects:
        obj = json.loads(json.dumps(original))  # deep copy; manifests are plain JSON data
        if isinstance(original, ManifestObject):  # errors still name its file and line
            obj = ManifestObject(obj)
            obj.origin = original.origin
        metadata = obj.setdefault("metadata", {})
        if obj.get("kind") == "Namespace" and obj.get("apiVersion") == "v1":
            metadata["name"] = namespace
            if merged_namespace is None:
                merged_namespace = obj
                result.append(obj)
            else:
                for key in ("labels", "annotations"):
                    if metadata.get(key):
                        merged_namespace["metadata"].setdefault(key, {}).update(metadata[key])
            continue
        if is_namespaced(obj.get("apiVersion", ""), obj.get("kind", "")):
            moved_from = metadata.get("namespace")
            metadata["namespace"] = namespace
            if moved_from and moved_from != namespace:
                _move_service_hosts(obj, moved_from, namespace)
        else:
            metadata.pop("namespace", None)
        result.append(obj)
    return result


# Mesh objects name Services by their cluster DNS name (DestinationRule host, VirtualService
# hosts and destinations, a ServiceProfile's own name): moved with the object, or a rule
# written for `production` would apply to production's Service, not the attendee's.
_HOST_NAMING_GROUPS = ("networking.istio.io/", "linkerd.io/")


def _move_service_hosts(obj: dict[str, Any], old: str, new: str) -> None:
    if not obj.get("apiVersion", "").startswith(_HOST_NAMING_GROUPS):
        return
    suffix_old, suffix_new = f".{old}.svc.cluster.local", f".{new}.svc.cluster.local"

    def moved(value: Any) -> Any:
        if isinstance(value, str) and value.endswith(suffix_old) and value.count(".") == 4:
            return value.removesuffix(suffix_old) + suffix_new
        if isinstance(value, list):
            return [moved(item) for item in value]
        if isinstance(value, dict):
            return {key: moved(item) for key, item in value.items()}
        return value

    obj["spec"] = moved(obj.get("spec") or {})
    obj["metadata"]["name"] = moved(obj["metadata"].get("name"))
