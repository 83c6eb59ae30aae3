"""grpclab's xDS control plane: an ADS server and translators from Kubernetes objects."""

from grpclab.xds.server import CLUSTER, ENDPOINT, LISTENER, ROUTE, Nack, XdsServer

__all__ = ["CLUSTER", "ENDPOINT", "LISTENER", "ROUTE", "Nack", "XdsServer"]
