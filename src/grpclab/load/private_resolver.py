"""Run one program with a private stand-in for the machine's resolver, to see what it asks.

`run` starts the program in its own user, mount and network namespace (`unshare`, from
util-linux). In there, for that program only, /etc/resolv.conf names 127.0.0.1 and the
hosts line of /etc/nsswitch.conf is `files dns`; on 127.0.0.1:53 a DNS server records each
question and answers REFUSED. The namespace's only interface is its own loopback, so no
question can leave it: the machine's DNS server, systemd-resolved and nscd never see one.

Notebook 11 uses it to show where grpc-js sends a cluster name when it ignores the DNS
server named in the target: to the machine's resolver, here the recording stand-in. Where
the namespace cannot be made, `problem` says why and `run` refuses (MissingTool); it never
lets the program use the real resolver instead.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from grpclab.tools.missing import MissingTool

UNSHARE = ("--user", "--map-root-user", "--mount", "--net")
LOOPBACK = "127.0.0.1"
# One try, one second: REFUSED comes back at once, and a client sees its failure quickly.
RESOLV_CONF = f"nameserver {LOOPBACK}\noptions timeout:1 attempts:1\n"
NSSWITCH_HOSTS = "hosts: files dns"  # no mdns (avahi), no resolve (systemd-resolved)
# glibc asks nscd over this socket before its own resolver, when nscd runs.
NSCD_DIRS = ("/run/nscd", "/var/run/nscd")
_MS_BIND = 4096
_PR_SET_PDEATHSIG = 1
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1


def missing() -> tuple[str, str] | None:
    """(what is missing, how to fix it) when the namespace cannot be made here; else None."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return (
            "`unshare` is not installed",
            "it comes with util-linux (Debian/Ubuntu: sudo apt-get install util-linux)",
        )
    done = subprocess.run(
        [unshare, *UNSHARE, "true"], capture_output=True, text=True, timeout=30, check=False
    )
    if done.returncode != 0:
        return (
            f"`unshare {' '.join(UNSHARE)}` failed ({done.stderr.strip() or done.returncode})",
            "let users create their own namespaces (Ubuntu 24.04: sysctl "
            "kernel.apparmor_restrict_unprivileged_userns=0; in a container: run it with "
            "--security-opt seccomp=unconfined)",
        )
    return None


def problem() -> str | None:
    """Why the namespace cannot be made here, and the fix, in one sentence; or None."""
    return MissingTool.sentence(missing())


def require() -> None:
    """Raise MissingTool, naming the fix, when `run` cannot make its namespace here."""
    MissingTool.check(
        missing(),
        "Showing which resolver a program asks needs a private resolver, in a namespace "
        "of its own, so that no name reaches the machine's DNS server:",
    )


def run(
    argv: Sequence[str],
    *,
    input: str,
    env: Mapping[str, str],
    cwd: Path,
    timeout: float,
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run argv as `subprocess.run` would, with the private resolver; also return the
    questions it was asked, "TYPE name" (e.g. "A grpc-server.production.svc.cluster.local"),
    each once, in the order first asked."""
    require()
    with tempfile.TemporaryDirectory(prefix="grpclab-resolver-") as folder:
        record = Path(folder) / "questions.json"
        done = subprocess.run(
            [
                shutil.which("unshare") or "unshare",
                *UNSHARE,
                sys.executable,
                "-m",
                "grpclab.load.private_resolver",
                str(record),
                *argv,
            ],
            input=input,
            capture_output=True,
            text=True,
            env=dict(env),
            cwd=cwd,
            timeout=timeout,
        )
        if not record.exists():
            raise RuntimeError(
                f"the private resolver did not start (exit {done.returncode}): "
                f"{done.stderr.strip()[-2000:]}"
            )
        return done, json.loads(record.read_text())


# Inside the namespace (python -m grpclab.load.private_resolver RECORD ARGV...).


def _loopback_up() -> None:
    """Bring up `lo`: a new network namespace starts with it down."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(sock, _SIOCGIFFLAGS, request)[:18])[1]
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | _IFF_UP))


def _bind(source: Path, target: str) -> None:
    """Mount source over target, in this mount namespace only (unshare makes it private)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(str(source).encode(), target.encode(), None, _MS_BIND, None) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"bind-mounting {source} over {target}: {os.strerror(error)}")


def _replace_system_resolver(folder: Path) -> None:
    resolv = folder / "resolv.conf"
    resolv.write_text(RESOLV_CONF)
    _bind(resolv, "/etc/resolv.conf")
    lines = Path("/etc/nsswitch.conf").read_text().splitlines()
    kept = [line for line in lines if not line.split(":")[0].strip() == "hosts"]
    nsswitch = folder / "nsswitch.conf"
    nsswitch.write_text("\n".join([*kept, NSSWITCH_HOSTS]) + "\n")
    _bind(nsswitch, "/etc/nsswitch.conf")
    empty = folder / "empty"
    empty.mkdir()
    for path in sorted({os.path.realpath(path) for path in NSCD_DIRS}):
        if os.path.isdir(path):
            _bind(empty, path)


def _main(record: Path, argv: list[str]) -> int:
    # Killed with whoever called `run` (a timeout, a kernel restart); the program with us.
    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    from dnslib import QTYPE, RCODE
    from dnslib.server import BaseResolver, DNSLogger, DNSServer

    questions: list[str] = []

    class Recorder(BaseResolver):
        def resolve(self, request, handler):
            question = f"{QTYPE[request.q.qtype]} {str(request.q.qname).rstrip('.')}"
            if question not in questions:
                questions.append(question)
            reply = request.reply()
            reply.header.rcode = RCODE.REFUSED
            return reply

    _loopback_up()
    quiet = DNSLogger(log="-request,-reply,-truncated,-error", prefix=False)
    servers = [
        DNSServer(Recorder(), address=LOOPBACK, port=53, tcp=tcp, logger=quiet)
        for tcp in (False, True)
    ]
    for server in servers:
        server.start_thread()
    with tempfile.TemporaryDirectory(prefix="grpclab-resolver-") as folder:
        _replace_system_resolver(Path(folder))
        setpriv = shutil.which("setpriv") or "setpriv"
        returncode = subprocess.run([setpriv, "--pdeathsig", "KILL", "--", *argv]).returncode
    for server in servers:
        server.server.shutdown()
        server.server.server_close()
    record.write_text(json.dumps(questions))
    return returncode


if __name__ == "__main__":
    sys.exit(_main(Path(sys.argv[1]), sys.argv[2:]))
