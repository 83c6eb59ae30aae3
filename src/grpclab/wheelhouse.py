"""`python -m grpclab.wheelhouse [DIR]`: every wheel grpclab needs, for installing offline.

Writes DIR (default: wheelhouse/) with requirements.txt exported from uv.lock, a wheel of
every locked package for one platform, and hatchling (what `pip install -e .` builds with).
Copy DIR and the repository to a USB stick; on a laptop without network:

    python3 -m venv .venv
    .venv/bin/pip install --no-index --find-links wheelhouse -e .
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# pyproject.toml's [build-system] requires, and what hatchling asks for to build editable.
BUILD_BACKEND = ["hatchling", "editables"]
GLIBC = 36  # Debian 12's glibc is 2.36: the newest manylinux wheels its Python can load
ARCHES = ("x86_64", "aarch64")


def uv_binary() -> str:
    """uv from PATH, else the copy the Makefile bootstraps into .tools/."""
    found = shutil.which("uv") or str(REPO / ".tools" / "bin" / "uv")
    if not Path(found).exists():
        raise SystemExit(
            "grpclab.wheelhouse: uv not found; run `make setup` first (it installs uv)"
        )
    return found


def pip_command(python: str) -> list[str]:
    """pip for `python`: its own when installed, else pip run by uv against that interpreter."""
    if python == sys.executable and importlib.util.find_spec("pip") is not None:
        return [python, "-m", "pip"]
    # uv's venvs have no pip; `uv tool run` fetches one, and --python makes it resolve
    # environment markers for the interpreter the wheels are meant for.
    return [uv_binary(), "tool", "run", "--python", python, "pip"]


def export_requirements(target: Path, dev: bool) -> Path:
    """requirements.txt pinned exactly as uv.lock, without grpclab itself."""
    argv = [uv_binary(), "export", "--frozen", "--no-hashes", "--no-emit-project"]
    if not dev:
        argv.append("--no-dev")
    exported = subprocess.run(argv, cwd=REPO, check=True, capture_output=True, text=True)
    path = target / "requirements.txt"
    path.write_text(exported.stdout)
    return path


def linux_platform_tags(arch: str) -> list[str]:
    """pip platform tags a Debian 12 machine (glibc 2.36) of `arch` accepts, oldest first."""
    return [f"manylinux2014_{arch}", *(f"manylinux_2_{n}_{arch}" for n in range(17, GLIBC + 1))]


def build(target: Path, dev: bool = False, arch: str | None = None) -> list[Path]:
    """Fill `target` with wheels; returns them. `arch`: a Linux CPU other than this one."""
    platforms = linux_platform_tags(arch) if arch else None
    target.mkdir(parents=True, exist_ok=True)
    requirements = export_requirements(target, dev)
    pip = pip_command(sys.executable)
    if not platforms:
        # `pip wheel` takes published wheels as they are and builds one from any sdist, so
        # the stick holds no sdist that would need a compiler on the attendee's laptop.
        for spec in (["-r", str(requirements)], BUILD_BACKEND):
            subprocess.run([*pip, "wheel", "--wheel-dir", str(target), *spec], check=True)
    if platforms:
        # Another CPU (an ARM laptop's devcontainer): only published wheels can do. pip takes
        # the tags as given, so every manylinux level the machine accepts is named.
        version = ".".join(map(str, sys.version_info[:3]))  # some wheels need 3.11.5+
        tags = [option for tag in platforms for option in ("--platform", tag)]
        for spec in (["-r", str(requirements)], BUILD_BACKEND):
            subprocess.run(
                [
                    *pip,
                    "download",
                    "--only-binary=:all:",
                    *tags,
                    "--python-version",
                    version,
                    "--implementation",
                    "cp",
                    "--dest",
                    str(target),
                    *spec,
                ],
                check=True,
            )
    wheels = sorted(target.glob("*.whl"))
    built_for = f"Linux {arch}" if arch else f"{platform.system()} {platform.machine()}"
    (target / "README.txt").write_text(
        f"Wheels for grpclab, Python {sys.version_info.major}.{sys.version_info.minor} on "
        f"{built_for} ({len(wheels)} wheels).\n"
        "Install offline, from the repository's root:\n"
        "    python3 -m venv .venv\n"
        f"    .venv/bin/pip install --no-index --find-links {target.name} -e .\n"
        "Then check the machine: .venv/bin/grpclab preflight\n"
    )
    return wheels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grpclab.wheelhouse", description=__doc__)
    parser.add_argument("directory", nargs="?", default="wheelhouse", type=Path)
    parser.add_argument("--dev", action="store_true", help="add the test tools (pytest, nbval...)")
    parser.add_argument(
        "--arch",
        choices=ARCHES,
        help="wheels for Linux on this CPU instead of this machine's (published wheels only): "
        "aarch64 for devcontainers on ARM laptops",
    )
    args = parser.parse_args(argv)
    wheels = build(args.directory, dev=args.dev, arch=args.arch)
    size = sum(path.stat().st_size for path in wheels) / 1e6
    print(f"{args.directory}: {len(wheels)} wheels, {size:.0f} MB; see {args.directory}/README.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
