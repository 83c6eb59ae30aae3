"""Reading results: checked summaries, whole-path comparisons and Prometheus queries.

Lives here: checks, compare, monitoring, streams, retries (client retries, deadlines, hedging).
May import: grpclab.load, grpclab.cluster (the interface and its helpers, no backend; only
checks reads the sandbox's process records, as `grpclab down` does), grpclab.xds,
grpclab.prometheus, grpclab.notes (learner notes), and for compare's whole-lineup runs
grpclab.side_by_side, grpclab.widgets and grpclab.tls (retries takes its charts' layout
from grpclab.widgets).
"""
