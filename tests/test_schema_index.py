"""The compact Kubernetes schema index: current, and as strict as kubernetes-validate.

The sandbox and the kind backend check Kubernetes' own kinds against the index that
grpclab.cluster.manifests.schema_index generates from kubernetes-validate's files. These
tests compare its first error with the one jsonschema finds in the original files (as
kubernetes-validate runs it), object by object, on the shipped manifests, the bad fixtures
and a few hundred mutations of them.
"""

from __future__ import annotations

import copy
import functools
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from referencing import Registry, Resource
from support import BAD_MANIFESTS, MANIFESTS

from grpclab.cluster.manifests import KUBERNETES_VERSION, index_build, schema_index

FOLDER = (
    Path(kubernetes_validate.__file__).parent
    / "kubernetes-json-schema"
    / f"v{KUBERNETES_VERSION}.0-local-strict"
)
# Values that break a field in every way the schema tells apart.
REPLACEMENTS = (None, 7, 1.5, 2.0, True, "x", [], {}, [None], {"bogus": 1})


def test_the_index_is_current() -> None:
    assert index_build.main(["--check"]) == 0


@functools.cache
def _original_validator(name: str) -> jsonschema.Draft202012Validator | None:
    """What kubernetes_validate.validate builds for one schema file (once per file here)."""
    path = FOLDER / f"{name}.json"
    if not path.exists():
        return None
    schema = json.loads(path.read_text())
    definitions = json.loads((FOLDER / "_definitions.json").read_text())
    registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _original_first_error(obj: dict[str, Any]) -> tuple[Any, ...] | None:
    validator = _original_validator(schema_index.schema_name(obj["apiVersion"], obj["kind"]))
    assert validator is not None
    error = next(validator.iter_errors(obj), None)
    return None if error is None else (error.validator, tuple(error.path), error.message)


def _index_first_error(obj: dict[str, Any]) -> tuple[Any, ...] | None:
    schema = schema_index.lookup(obj["apiVersion"], obj["kind"])
    assert schema is not None
    error = schema_index.first_error(obj, schema)
    return None if error is None else (error.validator, error.path, error.message)


def _builtin_objects() -> list[dict[str, Any]]:
    """Every shipped or bad-fixture object of a kind the Kubernetes schema has."""
    found = []
    for path in sorted([*MANIFESTS.rglob("*.yaml"), *BAD_MANIFESTS.glob("*.y*ml")]):
        try:
            documents = list(yaml.safe_load_all(path.read_text()))
        except yaml.YAMLError:
            continue
        for document in documents:
            if not isinstance(document, dict):
                continue
            api_version, kind = document.get("apiVersion"), document.get("kind")
            if not isinstance(api_version, str) or not isinstance(kind, str):
                continue
            name = schema_index.schema_name(api_version, kind)
            if schema_index.lookup(api_version, kind) is not None:
                assert _original_validator(name) is not None, name
                found.append(json.loads(json.dumps(document, default=str)))
    return found


def _paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*path, index))


def _mutations(objects: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    rng = random.Random(19)
    places = [(obj, path) for obj in objects for path in _paths(obj) if len(path) > 1]
    made = []
    for _ in range(count):
        original, path = rng.choice(places)
        obj = copy.deepcopy(original)
        parent = obj
        for part in path[:-1]:
            parent = parent[part]
        if isinstance(parent, dict) and rng.random() < 0.2:
            parent[f"unknownField{rng.randrange(3)}"] = rng.choice(REPLACEMENTS)
        else:
            parent[path[-1]] = copy.deepcopy(rng.choice(REPLACEMENTS))
        made.append(obj)
    return made


OBJECTS = _builtin_objects()


def test_the_corpus_covers_the_base_kinds() -> None:
    kinds = {obj["kind"] for obj in OBJECTS}
    assert {"Namespace", "Deployment", "Service"} <= kinds, kinds


@pytest.mark.parametrize("obj", OBJECTS, ids=lambda obj: obj["kind"])
def test_a_shipped_or_bad_object_gets_the_same_first_error(obj) -> None:
    assert _index_first_error(obj) == _original_first_error(obj)


def test_mutated_objects_get_the_same_first_error() -> None:
    differ = []
    mutations = _mutations(OBJECTS, 600)
    for obj in mutations:
        ours, theirs = _index_first_error(obj), _original_first_error(obj)
        if ours != theirs:
            differ.append((ours, theirs))
    assert differ == []
    # The corpus must exercise the checks, not only valid objects.
    validators = {_index_first_error(obj)[0] for obj in mutations if _index_first_error(obj)}
    assert {"type", "additionalProperties", "enum", "oneOf"} <= validators, validators


def test_unknown_kinds_and_case_are_found_as_kubernetes_validate_finds_them() -> None:
    assert schema_index.lookup("apps/v1", "deployment") is not None  # its enum refuses it
    assert schema_index.lookup("apps/v1", "Gateway") is None
    assert schema_index.schema_name("networking.k8s.io/v1", "Ingress") == "ingress-networking-v1"
    assert schema_index.api_versions_of("Deployment") == ["apps/v1"]
