"""The library does not print: learner notes go through grpclab.notes, the rest through logging.

A note is a logging record that its handler writes to the current stdout, so that it shows in
the cell's output as print would; logging configuration can silence it. An AST check over
src/grpclab finds any print or direct write to sys.stdout/sys.stderr outside the programs.
"""

from __future__ import annotations

import ast
import logging

import pytest
from support import REPO

from grpclab import notes

SRC = REPO / "src" / "grpclab"
# Programs (their own output is their job), and the one home of learner notes.
PROGRAMS = {
    "tools/cli.py": "the grpclab command",
    "tools/preflight.py": "grpclab doctor's report",
    "tools/wheelhouse.py": "python -m grpclab.tools.wheelhouse",
    "tools/codegen.py": "python -m grpclab.tools.codegen",
    "cluster/manifests/index_build.py": "python -m grpclab.cluster.manifests.index_build",
    "load/runner.py": "python -m grpclab.load: its JSON lines are the load Job's protocol",
    "demo/server.py": "the demo server's ready line and its exit",
    "notes.py": "writes each learner note to the current stdout",
}


def prints(tree: ast.AST) -> list[str]:
    """Each use of print and of sys.stdout / sys.stderr in `tree`, as source text."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id == "print":
            found.append("print")
        elif (
            isinstance(node, ast.Attribute)
            and node.attr in ("stdout", "stderr")
            and isinstance(node.value, ast.Name)
            and node.value.id == "sys"
        ):
            found.append(ast.unparse(node))
    return found


def test_the_library_does_not_print_outside_its_programs():
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        relative = path.relative_to(SRC).as_posix()
        if relative in PROGRAMS or relative.startswith("demo/_generated/"):
            continue
        uses = prints(ast.parse(path.read_text(), str(path)))
        if uses:
            found[relative] = uses
    assert found == {}, "use grpclab.notes.say for a learner note, logging for the rest"


def test_the_check_finds_print_and_direct_writes():
    tree = ast.parse("print('x')\nimport sys\nsys.stderr.write('y')\nf(out=print)\n")
    assert prints(tree) == ["print", "sys.stderr", "print"]


def test_a_note_shows_on_the_current_stdout_not_stderr(capsys):
    notes.say("the sidecar is Envoy")
    notes.say(3)
    said = capsys.readouterr()
    assert said.out == "the sidecar is Envoy\n3\n" and said.err == ""


def test_notes_are_logging_records_that_logging_can_silence(capsys):
    logger = logging.getLogger(notes.LOGGER)
    logger.setLevel(logging.WARNING)
    try:
        notes.say("not shown")
    finally:
        logger.setLevel(logging.INFO)
    notes.say("shown")
    assert capsys.readouterr().out == "shown\n"


@pytest.mark.parametrize("configured", [False, True])
def test_a_configured_root_logger_does_not_show_a_note_twice(capsys, configured):
    root = logging.getLogger()
    handler = logging.StreamHandler()  # stderr, as logging.basicConfig() sets up
    if configured:
        root.addHandler(handler)
    try:
        notes.say("once")
    finally:
        root.removeHandler(handler)
    said = capsys.readouterr()
    assert said.out == "once\n" and "once" not in said.err
