"""`python -m grpclab.tools.wheelhouse [DIR]`: every wheel grpclab needs, for installing offline.

Writes DIR (default: wheelhouse/) with requirements.txt exported from uv.lock, the wheel
of every locked package for every Python that pyproject.toml's requires-python admits
(and every environment marker the lock forks on), uv's own wheel, and hatchling (what
builds grpclab itself). README.txt in it names the Pythons, the CPU and the glibc it serves.
Copy DIR and the repository to a USB stick; on a laptop without network, `make setup`
finds wheelhouse/ (or takes WHEELHOUSE=path) and installs from it with no index.

This file runs on the system's python3 too (`python3 src/grpclab/tools/wheelhouse.py install`,
before grpclab is installed): the install side uses the standard library only.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

# Not grpclab.paths: `make setup` runs this file as a script, before grpclab is installed.
REPO = Path(__file__).resolve().parents[3]
# pyproject.toml's [build-system] requires, and what hatchling asks for to build editable.
BUILD_BACKEND = ["hatchling", "editables"]
GLIBC = 36  # Debian 12's glibc is 2.36: the newest manylinux wheels its Python can load
ARCHES = ("x86_64", "aarch64")
REQUIREMENTS = "requirements.txt"
# Older manylinux names, as glibc levels.
_LEGACY_MANYLINUX = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}


# --- the supported Pythons: pyproject.toml's requires-python, stated once ---------------------


def requires_python() -> str:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]


def supported_minors(spec: str | None = None) -> list[str]:
    """The 3.x minor versions `spec` (default: requires-python) admits: ["3.11", "3.12", ...].

    requires-python must name both ends (>=3.A and <3.B): a wheelhouse cannot serve a
    Python nobody has tested.
    """
    spec = spec or requires_python()
    low = re.search(r">=\s*3\.(\d+)", spec)
    high = re.search(r"<\s*3\.(\d+)(?!\.)", spec)
    if low is None or high is None:
        raise ValueError(f"requires-python {spec!r} must read like '>=3.11,<3.14'")
    return [f"3.{minor}" for minor in range(int(low.group(1)), int(high.group(1)))]


def supported_range_text(spec: str | None = None) -> str:
    """How the README and the instructor guide say it: "Python 3.11 to 3.13"."""
    minors = supported_minors(spec)
    return f"Python {minors[0]}" + (f" to {minors[-1]}" if len(minors) > 1 else "")


# --- building (on the instructor's machine, with network) ---------------------------------------


def uv_binary() -> str:
    """uv from PATH, else the copy the Makefile bootstraps into .tools/."""
    found = shutil.which("uv") or str(REPO / ".tools" / "bin" / "uv")
    if not Path(found).exists():
        raise SystemExit(
            "grpclab.tools.wheelhouse: uv not found; run `make setup` first (it installs uv)"
        )
    return found


def uv_version() -> str:
    said = subprocess.run([uv_binary(), "--version"], capture_output=True, text=True, check=True)
    return said.stdout.split()[1]


def export_requirements(target: Path, dev: bool) -> Path:
    """requirements.txt pinned exactly as uv.lock, with its markers, without grpclab itself."""
    argv = [uv_binary(), "export", "--frozen", "--no-hashes", "--no-emit-project"]
    if not dev:
        argv.append("--no-dev")
    exported = subprocess.run(argv, cwd=REPO, check=True, capture_output=True, text=True)
    path = target / REQUIREMENTS
    path.write_text(exported.stdout)
    return path


def linux_platform_tags(arch: str) -> list[str]:
    """pip platform tags a Debian 12 machine (glibc 2.36) of `arch` accepts, oldest first."""
    return [f"manylinux2014_{arch}", *(f"manylinux_2_{n}_{arch}" for n in range(17, GLIBC + 1))]


def python_points(requirements: str, minors: list[str]) -> list[str]:
    """One full version per stretch of Pythons on which the lock picks the same packages.

    Each supported minor's first release, and every python_full_version the markers split
    on inside the range (the lock picks soupsieve 2.10 below 3.11.5 and 4.1.3 from it).
    """
    points = {f"{minor}.0" for minor in minors}
    for found in re.findall(r"python_full_version\s*[<>=!]+\s*'(\d+\.\d+\.\d+)'", requirements):
        if ".".join(found.split(".")[:2]) in minors:
            points.add(found)
    return sorted(points, key=lambda v: tuple(map(int, v.split("."))))


def pins_for(requirements: str, python: str, arch: str) -> list[str]:
    """The `name==version` lines of `requirements` whose markers hold for CPython `python`
    on Linux `arch`: what the lock installs there."""
    from packaging.markers import Marker

    environment = {
        "python_version": ".".join(python.split(".")[:2]),
        "python_full_version": python,
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "os_name": "posix",
        "platform_machine": arch,
    }
    pins = []
    for line in requirements.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "-")):
            continue
        requirement, _, marker = line.partition(";")
        if not marker.strip() or Marker(marker.strip()).evaluate(environment):
            pins.append(requirement.strip())
    return pins


def _download(target: Path, python: str, arch: str, specs: list[str], deps: bool) -> None:
    """pip download of published wheels only, for CPython `python` on Linux `arch`."""
    tags = [option for tag in linux_platform_tags(arch) for option in ("--platform", tag)]
    argv = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check"]
    argv += ["--only-binary=:all:", *tags, "--python-version", python, "--implementation", "cp"]
    argv += ["--dest", str(target), *([] if deps else ["--no-deps"]), *specs]
    subprocess.run(argv, check=True)


def glibc_needed(wheels: list[Path]) -> tuple[int, int]:
    """The newest glibc any of the wheels asks for (manylinux_2_X, or its older names)."""
    needed = (2, 5)
    for wheel in wheels:
        for tag in wheel.stem.split("-")[-1].split("."):
            match = re.match(r"manylinux_(\d+)_(\d+)_", tag)
            level = (
                (int(match.group(1)), int(match.group(2)))
                if match
                else _LEGACY_MANYLINUX.get(tag.split("_")[0])
            )
            if level and level > needed:
                needed = level
    return needed


def served_text(pythons: list[str]) -> str:
    """ "3.11 (from 3.11.0), 3.12, 3.13": the minors served, and the lowest release of each."""
    lowest: dict[str, str] = {}
    for python in sorted(pythons, key=lambda v: tuple(map(int, v.split(".")))):
        lowest.setdefault(".".join(python.split(".")[:2]), python)
    return ", ".join(
        f"{minor} (from {first})" if not first.endswith(".0") else minor
        for minor, first in lowest.items()
    )


def build(
    target: Path,
    dev: bool = False,
    arches: list[str] | None = None,
    pythons: list[str] | None = None,
) -> list[Path]:
    """Fill `target` with wheels and README.txt; returns the wheels.

    `arches`: Linux CPUs (default: this machine's); `pythons`: full versions to serve
    (default: one per stretch of every supported minor, see python_points).
    """
    arches = arches or [platform.machine()]
    target.mkdir(parents=True, exist_ok=True)
    for old in [*target.glob("*.whl"), target / "README.txt"]:  # a rebuild starts empty
        old.unlink(missing_ok=True)
    requirements = export_requirements(target, dev).read_text()
    minors = supported_minors()
    pythons = pythons or python_points(requirements, minors)
    uv = f"uv=={uv_version()}"
    for arch in arches:
        for python in pythons:
            # The lock already holds the whole closure: no resolving, exactly its pins.
            _download(target, python, arch, pins_for(requirements, python, arch), deps=False)
            _download(target, python, arch, BUILD_BACKEND, deps=True)
        _download(target, pythons[0], arch, [uv], deps=False)
    wheels = sorted(target.glob("*.whl"))
    glibc = ".".join(map(str, glibc_needed(wheels)))
    size = sum(path.stat().st_size for path in wheels) / 1e6
    (target / "README.txt").write_text(
        f"Wheels for grpclab: {len(wheels)} wheels, {size:.0f} MB, pinned by uv.lock"
        f"{' (with the test tools)' if dev else ''}.\n"
        f"Python: CPython {served_text(pythons)} (grpclab's requires-python: "
        f"{requires_python()}).\n"
        f"CPU: {', '.join(arches)} (Linux).\n"
        f"glibc: {glibc} or newer (Debian 12 has 2.36).\n"
        f"uv: {uv.split('==')[1]} (its wheel is here: `make setup` needs no network).\n"
        "Install offline, from the repository's root, with this folder as wheelhouse/:\n"
        "    make setup     (or: make setup WHEELHOUSE=path/to/this/folder)\n"
        "then: make preflight, make demo, make lab\n"
    )
    return wheels


# --- installing (on the attendee's laptop, with no network) -------------------------------------


def install(wheelhouse: Path, uv: str, python: str, venv: Path = REPO / ".venv") -> None:
    """Create `venv` with `python` and install grpclab and the lock's pins from `wheelhouse`,
    asking no index. Standard library only: grpclab is not installed yet."""
    requirements = wheelhouse / REQUIREMENTS
    if not requirements.is_file():
        raise SystemExit(f"{wheelhouse} is not a wheelhouse: it has no {REQUIREMENTS}")
    env = dict(os.environ, UV_PYTHON_DOWNLOADS="never", UV_NO_CONFIG="1")
    offline = ["--offline", "--no-index", "--find-links", str(wheelhouse)]
    subprocess.run([uv, "venv", "--clear", "--python", python, str(venv)], check=True, env=env)
    # --no-deps: the requirements are the lock's whole resolution for this machine, so
    # nothing is resolved again (a new resolution would not see pyproject's overrides, which
    # keep two format checkers of jsonschema out, and would ask for their wheels).
    subprocess.run(
        [uv, "pip", "install", "--python", str(venv / "bin" / "python"), "--no-deps", *offline]
        + ["-r", str(requirements), "-e", str(REPO)],
        check=True,
        env=env,
    )
    # The Makefile reads it: an offline .venv, so `make` runs no other installer (npm ci).
    (venv / ".wheelhouse").write_text(f"{wheelhouse}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grpclab.tools.wheelhouse", description=__doc__)
    parser.add_argument("directory", nargs="?", default="wheelhouse", type=Path)
    parser.add_argument("--dev", action="store_true", help="add the test tools (pytest, nbval...)")
    parser.add_argument(
        "--arch",
        choices=ARCHES,
        action="append",
        help="wheels for Linux on this CPU (repeat for both; default: this machine's): "
        "aarch64 for devcontainers on ARM laptops",
    )
    parser.add_argument(
        "--python",
        action="append",
        metavar="X.Y.Z",
        help="serve only this CPython (repeatable; default: every supported one)",
    )
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["install"]:
        # Called by `make setup` when it finds a wheelhouse: DIR UV PYTHON.
        wheelhouse, uv, python = argv[1:4]
        install(Path(wheelhouse).resolve(), uv, python)
        return 0
    args = parser.parse_args(argv)
    wheels = build(args.directory, dev=args.dev, arches=args.arch, pythons=args.python)
    size = sum(path.stat().st_size for path in wheels) / 1e6
    print(f"{args.directory}: {len(wheels)} wheels, {size:.0f} MB; see {args.directory}/README.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
