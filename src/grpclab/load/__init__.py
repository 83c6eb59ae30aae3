"""The load generator: what to send (`LoadSpec`), where it went (`LoadResult`), and drills.

Lives here: runner (channels, calls, tallies, the `python -m grpclab.load` CLI, which a pod
runs), client_code (the plain client a spec stands for), drills (actions during a run), the
Node client and the private DNS resolver.
May import: runner only grpclab.demo, grpclab.local_http (a Job's pod runs it) and the leaf
grpclab.load.client_code; the others also grpclab.cluster (the interface, no backend),
grpclab.xds (a sidecar's config dump), grpclab.paths, grpclab.tools.missing, and for the
Node client's chart grpclab.measure.checks and grpclab.widgets.
tests/test_architecture.py holds each package to what its __init__ says here.
"""

from grpclab.load.runner import (
    DEFAULT_RPCS,
    METHODS,
    PROXY_COUNTERS,
    LoadResult,
    LoadSpec,
    channel_options,
    format_table,
    json_line,
    parse_json_lines,
    run,
)

__all__ = [
    "DEFAULT_RPCS",
    "METHODS",
    "PROXY_COUNTERS",
    "LoadResult",
    "LoadSpec",
    "channel_options",
    "format_table",
    "json_line",
    "parse_json_lines",
    "run",
]
