"""Schemas and sandbox checks of the custom resources grpclab knows (Istio, ...)."""
