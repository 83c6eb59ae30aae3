"""The `grpclab` command: `demo` runs on the backend GRPCLAB_BACKEND names, as connect() does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml


def test_demo_on_kind_without_a_cluster_fails_with_connects_error(tmp_path: Path):
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "nowhere", "cluster": {"server": "https://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {}}],
                "contexts": [{"name": "other", "context": {"cluster": "nowhere", "user": "u"}}],
                "current-context": "other",
            }
        )
    )
    env = {**os.environ, "GRPCLAB_BACKEND": "kind", "KUBECONFIG": str(kubeconfig)}
    env["HOME"] = str(tmp_path)
    run = subprocess.run(
        [sys.executable, "-m", "grpclab.tools.cli", "demo", "--rpcs", "10"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert run.returncode == 1, run
    # connect()'s own words: which context is missing, and what to run.
    assert "no usable kubeconfig context kind-grpclab" in run.stderr, run.stderr
    assert "make kind-up" in run.stderr, run.stderr
    assert "sandbox" not in run.stdout, run.stdout  # it did not fall back to the sandbox
