"""grpclab: gRPC load balancing on Kubernetes, shown live and then fixed."""

from grpclab.cluster import Cluster, Pod, connect
from grpclab.load import LoadResult, LoadSpec

__all__ = ["Cluster", "LoadResult", "LoadSpec", "Pod", "connect"]
__version__ = "0.1.0"
