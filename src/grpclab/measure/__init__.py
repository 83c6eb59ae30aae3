"""Reading results: checked summaries, whole-path comparisons and Prometheus queries.

Lives here: checks, compare, monitoring, streams.
May import: grpclab.load, grpclab.cluster (through the Cluster interface only), grpclab.xds.
"""
