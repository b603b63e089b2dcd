"""Running the deploy as an operator does, and reading a host the way an operator checks it."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.fleet import Pki, TestHost, served_certificate
from tests.fleet.x509util import sha256_fingerprint

ROOT = Path(__file__).resolve().parents[2]
PORTS = (993, 465, 587)
MOX_CERT_DIR = "/home/mox/certs"
BACKUP_DIR = "/var/lib/certsync/backups"
LOG_FILE = "/var/log/certsync/certsync.log"
ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class DeployRun:
    returncode: int
    output: str  # stdout and stderr, colours removed
    stdout: str = ""  # alone (pyinfra logs to stderr; `--json` prints pure JSON here)


def deploy(inventory: Path, *args: str, timeout: float = 300) -> DeployRun:
    """`pyinfra -y [args] inventory deploy.py` from the repository, as the README says."""
    return pyinfra("-y", *args, str(inventory), "deploy.py", timeout=timeout)


def preview(inventory: Path, *args: str, timeout: float = 300) -> DeployRun:
    """`pyinfra --dry [args] inventory deploy.py`: the preview, changing nothing."""
    return pyinfra("--dry", *args, str(inventory), "deploy.py", timeout=timeout)


def pyinfra(
    *args: str,
    cwd: Path = ROOT,
    python: Path | None = None,
    answers: str = "",
    timeout: float = 300,
) -> DeployRun:
    """`pyinfra ARGS` in `cwd`; `answers`: what the operator types at pyinfra's questions (none:
    end of input). With `python`: `python -m pyinfra` of another environment (e.g. a virtual
    environment where the wheel is installed)."""
    program = ["pyinfra"] if python is None else [str(python), "-m", "pyinfra"]
    result = subprocess.run(
        [*program, *args],
        cwd=cwd,
        env={key: value for key, value in os.environ.items() if key != "PYTHONPATH"},
        input=answers,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = ANSI_RE.sub("", result.stdout + result.stderr)
    return DeployRun(result.returncode, output, result.stdout)


def sha256_on_host(host: TestHost, path: str) -> str:
    return host.run(f"sha256sum {path} | cut -d' ' -f1", check=True).stdout.strip()


def caddy_sha256(pki: Pki, name: str, suffix: str) -> str:
    path = pki.cert_path(name) if suffix == ".crt" else pki.key_path(name)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def served_fingerprints(host: TestHost, name: str) -> dict[int, str]:
    """What each port serves for `name` (for a wildcard, for a name under it)."""
    server_name = name.replace("*.", "imap.", 1)
    return {
        port: sha256_fingerprint(served_certificate(host.address, port, server_name))
        for port in PORTS
    }


def caddy_fingerprint(pki: Pki, name: str) -> str:
    return sha256_fingerprint(pki.certificate(name))


def backups(host: TestHost) -> list[str]:
    result = host.run(f"ls -1 {BACKUP_DIR} 2>/dev/null")
    return result.stdout.split()


@dataclass
class StatusRun:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> dict:
        return json.loads(self.stdout)


def status(inventory: Path, *args: str, cwd: Path, timeout: float = 120) -> StatusRun:
    """`certsync status INVENTORY [args]` run from another folder than the repository (the
    package's console script is `certsync.cli:main`)."""
    result = subprocess.run(
        [sys.executable, "-m", "certsync.cli", "status", str(inventory), *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return StatusRun(result.returncode, result.stdout, result.stderr)
