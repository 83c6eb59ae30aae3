"""grpclab: gRPC load balancing on Kubernetes, shown live and then fixed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from grpclab.cluster import Cluster, Pod, connect
    from grpclab.load import LoadResult, LoadSpec

__all__ = ["Cluster", "LoadResult", "LoadSpec", "Pod", "connect"]
__version__ = "0.1.0"

_EXPORTS = {
    "Cluster": "grpclab.cluster",
    "Pod": "grpclab.cluster",
    "connect": "grpclab.cluster",
    "LoadResult": "grpclab.load",
    "LoadSpec": "grpclab.load",
}


def __getattr__(name: str) -> Any:
    # Lazy, so `python -m grpclab.load` and `python -m grpclab.demo.server` do not import
    # themselves twice (runpy warns) and a pod does not load the cluster code.
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'grpclab' has no attribute {name!r}")
