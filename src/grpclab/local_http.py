"""HTTP to addresses on this machine's loopback, never through a proxy.

A laptop's $http_proxy (common on workshop and company networks) would otherwise get the
requests meant for 127.x addresses: Envoy's admin API, nginx's status page, Prometheus,
a port that kubectl forwards. urllib honours $no_proxy only, which rarely lists them.
"""

from __future__ import annotations

import urllib.request
from http.client import HTTPResponse

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def open_local(url: str, timeout: float) -> HTTPResponse:
    """`urllib.request.urlopen` for a loopback URL, bypassing any proxy the environment names."""
    return _OPENER.open(url, timeout=timeout)
