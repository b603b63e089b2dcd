"""The wheel holds the certsync package (controller, host program, cron template) and nothing
under another top-level name; installed in a fresh virtual environment, it is what gets imported
and it ships the same host program as the repository."""

from __future__ import annotations

import zipfile
from pathlib import Path

from certsync import program
from tests.packaging import ROOT, python_output


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
