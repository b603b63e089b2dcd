"""The wheel holds the certsync package (controller, host program, cron template) and nothing
under another top-level name; installed in a fresh virtual environment, it is what gets imported
and it ships the same host program as the repository."""

from __future__ import annotations

import ast
import re
import sys
import zipfile
from importlib.metadata import packages_distributions
from pathlib import Path

from certsync import program
from tests.packaging import ROOT, declared_dependencies, pyinfra_bounds, python_output
from tests.unit.test_pyinfra_compat import CHECKS


def package_files() -> set[str]:
    """The files of the package in the repository, as paths inside a wheel: not caches, nor the
    linter's settings for the host program."""
    return {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "certsync").rglob("*")
        if path.is_file()
        and not any(part == "__pycache__" or part.endswith("_cache") for part in path.parts)
        and path.name != "ruff.toml"
    }


def test_the_wheel_holds_the_certsync_package_and_nothing_else(certsync_wheel):
    names = zipfile.ZipFile(certsync_wheel).namelist()

    version = certsync_wheel.name.split("-")[1]  # certsync-<version>-py3-none-any.whl
    assert {name.split("/")[0] for name in names} == {"certsync", f"certsync-{version}.dist-info"}
    assert {name for name in names if name.startswith("certsync/")} == package_files()
    assert "certsync/templates/certsync.cron.j2" in names
    assert "certsync/files/certsync.rules.yml" in names
    assert "certsync/host/transaction.py" in names


def test_the_installed_package_is_imported_and_ships_the_same_host_program(certsync_venv, tmp_path):
    venv = certsync_venv.parent.parent

    imported = python_output(certsync_venv, "import certsync; print(certsync.__file__)", tmp_path)
    assert Path(imported).is_relative_to(venv)
    # byte for byte: a host deployed from the repository and then from the wheel keeps its program
    sha256 = "from certsync import program; print(program.zipapp_sha256())"
    assert python_output(certsync_venv, sha256, tmp_path) == program.zipapp_sha256()


def _distribution(requirement: str) -> str:
    name = re.match(r"[A-Za-z0-9_.-]+", requirement)
    assert name, requirement
    return re.sub(r"[-_.]+", "-", name.group(0)).lower()


def test_every_package_certsync_imports_is_declared():
    imported = set()
    for path in (ROOT / "certsync").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    # _sha2: the standard library's sha256 from Python 3.12 on (the host program's, tried first)
    third_party = imported - set(sys.stdlib_module_names) - {"certsync", "_sha2"}
    distributions = packages_distributions()
    needed = {_distribution(dist) for module in third_party for dist in distributions[module]}
    assert needed == {_distribution(dep) for dep in declared_dependencies()}


def test_certsync_works_with_the_lowest_and_the_highest_pyinfra(certsync_with_pyinfra, tmp_path):
    checks = certsync_with_pyinfra.run("-c", CHECKS, cwd=tmp_path)
    usage = certsync_with_pyinfra.run("-m", "certsync.cli", "status", "--help", cwd=tmp_path)

    assert checks.returncode == 0, checks.stderr
    installed = checks.stdout.strip()
    if certsync_with_pyinfra.bound == "lowest":
        assert pyinfra_bounds()["lowest"] == f"pyinfra=={installed}"
        exclude = ("-m", "certsync.cli", "status", "@local", "--exclude", "@local")
        refused = certsync_with_pyinfra.run(*exclude, cwd=tmp_path)  # pyinfra 3.9 has none
        assert refused.returncode == 2 and "--exclude needs pyinfra 3.10" in refused.stderr
    else:
        assert tuple(map(int, installed.split(".")[:2])) >= (3, 10), installed
    assert usage.returncode == 0, usage.stderr
    for option in ("--limit", "--exclude", "--data", "--group-data", "--config", "--sudo"):
        assert option in usage.stdout
