"""certsync as a user gets it: a wheel built from a copy of this repository, installed into a
fresh virtual environment. No network: the build uses the setuptools that is installed
(--no-build-isolation) and the install takes only the wheel (--no-index --no-deps); pyinfra
comes from the system's site-packages.

And certsync with the lowest and the highest pyinfra that pyproject.toml declares: one virtual
environment per pyinfra version, with certsync's declared dependencies, from PyPI (the only
test step that downloads), made once and kept under the test runs' root; the session's wheel is
unpacked beside it (pip --target), so that test runs of other checkouts can share it."""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
READY = "certsync-test-ready"  # written last: the environment is whole
NOT_SOURCE = shutil.ignore_patterns(
    ".git", "__pycache__", "*.egg-info", "build", "dist", ".*_cache", "*.pyc"
)


def _run(*argv: str | Path, cwd: Path | None = None) -> str:
    """Run a command as a user's shell would, without this checkout on PYTHONPATH."""
    result = subprocess.run(
        [str(arg) for arg in argv],
        cwd=cwd,
        env={key: value for key, value in os.environ.items() if key != "PYTHONPATH"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"{argv}: {result.stdout}{result.stderr}"
    return result.stdout


def build_wheel(folder: Path) -> Path:
    """`pip wheel .` of a clean copy of the repository (the checkout stays untouched)."""
    source = folder / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    _run(
        sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps",
        "--wheel-dir", folder, source,
    )  # fmt: skip
    (wheel,) = folder.glob("certsync-*.whl")
    return wheel


def install_in_venv(folder: Path, wheel: Path) -> Path:
    """A fresh virtual environment with the wheel installed; its python."""
    _run(sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", folder)
    python = folder / "bin" / "python"
    # The system's pip (visible through --system-site-packages) installs into the venv.
    _run(python, "-m", "pip", "install", "--no-index", "--no-deps", wheel)
    return python


def python_output(python: Path, code: str, cwd: Path) -> str:
    """What `python -c code` prints, started in `cwd` (as a user's deploy folder)."""
    return _run(python, "-c", code, cwd=cwd).strip()


def declared_dependencies() -> list[str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]


def pyinfra_bounds() -> dict[str, str]:
    """pip requirements of the lowest and of the highest pyinfra certsync declares (the highest:
    the newest release when its environment was made; remove the environment for a newer one)."""
    (declared,) = [dep for dep in declared_dependencies() if re.match(r"pyinfra\b", dep)]
    lowest = re.search(r">=\s*([0-9.]+)", declared)
    assert lowest, f"{declared}: no lower bound"
    version = lowest.group(1) + ".0" * (2 - lowest.group(1).count("."))
    return {"lowest": f"pyinfra=={version}", "highest": declared}  # pip takes the newest


def pyinfra_venv(cache: Path, requirement: str) -> Path:
    """A virtual environment with `requirement` and certsync's other declared dependencies (pip
    resolves them together), made once under `cache`; its python."""
    others = [dep for dep in declared_dependencies() if not re.match(r"pyinfra\b", dep)]
    wanted = [requirement, *others]
    key = hashlib.sha256(repr((wanted, sys.version_info[:2])).encode()).hexdigest()[:12]
    folder = cache / f"{re.sub(r'[^A-Za-z0-9.]+', '_', requirement)}-{key}"
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / f"{folder.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test process may be making the same one
        if not (folder / READY).exists():
            shutil.rmtree(folder, ignore_errors=True)  # what a killed run left half made
            _run(sys.executable, "-m", "venv", folder)
            pip: list[str | Path] = [
                folder / "bin" / "python",
                "-m",
                "pip",
                "--disable-pip-version-check",
            ]
            _run(*pip, "install", "--quiet", *wanted)
            (folder / READY).write_text(" ".join(wanted) + "\n")
    return folder / "bin" / "python"


def unpack_wheel(python: Path, wheel: Path, target: Path) -> Path:
    """The wheel installed (without dependencies) into `target`, for python's PYTHONPATH."""
    _run(python, "-m", "pip", "--disable-pip-version-check", "install", "--quiet", "--no-deps",
         "--no-index", "--target", target, wheel)  # fmt: skip
    return target
