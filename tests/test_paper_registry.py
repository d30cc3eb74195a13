"""The registry of paper artefacts is the one list that the CLI, make and the report read."""

import importlib
import pkgutil
import subprocess
import sys

import pytest

import neuralode.paper
from neuralode.paper import cli, registry, report
from neuralode.source import REPO_ROOT

#: Modules of neuralode/paper/ that are not artefacts: shared helpers and the commands around them.
HELPERS = {"common", "runs", "flows", "cli", "registry", "report"}


def test_every_module_with_main_is_an_artefact_and_every_artefact_has_one():
    modules = {m.name for m in pkgutil.iter_modules(neuralode.paper.__path__)} - HELPERS
    made = {a.name for a in registry.made()}
    assert modules == made
    for name in made:
        assert callable(importlib.import_module(registry.BY_NAME[name].module).main)


def test_cli_and_report_list_the_registry():
    assert set(cli.available("figure")) == {a.name for a in registry.ARTEFACTS if a.kind == "figure"}
    assert set(cli.available("table")) == {a.name for a in registry.ARTEFACTS if a.kind == "table"} | {"report"}
    assert report.ARTEFACTS is registry.ARTEFACTS


def test_the_registry_runs_without_the_package():
    """make writes mk/artefacts.mk with plain python3 before anything is installed."""
    out = subprocess.run([sys.executable, "-S", "-I", str(REPO_ROOT / "neuralode/paper/registry.py"), "make"],
                         capture_output=True, text=True, check=True).stdout
    assert out == registry.makefile()


@pytest.mark.parametrize("artefact", registry.made(), ids=lambda a: a.name)
def test_make_target_runs_the_module_at_the_scale(artefact):
    done = subprocess.run(["make", "-n", "-s", artefact.name, "SCALE=cpu", "PY=py"], cwd=REPO_ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"py -m {artefact.module} " in done.stdout and "--scale cpu" in done.stdout
    assert ("--train" in done.stdout) == ("--train" in artefact.options)


def test_make_paper_runs_every_artefact_in_report_order():
    done = subprocess.run(["make", "-n", "-p", "paper"], cwd=REPO_ROOT, capture_output=True, text=True)
    line = next(line for line in done.stdout.splitlines() if line.startswith("PAPER_TARGETS :="))
    assert line.split(":=")[1].split() == [a.name for a in registry.made()]
