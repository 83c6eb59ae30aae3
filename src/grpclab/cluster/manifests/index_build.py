"""Generate the compact Kubernetes schema index from kubernetes-validate's files.

`python -m grpclab.cluster.manifests.index_build` writes it; `--check` says whether the
committed index is current (tests/test_schema_index.py runs that). Only this module imports
kubernetes-validate: the sandbox and the kind backend read the index (schema_index).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from grpclab.cluster.manifests.schema_index import INDEX, KUBERNETES_VERSION

# The keywords the Kubernetes schemas use that assert something. `format` asserts nothing
# without a format checker, and kubernetes-validate passes none.
_ASSERTING = frozenset(
    {"$ref", "type", "enum", "required", "properties", "additionalProperties", "items", "oneOf"}
)
_DEFS_REF = re.compile(r"^(?:/api/_definitions\.json)?#/\$defs/(.+)$")


def _compact(schema: Any) -> Any:
    """`schema` with only asserting keywords; $ref names a definition directly."""
    if not isinstance(schema, dict):
        return schema
    kept: dict[str, Any] = {}
    for keyword, value in schema.items():
        if keyword not in _ASSERTING:
            continue
        if keyword == "$ref":
            match = _DEFS_REF.match(value)
            if match is None:
                raise ValueError(f"unexpected $ref {value!r}")
            kept[keyword] = match.group(1)
        elif keyword == "properties":
            kept[keyword] = {name: _compact(sub) for name, sub in value.items()}
        elif keyword == "oneOf":
            kept[keyword] = [_compact(sub) for sub in value]
        elif keyword in ("items", "additionalProperties"):
            kept[keyword] = _compact(value)
        else:
            kept[keyword] = value
    return kept


def build(version: str = KUBERNETES_VERSION) -> dict[str, Any]:
    """The index of kubernetes-validate's strict schema for `version`."""
    import kubernetes_validate  # a dev tool here: generation and tests only

    folder = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    folder /= f"v{version}.0-local-strict"
    definitions = json.loads((folder / "_definitions.json").read_text(encoding="utf-8"))
    kinds = {
        path.stem: _compact(json.loads(path.read_text(encoding="utf-8")))
        for path in sorted(folder.glob("*.json"))
        if path.name != "_definitions.json"
    }
    defs = {name: _compact(schema) for name, schema in definitions["$defs"].items()}
    return {"version": version, "kinds": kinds, "defs": defs}


def _render(index: Mapping[str, Any]) -> str:
    return json.dumps(index, separators=(",", ":"), sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the index is stale")
    args = parser.parse_args(argv)
    fresh = _render(build())
    if args.check:
        current = INDEX.read_text(encoding="utf-8") if INDEX.exists() else ""
        if current != fresh:
            print(f"{INDEX.name} is stale: run python -m {__spec__.name}")
            return 1
        print(f"{INDEX.name} is current")
        return 0
    INDEX.write_text(fresh, encoding="utf-8")
    print(f"wrote {INDEX} ({len(fresh.encode()) // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
