"""Regenerate the Python stubs from protos/ (`python -m grpclab.tools.codegen [--check]`)."""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

from grpclab.paths import PROTOS, REPO, SRC

GENERATED_PACKAGE = "grpclab/demo/_generated"
OUTPUT_ROOT = SRC


def generate(output_root: Path) -> list[Path]:
    """Run protoc on every proto; imports come out as `grpclab.demo._generated.X`."""
    from grpc_tools import protoc  # dev dependency: only code generation needs it

    sources = sorted(PROTOS.glob("*.proto"))
    package_dir = output_root / GENERATED_PACKAGE
    package_dir.mkdir(parents=True, exist_ok=True)
    (package_dir / "__init__.py").write_text(
        '"""Generated from protos/ by grpclab.tools.codegen."""\n'
    )
    for source in sources:
        # The -I mapping makes protoc write `from grpclab.demo._generated import x_pb2`,
        # so the stubs import cleanly from an installed package.
        status = protoc.main(
            [
                "protoc",
                f"-I{GENERATED_PACKAGE}={PROTOS}",
                f"--python_out={output_root}",
                f"--pyi_out={output_root}",
                f"--grpc_python_out={output_root}",
                f"{GENERATED_PACKAGE}/{source.name}",
            ]
        )
        if status != 0:
            raise SystemExit(f"protoc failed on {source}")
    return sorted(p for p in package_dir.iterdir() if p.is_file())


def stale_files() -> list[str]:
    """Names of generated files that differ from what protos/ produces now."""
    with tempfile.TemporaryDirectory() as scratch:
        fresh = generate(Path(scratch))
        committed_dir = OUTPUT_ROOT / GENERATED_PACKAGE
        stale = []
        for path in fresh:
            committed = committed_dir / path.name
            if not committed.exists() or not filecmp.cmp(path, committed, shallow=False):
                stale.append(path.name)
        return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the stubs are stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        if stale:
            print("stale generated code, run `make protos`: " + ", ".join(stale))
            return 1
        print("generated code is current")
        return 0
    for path in generate(OUTPUT_ROOT):
        print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
