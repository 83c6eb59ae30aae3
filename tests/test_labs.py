"""The labs' checks on a real sandbox: each fails on its starter files and passes on its solution.

One sandbox serves the whole module; every check replays its lab's files from scratch
(applies them, waits for the rollout), which is the reset between starter and solution.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest

import grpclab
from grpclab.labs import (
    CLIENT_FILE,
    LABS,
    LABS_DIR,
    LabFilesError,
    check_lab,
    lab_info,
    read_client_config,
    start_lab,
)

# What must fail on the starter files, by the start of the item's name: the lab's point,
# not a side effect such as a file that does not apply.
STARTER_FAILS = {
    "01": ["every pod served calls", "max/min calls per pod"],
    "02": ["every new pod served within 5 s"],
    "03": ["no call failed while pod"],
    "04": ["GetUser is served by v2 only"],
}


@pytest.fixture(scope="module")
def lab():
    with grpclab.connect("sandbox") as sandbox:
        yield sandbox


def lab_dir(number: str) -> Path:
    return LABS_DIR / lab_info(number).folder


@pytest.mark.timeout(240)
@pytest.mark.parametrize("number", sorted(LABS))
def test_the_check_fails_on_the_starter_and_passes_on_the_solution(lab, number):
    starter = check_lab(number, lab_dir(number), lab, files="starter", quiet=True)
    assert not starter.passed, starter.report()
    failed = [item.name for item in starter.failed]
    for expected in STARTER_FAILS[number]:
        assert any(name.startswith(expected) for name in failed), starter.report()
    assert starter.items[0].passed, f"the starter files must apply:\n{starter.report()}"
    assert all(item.hint for item in starter.failed), "every failure needs a hint"

    solution = check_lab(number, lab_dir(number), lab, files="solution", quiet=True)
    assert solution.passed, solution.report()


def test_a_file_that_does_not_apply_is_a_failed_item_naming_the_file(lab, tmp_path):
    shutil.copytree(lab_dir("01") / "starter", tmp_path / "work")
    service = tmp_path / "work" / "service.yaml"
    service.write_text(service.read_text().replace("targetPort: grpc", "targetPort: [grpc]"))
    result = check_lab("01", tmp_path, lab, quiet=True)
    assert not result.passed
    [item] = result.items
    assert item.name == "your files apply" and not item.passed
    assert str(service) in item.measured and "targetPort" in item.measured, item.measured
    assert "lab 01: not passed yet" in result.report()


def test_start_lab_copies_the_starter_once_and_keeps_edits(lab, tmp_path):
    shutil.copytree(lab_dir("01") / "starter", tmp_path / "starter")
    lines = start_lab("01", tmp_path, lab)
    assert "copied from starter/" in lines[0]
    assert any(line.startswith("deployment/grpc-server: 3 pods ready") for line in lines)
    edited = tmp_path / "work" / CLIENT_FILE
    edited.write_text(edited.read_text().replace("pick_first", "round_robin"))
    assert "kept" in start_lab("01", tmp_path, lab)[0]
    assert read_client_config(edited).lb_policy == "round_robin"


# --- the learner's files, without a cluster ----------------------------------------------------


@pytest.mark.parametrize("number", sorted(LABS))
def test_starter_and_solution_hold_the_same_files(number):
    info = lab_info(number)
    starter = sorted(p.name for p in (lab_dir(number) / "starter").iterdir())
    solution = sorted(p.name for p in (lab_dir(number) / "solution").iterdir())
    assert starter == solution
    assert set(info.manifests) <= set(starter)
    if CLIENT_FILE in starter:
        read_client_config(lab_dir(number) / "starter" / CLIENT_FILE)
        read_client_config(lab_dir(number) / "solution" / CLIENT_FILE)


@pytest.mark.parametrize("number", sorted(LABS))
def test_the_notebook_starts_the_lab_and_ends_with_its_check(number):
    notebook = nbformat.read(lab_dir(number) / "starter.ipynb", as_version=4)
    opening = notebook.cells[0].source
    assert "Passes when" in opening and "How long it takes" in opening
    cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert f'start_lab("{number}", ".", lab)' in cells[0].source
    assert cells[-1].source.strip() == f'result = check_lab("{number}", ".", lab)'
    assert not any(cell.outputs for cell in cells), "hand the notebook out unexecuted"
    assert (lab_dir(number) / "README.md").exists()


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("service: grpc-server\nlb_polcy: round_robin\n", "'lb_polcy': unknown field"),
        ("service: grpc-server\nchannels: two\n", "'channels': 'two' is not a whole number"),
        ("service: grpc-server\nchannels: 0\n", "'channels': 0 is not 1 or more"),
        ("port: grpc\n", "'service': missing"),
        ("service: grpc-server\nservice_config: '{not json'\n", "'service_config'"),
        ("- service\n", "must be a mapping"),
        ("service: [\n", "not valid YAML"),
    ],
)
def test_a_bad_client_file_names_the_file_and_the_field(tmp_path, text, field):
    path = tmp_path / CLIENT_FILE
    path.write_text(text)
    with pytest.raises(LabFilesError) as raised:
        read_client_config(path)
    assert str(path) in str(raised.value) and field in str(raised.value)


def test_an_unknown_lab_is_named_with_the_ones_there_are():
    with pytest.raises(KeyError, match="no lab '07'; the labs are 01, 02, 03, 04"):
        lab_info("07")
    assert lab_info(1).number == "01" and lab_info("04-grpcroute-v2").number == "04"
