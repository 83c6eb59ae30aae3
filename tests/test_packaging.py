"""The project's packaging stays consistent: conda users get what uv users get."""

import tomllib

import yaml
from support import REPO

from grpclab.tools import codegen


def pyproject_requirements() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    return set(project["project"]["dependencies"]) | set(project["dependency-groups"]["dev"])


def conda_pip_requirements() -> set[str]:
    environment = yaml.safe_load((REPO / "environment.yml").read_text())
    for item in environment["dependencies"]:
        if isinstance(item, dict) and "pip" in item:
            return {line for line in item["pip"] if line != "-e ."}
    raise AssertionError("environment.yml has no pip section")


def test_environment_yml_lists_the_same_requirements_as_pyproject():
    missing = pyproject_requirements() - conda_pip_requirements()
    extra = conda_pip_requirements() - pyproject_requirements()
    assert not missing and not extra, (
        f"only in pyproject: {missing}; only in environment.yml: {extra}"
    )


def test_environment_yml_python_matches_requires_python():
    environment = yaml.safe_load((REPO / "environment.yml").read_text())
    assert "python=3.11" in environment["dependencies"]


def test_generated_stubs_are_current():
    assert codegen.stale_files() == []


def test_stale_check_notices_a_changed_proto(tmp_path, monkeypatch):
    changed = tmp_path / "protos"
    changed.mkdir()
    for proto in (REPO / "protos").glob("*.proto"):
        text = proto.read_text()
        if proto.name == "demo.proto":
            text = text.replace("string name = 1;", "string name = 1;\n  string surname = 2;")
        (changed / proto.name).write_text(text)
    monkeypatch.setattr(codegen, "PROTOS", changed)
    assert "demo_pb2.py" in codegen.stale_files()
