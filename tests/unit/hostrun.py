"""Running the host program as the hosts do: the zipapp, by the system's python3, isolated."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from certsync.host.settings import Config

HOST_PYTHON = "/usr/bin/python3"  # what the cron job and the deploy run it with
ISOLATED = ("-I", "-S")  # no user site, no site-packages, no PYTHON* variables: stdlib only


def run_host_program(pyz: Path, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """`python3 -I -S certsync.pyz args...`, its output as text (stdout and stderr captured
    unless given)."""
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    return subprocess.run(
        [HOST_PYTHON, *ISOLATED, str(pyz), *args], text=True, timeout=60, check=False, **kwargs
    )


def write_config(config: Config, path: Path) -> Path:
    """config.json as the deploy writes it."""
    path.write_text(json.dumps(config.to_json()))
    return path
