"""grpclab: gRPC load balancing on Kubernetes, live."""
