"""Loopback HTTP (Envoy admin, Prometheus, nginx status) must not go through $http_proxy."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest


class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"local")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def local_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


PROBE = """
import sys, urllib.request
from grpclab.local_http import open_local
with open_local(sys.argv[1], timeout=5) as reply:
    print("open_local:", reply.read().decode())
try:
    urllib.request.urlopen(sys.argv[1], timeout=5)
    print("urlopen: reached")
except OSError:
    print("urlopen: went to the proxy")
"""


def test_a_proxy_in_the_environment_does_not_get_loopback_requests(local_url):
    # A learner's shell exports a proxy that is not there: anything sent to it fails.
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("no_proxy", "http_proxy")}
    env["http_proxy"] = "http://127.0.0.1:9"
    done = subprocess.run(
        [sys.executable, "-c", PROBE, local_url],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    # open_local reaches the server; plain urllib, with the same environment, does not.
    assert done.stdout.splitlines() == ["open_local: local", "urlopen: went to the proxy"]
