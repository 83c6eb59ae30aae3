"""Manifests: read (load), check against the Kubernetes API (schema, its generated index
schema_index/index_build, api_server), namespaces, what only the sandbox refuses (sandbox_rules);
errors names file:line, object, field. Imports grpclab.paths; cluster.crds, containers lazily.
"""

from grpclab.cluster.manifests.errors import ManifestError, ManifestObject, refusal
from grpclab.cluster.manifests.load import kubectl_ref, load_objects, source_label
from grpclab.cluster.manifests.namespaces import (
    CLUSTER_SCOPED_KINDS,
    default_is_namespaced,
    override_namespace,
)
from grpclab.cluster.manifests.sandbox_rules import (
    DEMO_SERVER_REPOSITORIES,
    SANDBOX_FIELD_REFS,
    SANDBOX_MAX_REPLICAS,
    check_sandbox_support,
)
from grpclab.cluster.manifests.schema import CRD_SCHEMAS, KUBERNETES_VERSION

__all__ = [
    "CLUSTER_SCOPED_KINDS",
    "CRD_SCHEMAS",
    "DEMO_SERVER_REPOSITORIES",
    "KUBERNETES_VERSION",
    "SANDBOX_FIELD_REFS",
    "SANDBOX_MAX_REPLICAS",
    "ManifestError",
    "ManifestObject",
    "check_sandbox_support",
    "default_is_namespaced",
    "kubectl_ref",
    "load_objects",
    "override_namespace",
    "refusal",
    "source_label",
]
