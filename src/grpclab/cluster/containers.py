"""A demo-server container as the kubelet runs it: its argv, its environment, its ports.

One home for both backends. The sandbox starts `container_argv` with `container_env`, and
the kube backend asks `listening_ports` where a pod's server listens. The image's
ENTRYPOINT and CMD are cluster/Dockerfile's; tests/test_containers.py reads them from there.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

# cluster/Dockerfile: ENTRYPOINT ["python", "-m", "grpclab.demo.server"], and no CMD, so that a
# manifest's `args:` are the server's flags.
IMAGE_ENTRYPOINT = ("python", "-m", "grpclab.demo.server")
IMAGE_CMD: tuple[str, ...] = ()
# What a `command` may start in the sandbox: the image's python running grpclab.demo.server.
_PYTHON = re.compile(r"(?:.*/)?python(?:3(?:\.\d+)?)?")
_REFERENCE = re.compile(r"\$\$|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)")


def container_argv(
    command: Sequence[str] | None,
    args: Sequence[str] | None,
    entrypoint: Sequence[str] = IMAGE_ENTRYPOINT,
    cmd: Sequence[str] = IMAGE_CMD,
    env: Mapping[str, str] | None = None,
) -> list[str]:
    """The process argv, as the container runtime builds it from the image and the manifest.

    `command` replaces ENTRYPOINT and drops CMD; `args` replace CMD. $(VAR) references to
    the container's `env` are expanded, $$ stands for $, and unknown references stay as
    written (Kubernetes' "Define a Command and Arguments for a Container").
    """
    if command:
        argv = [*command, *(args or ())]
    else:
        argv = [*entrypoint, *(args or cmd)]
    return [expand(str(item), env or {}) for item in argv]


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion of one command, args or env value."""

    def replace(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        return env.get(match[1], match[0])

    return _REFERENCE.sub(replace, text)


def server_flags(argv: Sequence[str]) -> list[str] | None:
    """The flags `argv` passes to grpclab.demo.server, or None when it runs something else."""
    if (
        len(argv) >= 3
        and _PYTHON.fullmatch(argv[0])
        and list(argv[1:3]) == ["-m", "grpclab.demo.server"]
    ):
        return list(argv[3:])
    return None


def container_env(
    container: Mapping[str, Any], fields: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The container's `env` as the process sees it: fieldRefs filled from `fields`.

    A fieldRef that `fields` lacks is left out (the kube backend's offline lookups know no
    pod IP; ports never come from one). Values may refer to earlier variables as $(VAR).
    """
    env: dict[str, str] = {}
    for item in container.get("env") or []:
        source = item.get("valueFrom")
        if source:
            path = (source.get("fieldRef") or {}).get("fieldPath")
            if fields is not None and path in fields:
                env[item["name"]] = fields[path]
            continue
        env[item["name"]] = expand(str(item.get("value", "")), env)
    return env


def server_argv(container: Mapping[str, Any], env: Mapping[str, str]) -> list[str]:
    """The container's argv (see `container_argv`), from its manifest `command` and `args`."""
    return container_argv(container.get("command"), container.get("args"), env=env)


def listening_ports(
    container: Mapping[str, Any], fields: Mapping[str, str] | None = None
) -> dict[str, int] | None:
    """Where the container's demo server listens: {"grpc": port, "metrics": port (0: off)}.

    The server's own flags, then its environment, then its defaults decide, as in the image;
    `containerPort` is only a declaration. None when the container runs something else or
    its flags do not parse (such a container exits at once, as it would on a cluster).
    """
    from grpclab.demo.server import parse_config

    env = container_env(container, fields)
    flags = server_flags(server_argv(container, env))
    if flags is None:
        return None
    quiet = io.StringIO()  # argparse writes its complaint to stderr; the caller says None
    try:
        with contextlib.redirect_stderr(quiet), contextlib.redirect_stdout(quiet):
            config = parse_config(flags, environ={**_image_env(), **env})
    except SystemExit:
        return None
    return {"grpc": config.port, "metrics": config.metrics_port}


def _image_env() -> dict[str, str]:
    # The image sets no server variables (cluster/Dockerfile's ENV has none), so a parse must
    # not see this process's own GRPC_PORT or POD_IP either.
    return {"PATH": os.environ.get("PATH", "")}


# --- the preStop hook ----------------------------------------------------------------------
#
# The kubelet runs a container's preStop hook before it sends SIGTERM, bounded by the pod's
# terminationGracePeriodSeconds (kuberuntime_container.go, executePreStopHook). The sandbox
# runs what it can run faithfully: the `sleep` action (beta and on by default since
# Kubernetes 1.30, GA in 1.34: KEP-3960), and an `exec` hook that only sleeps.

# The kubelet's minimumGracePeriodInSeconds, "A minimal shutdown window for avoiding
# unnecessary SIGKILLs": SIGTERM to SIGKILL takes at least this long, even after a preStop
# hook used up the grace period (pkg/kubelet/kuberuntime/kuberuntime_container.go).
MINIMUM_GRACE_SECONDS = 2
_SLEEP_PROGRAM = re.compile(r"(?:/usr)?(?:/bin/)?sleep")
_SHELL = re.compile(r"(?:/usr)?(?:/bin/)?(?:sh|bash|dash|ash)")
_SECONDS = r"\d+(?:\.\d+)?"
_SHELL_SLEEP = re.compile(rf"\s*(?:exec\s+)?sleep\s+({_SECONDS})\s*;?\s*")


class UnsupportedHook(ValueError):
    """A lifecycle hook the sandbox cannot run as the kubelet would; `field` is under the
    container (`lifecycle.preStop.exec.command`)."""

    def __init__(self, field: str, reason: str, hint: str = "") -> None:
        super().__init__(f"{field}: {reason}")
        self.field, self.reason, self.hint = field, reason, hint


_HOOK_HINT = (
    'use the sleep action (preStop: {sleep: {seconds: N}}), or an exec ["sleep", "N"] or '
    '["sh", "-c", "sleep N"]; the kind backend runs any hook'
)


def prestop_sleep_seconds(container: Mapping[str, Any]) -> float | None:
    """How long the container's preStop hook sleeps; None when it has none.

    UnsupportedHook for a hook that does more than sleep (the sandbox would have to do
    something else than the kubelet does), and for a postStart hook.
    """
    lifecycle = container.get("lifecycle") or {}
    for key, value in lifecycle.items():
        if key != "preStop" and value is not None:
            raise UnsupportedHook(
                f"lifecycle.{key}", f"the sandbox backend runs only a preStop hook, not {key}"
            )
    hook = lifecycle.get("preStop")
    if not hook:
        return None
    handlers = [key for key, value in hook.items() if value is not None]
    if len(handlers) != 1:
        raise UnsupportedHook(
            "lifecycle.preStop",
            f"must name exactly one handler, not {len(handlers)} ({', '.join(handlers)})",
            "Kubernetes refuses this too",
        )
    [handler] = handlers
    if handler == "sleep":
        return float(hook["sleep"].get("seconds", 0))
    if handler == "exec":
        command = [str(part) for part in (hook["exec"] or {}).get("command") or []]
        if len(command) == 2 and _SLEEP_PROGRAM.fullmatch(command[0]):
            if re.fullmatch(_SECONDS, command[1]):
                return float(command[1])
        if len(command) == 3 and _SHELL.fullmatch(command[0]) and command[1] == "-c":
            match = _SHELL_SLEEP.fullmatch(command[2])
            if match:
                return float(match[1])
        raise UnsupportedHook(
            "lifecycle.preStop.exec.command",
            f"the sandbox runs only a sleep in an exec hook, not {command!r}",
            _HOOK_HINT,
        )
    raise UnsupportedHook(
        f"lifecycle.preStop.{handler}",
        f"the sandbox backend does not run {handler} hooks",
        _HOOK_HINT,
    )
