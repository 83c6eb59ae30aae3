"""The pinned add-on installers (cluster/addons/<name>.sh), run with their output streamed.

Also the add-on each `via` and each custom resource group needs, and the one hint that
names how to install it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from grpclab.cluster.kube.errors import KubeError
from grpclab.cluster.kube.notes import note
from grpclab.paths import REPO

# The API groups whose CRDs each add-on brings: the hint for a kind the cluster does not
# serve yet.
GROUPS_OF_ADDON = {
    "istio": ("networking.istio.io", "security.istio.io"),
    "gateway-api": ("gateway.networking.k8s.io",),
    "envoy-gateway": ("gateway.envoyproxy.io",),
    "linkerd": ("policy.linkerd.io", "linkerd.io"),
    "traefik": ("traefik.io", "traefik.containo.us"),
    "prometheus": ("monitoring.coreos.com",),
}
ADDON_FOR_GROUP = {group: addon for addon, groups in GROUPS_OF_ADDON.items() for group in groups}
PROMETHEUS_SERVICE = ("grpclab-monitoring", "prometheus")
PROMETHEUS_PORT = 9090
# The add-on each `via` needs, and the Deployment (namespace, name) its script waits for.
ADDON_FOR_VIA = {
    "mesh": ("istio", "istio-system", "istiod"),
    "ambient": ("istio-ambient", "istio-system", "istiod"),
    "xds": ("istio", "istio-system", "istiod"),
    "linkerd": ("linkerd", "linkerd", "linkerd-destination"),
    "ingress": ("ingress-nginx", "ingress-nginx", "ingress-nginx-controller"),
    "traefik": ("traefik", "traefik", "traefik"),
    "gateway": ("envoy-gateway", "envoy-gateway-system", "envoy-gateway"),
}


def addon_hint(addon: str) -> str:
    """The one install command every "needs an add-on" message names (the notebooks' own)."""
    return (
        f"install_addon(lab, {addon!r}) from grpclab.cluster.controllers "
        f"(it runs cluster/addons/{addon}.sh)"
    )


ADDONS = (
    "gateway-api",
    "istio",
    "istio-ambient",
    "linkerd",
    "ingress-nginx",
    "traefik",
    "envoy-gateway",
    "prometheus",
)


def addons_dir() -> Path:
    """cluster/addons of this checkout (found from the package, else from the working dir)."""
    candidates = [REPO, Path.cwd(), *Path.cwd().parents]
    for base in candidates:
        if (base / "cluster" / "addons").is_dir():
            return base / "cluster" / "addons"
    raise FileNotFoundError(
        "cluster/addons not found: run from a grpclab checkout (the scripts are not packaged)"
    )


def run_streamed(
    argv: list[str],
    what: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 900.0,
    say: Callable[[str], None] = note,
    quiet_s: float = 15.0,
) -> tuple[int, str]:
    """Run `argv`, passing each line of its output to `say` as it comes; (exit code, output).

    stdout and stderr are one stream, so the lines keep their order. When the command is
    silent for `quiet_s` (a `kubectl wait`, a Helm install), `say` hears that it still
    runs and for how long. At `timeout` the command's process group is ended (it runs in
    a session of its own, so helm or istioctl under it stop too) and KubeError is raised.
    """
    process = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        bufsize=1,
        env=None if env is None else dict(env),
        start_new_session=True,
    )
    lines: list[str] = []
    arrived = threading.Condition()

    def pump() -> None:
        for line in process.stdout or []:
            with arrived:
                lines.append(line.rstrip("\n"))
                arrived.notify()
        with arrived:
            arrived.notify()

    reader = threading.Thread(target=pump, name="grpclab-streamed", daemon=True)
    reader.start()
    start = time.monotonic()
    said, last_line_at = 0, start
    while True:
        with arrived:
            if len(lines) == said:
                arrived.wait(timeout=min(1.0, quiet_s / 2))
            fresh = lines[said:]
        for line in fresh:
            say(f"{what}: {line}")
        said += len(fresh)
        now = time.monotonic()
        if fresh:
            last_line_at = now
        elif now - last_line_at >= quiet_s:
            say(f"{what}: still running ({now - start:.0f} s)")
            last_line_at = now
        if process.poll() is not None and not reader.is_alive():
            break
        if now - start > timeout:
            stop_group(process)
            raise KubeError(
                f"{what} did not finish in {timeout:.0f} s; its last lines:\n"
                + "\n".join(lines[-20:])
            )
    reader.join()
    with arrived:
        for line in lines[said:]:
            say(f"{what}: {line}")
    return process.wait(), "\n".join(lines).strip()


def install_addon(
    name: str,
    context: str | None = None,
    timeout: float = 900.0,
    say: Callable[[str], None] = note,
) -> str:
    """Run cluster/addons/<name>.sh (idempotent, pinned version); returns what it printed.

    Its lines show as they come (`say`, stdout by default): an Istio or Linkerd install
    takes minutes, and a silent cell looks hung.
    """
    if name not in ADDONS:
        raise ValueError(f"unknown add-on {name!r}; known: {', '.join(ADDONS)}")
    script = addons_dir() / f"{name}.sh"
    env = dict(os.environ)
    if context:
        env["GRPCLAB_KUBE_CONTEXT"] = context
    code, output = run_streamed(["bash", str(script)], f"add-on {name}", env, timeout, say)
    if code != 0:
        raise KubeError(f"add-on {name} failed (exit {code}):\n{output}")
    return output


# -- the cluster ---------------------------------------------------------------------


def stop_group(process: subprocess.Popen[str]) -> None:
    """End a child this module started in a session of its own, with what it started."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)  # the group this module created for it
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
        except ProcessLookupError:
            process.wait(timeout=5)
