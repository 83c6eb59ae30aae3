"""`kubectl port-forward`s that a KubeCluster owns: one pod or Service port on loopback.

Only what this machine's own process must reach (a pod for a health Watch, Prometheus)
goes this way; load runs inside the cluster.
"""

from __future__ import annotations

import collections
import shutil
import signal
import subprocess
import threading

from grpclab.cluster.kube.errors import KubeError

FORWARD_TIMEOUT_S = 30.0


def port_forward_command(
    resource: str, port: int, namespace: str, context: str | None, kubeconfig: str | None = None
) -> list[str]:
    """kubectl argv that forwards a free loopback port to `resource` (pod/x or svc/x)."""
    argv = ["kubectl"]
    if kubeconfig:
        argv += ["--kubeconfig", kubeconfig]
    if context:
        argv += ["--context", context]
    return [*argv, "-n", namespace, "port-forward", "--address", "127.0.0.1", resource, f":{port}"]


def forwarded_address(line: str) -> str | None:
    """ "127.0.0.1:PORT" from kubectl's "Forwarding from 127.0.0.1:PORT -> N" line, else None."""
    prefix = "Forwarding from 127.0.0.1:"
    if not line.startswith(prefix):
        return None
    port = line[len(prefix) :].split(" ", 1)[0]
    return f"127.0.0.1:{port}" if port.isdigit() else None


def start_port_forward(
    argv: list[str], timeout: float = FORWARD_TIMEOUT_S
) -> tuple[subprocess.Popen[str], str]:
    """Run a `kubectl port-forward` argv; (its process, "127.0.0.1:PORT") once it forwards.

    KubeError with kubectl's own message when it exits or stays silent instead.
    """
    if shutil.which(argv[0]) is None:
        raise KubeError(
            f"{argv[0]} is not installed; it forwards a local port into the cluster. "
            "Install it: https://kubernetes.io/docs/tasks/tools/"
        )
    process = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        # One pipe, always read: kubectl writes an error line to stderr for every failed
        # connection, and a full pipe nobody reads would stall the forward.
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a Ctrl-C in the notebook must not end the forward
    )
    tail: collections.deque[str] = collections.deque(maxlen=20)
    found: dict[str, str] = {}
    settled = threading.Event()

    def pump() -> None:
        # kubectl prints a line per connection for as long as it runs; keep reading (and
        # keep only the last few lines) so that it never blocks on a full pipe.
        for line in process.stdout or []:
            tail.append(line.strip())
            if "address" not in found and (address := forwarded_address(line.strip())):
                found["address"] = address
                settled.set()
        settled.set()  # kubectl exited

    threading.Thread(target=pump, name="grpclab-port-forward", daemon=True).start()
    settled.wait(timeout)
    address = found.get("address")
    if address is None:
        stop_process(process)
        # kubectl repeats its client-side retries first; its last line is the verdict.
        error = [line for line in tail if line and forwarded_address(line) is None]
        command = " ".join(a for a in argv if a != "--address" and a != "127.0.0.1")
        raise KubeError(
            f"{command} failed: {error[-1] if error else f'no forwarding line in {timeout:.0f} s'}"
        )
    return process, address


def stop_process(process: subprocess.Popen[str]) -> None:
    """End a child this module started, by its PID, and reap it."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


class PortForwards:
    """The forwards of one cluster object, started on first use and reused while they run."""

    def __init__(self, context: str | None, kubeconfig: str | None) -> None:
        self.context, self.kubeconfig = context, kubeconfig
        self._running: dict[tuple[str, str, int], tuple[subprocess.Popen[str], str]] = {}

    def address(self, resource: str, port: int, namespace: str) -> str:
        """A loopback address forwarded to `resource`'s port by a kubectl this object owns."""
        key = (namespace, resource, port)
        running = self._running.get(key)
        if running is not None and running[0].poll() is None:
            return running[1]
        argv = port_forward_command(resource, port, namespace, self.context, self.kubeconfig)
        self._running[key] = start_port_forward(argv)
        return self._running[key][1]

    def stop(self) -> None:
        """Stop every forward this object started. Safe to call twice."""
        running, self._running = self._running, {}
        for process, _ in running.values():
            stop_process(process)
