"""The demo workload: the gRPC server every pod runs, its Prometheus metrics and generated stubs.

Lives here: server (`python -m grpclab.demo.server`, the image's ENTRYPOINT), metrics, _generated.
May import: only itself; a pod loads nothing else from grpclab.
"""
