"""The load generator: what to send (`LoadSpec`), where it went (`LoadResult`), and drills.

Lives here: runner (channels, calls, tallies, the `python -m grpclab.load` CLI, which a pod
runs), drills (actions during a run), the Node client and the private DNS resolver.
May import: runner only grpclab.demo and grpclab.local_http;
drills and node_client also grpclab.cluster.
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
