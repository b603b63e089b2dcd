"""certsync as a user gets it: a wheel built from a copy of this repository, installed into a
fresh virtual environment. No network: the build uses the setuptools that is installed
(--no-build-isolation) and the install takes only the wheel (--no-index --no-deps); pyinfra and
cryptography come from the system's site-packages."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
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
