"""Namespaces: which kinds have one, the default namespace, and moving objects into one.

`override_namespace` gives each attendee of a shared cluster a namespace of their own.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from grpclab.cluster.manifests.errors import ManifestObject

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


def fill_default_namespace(obj: ManifestObject, default_namespace: str | None) -> None:
    """Like `kubectl apply -n NS`: fill in objects that name no namespace, keep those that do."""
    # (kubectl would refuse a mismatch; here the caller's default is only a default.)
    if default_namespace is None or obj["kind"] in CLUSTER_SCOPED_KINDS:
        return
    if not obj["metadata"].get("namespace"):
        obj["metadata"]["namespace"] = default_namespace


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
