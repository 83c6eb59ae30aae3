"""grpclab.load.private_resolver: questions to the machine's resolver stay on loopback."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from grpclab.load import node_client, private_resolver
from grpclab.tools import preflight
from grpclab.tools.preflight import MissingTool

PROBLEM = private_resolver.problem()
needs_namespaces = pytest.mark.skipif(PROBLEM is not None, reason=f"{PROBLEM}")
NAME = "grpc-server.production.svc.cluster.local"
# Run inside the namespace: what this program's resolver and network look like.
PROBE = f"""
import socket
from pathlib import Path
print(Path("/etc/resolv.conf").read_text().split()[:2])
try:
    socket.getaddrinfo("{NAME}", 50051, type=socket.SOCK_STREAM)
except socket.gaierror as error:
    print("lookup failed:", error.errno == socket.EAI_AGAIN)
try:
    socket.create_connection(("192.0.2.1", 53), timeout=5)  # TEST-NET-1, off loopback
except OSError as error:
    print("off loopback:", error.strerror)
"""


@needs_namespaces
def test_the_machines_resolver_is_a_loopback_stand_in_that_records_and_refuses():
    host_resolv_conf = Path("/etc/resolv.conf").read_text()
    done, asked = private_resolver.run(
        [sys.executable, "-c", PROBE], input="", env=os.environ, cwd=Path.cwd(), timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "['nameserver', '127.0.0.1']",
        "lookup failed: True",  # REFUSED: glibc's "Temporary failure in name resolution"
        "off loopback: Network is unreachable",  # the namespace has no route off loopback
    ]
    # getaddrinfo (nsswitch `hosts: files dns`) asked the stand-in, for both families.
    assert sorted(asked) == [f"A {NAME}", f"AAAA {NAME}"]
    # The machine's own files are untouched.
    assert Path("/etc/resolv.conf").read_text() == host_resolv_conf


def test_without_unshare_it_refuses_and_runs_nothing(monkeypatch, tmp_path):
    if shutil.which("node"):
        (tmp_path / "node").symlink_to(shutil.which("node"))
    monkeypatch.setenv("PATH", str(tmp_path))  # no unshare on it (node, if this machine has it)
    assert private_resolver.problem().startswith("`unshare` is not installed: it comes with")
    finding = preflight.check_node()
    if node_client.missing() is None:  # with Node, the doctor names what section 3 lacks
        assert finding.status == preflight.WARN and "util-linux" in finding.fix, finding
    ran = tmp_path / "ran"
    with pytest.raises(MissingTool, match="no name reaches the machine's DNS server"):
        private_resolver.run(
            ["/bin/sh", "-c", f"touch {ran}"], input="", env=os.environ, cwd=tmp_path, timeout=30
        )
    assert not ran.exists()


@needs_namespaces
def test_a_program_past_its_timeout_is_gone_with_its_runner(tmp_path):
    pid_file = tmp_path / "pid"
    program = ["/bin/sh", "-c", f"echo $$ > {pid_file}; exec sleep 60 >/dev/null 2>&1"]
    # 10 s: under make test at load 17 the program had not started after 3 s, once.
    with pytest.raises(subprocess.TimeoutExpired):
        private_resolver.run(program, input="", env=os.environ, cwd=tmp_path, timeout=10)
    assert pid_file.exists(), "the program never started within the runner's timeout"
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = _alive(pid)
    if alive:  # we started it: end it by its PID
        os.kill(pid, signal.SIGKILL)
    assert not alive, "the program outlived the runner that timed out"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
