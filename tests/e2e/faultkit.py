"""Helpers of the fault tests: what a user checks on a host after a failure, and ways to break it.

Everything here acts on the real test fleet (tests/fleet): files are read from the host's private
folders, served certificates over real TLS, processes from the host's own PID namespace.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tests.e2e.deployrun import BACKUP_DIR, MOX_CERT_DIR, served_fingerprints
from tests.fleet import Fleet, Pki, TestHost
from tests.fleet.hostspec import storage_name
from tests.fleet.pki import ISSUER_FOLDER
from tests.fleet.waiting import wait_for
from tests.fleet.x509util import (
    key_matches_certificate,
    leaf_certificate,
    self_signed,
    sha256_fingerprint,
)

CONFIG_FILE = "/etc/certsync/config.json"
CRON_FILE = "/etc/cron.d/certsync"
PROGRAM = "/usr/local/lib/certsync/certsync.pyz"
SYNC_COMMAND = f"/usr/bin/python3 -I -S {PROGRAM} sync --config {CONFIG_FILE}"
HOST_RUN_DIR = "/run/certsync-e2e"  # private to each host (tests/fleet/fleet.py)


def one_host(
    make_fleet: Callable[..., Fleet], tmp_path: Path, **data: Any
) -> tuple[Fleet, TestHost, str, Path]:
    """A 1-host fleet (mail-1, name mail.h1.test, placeholder pair in mox) and its inventory,
    with `data` added to the host's data: (fleet, host, its name, inventory)."""
    fleet = make_fleet(1)
    host = fleet.hosts[0]
    inventory = fleet.write_inventory(
        tmp_path / "inventory.py", extra_host_data={host.name: data} if data else None
    )
    return fleet, host, host.cert_names[0], inventory


def put_mox_files(host: TestHost, name: str, crt: bytes, key: bytes | None) -> None:
    """What someone left in mox's folder for `name` (owned by mox, as mox's own files are): the
    .crt and the .key (modes 0644, 0600); a None file is removed."""
    folder = host.source_of(MOX_CERT_DIR)
    for suffix, data, mode in ((".crt", crt, 0o644), (".key", key, 0o600)):
        path = folder / f"{storage_name(name)}{suffix}"
        path.unlink(missing_ok=True)
        if data is not None:
            path.write_bytes(data)
            path.chmod(mode)
            shutil.chown(path, "mox", "mox")


def mox_files(host: TestHost) -> dict[str, tuple[str, int, int, int]]:
    """Every entry of mox's certificate folder, and of its folders (certsync's generations):
    name -> (sha256, 'link to <target>' or 'folder', uid, gid, mode)."""
    folder = host.source_of(MOX_CERT_DIR)
    result = {}
    inner = [p for d in folder.iterdir() if d.is_dir() and not d.is_symlink() for p in d.iterdir()]
    for entry in sorted([*folder.iterdir(), *inner]):
        info = entry.lstat()
        if entry.is_symlink():
            digest = f"link to {os.readlink(entry)}"
        elif entry.is_dir():
            digest = "folder"
        else:
            digest = hashlib.sha256(entry.read_bytes()).hexdigest()
        name = str(entry.relative_to(folder))
        result[name] = (digest, info.st_uid, info.st_gid, info.st_mode & 0o7777)
    return result


def mox_pair_view(host: TestHost) -> dict[str, tuple[str, int, int, int]]:
    """mox's .crt and .key of each name as mox reads them (through certsync's links):
    file -> (sha256, uid, gid, mode) of what mox reads, whatever the layout."""
    folder = host.source_of(MOX_CERT_DIR)
    result = {}
    for name in host.cert_names:
        for suffix in (".crt", ".key"):
            path = folder / f"{storage_name(name)}{suffix}"
            info = path.stat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            result[path.name] = (digest, info.st_uid, info.st_gid, info.st_mode & 0o7777)
    return result


def certsyncs_links(host: TestHost, name: str) -> bool:
    """Whether mox's .crt and .key of `name` are certsync's links into its current generation
    (certsync/host/layout.py), the only links certsync makes there."""
    folder, stored = host.source_of(MOX_CERT_DIR), storage_name(name)
    data = folder / f"..{stored}.data"
    return (
        all(
            (folder / f"{stored}{s}").is_symlink()
            and os.readlink(folder / f"{stored}{s}") == f"..{stored}.data/{stored}{s}"
            for s in (".crt", ".key")
        )
        and data.is_symlink()
        and re.fullmatch(rf"\.\.{re.escape(stored)}\.g[0-9a-f]{{16}}", os.readlink(data))
        is not None
    )


def leftovers(host: TestHost) -> list[str]:
    """What a crash could leave in mox's folder that a run must remove: staged files, and
    generations or data links that mox's files do not use."""
    folder = host.source_of(MOX_CERT_DIR)
    used = {os.readlink(p) for p in folder.glob("..*.data") if p.is_symlink()}
    found = []
    for entry in folder.iterdir():
        folder_entry = entry.is_dir() and not entry.is_symlink()
        unused = entry.name.startswith("..") and folder_entry and entry.name not in used
        if ".certsync-" in entry.name or unused:
            found.append(entry.name)
    for name in host.cert_names:
        data = folder / f"..{storage_name(name)}.data"
        if data.is_symlink() and not certsyncs_links(host, name):
            found.append(data.name)
    return sorted(found)


def backup_files(host: TestHost) -> dict[str, str]:
    """Every file of every backup: 'stamp/file' -> sha256."""
    root = host.source_of(BACKUP_DIR)
    if not root.exists():
        return {}
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def assert_serves_whole_pair(host: TestHost, name: str) -> str:
    """mox's .crt and .key for `name` are a matching pair and mox serves that certificate on
    every checked port; return its fingerprint. (The key is compared, never printed.)"""
    folder = host.source_of(MOX_CERT_DIR)
    crt, key = folder / f"{storage_name(name)}.crt", folder / f"{storage_name(name)}.key"
    assert certsyncs_links(host, name) or not (crt.is_symlink() or key.is_symlink()), (
        host.name,
        name,
    )
    cert = leaf_certificate(crt.read_bytes())
    assert key_matches_certificate(key.read_bytes(), cert), (
        f"{host.name}: mox's {name}.key does not match its .crt"
    )
    fingerprint = sha256_fingerprint(cert)
    served = served_fingerprints(host, name)
    assert set(served.values()) == {fingerprint}, (host.name, name, served, fingerprint)
    return fingerprint


def assert_serves_caddys(host: TestHost, pki: Pki, name: str) -> None:
    """mox's files are Caddy's (pki's) pair for `name` and mox serves it."""
    mox = host.source_of(MOX_CERT_DIR) / storage_name(name)
    assert Path(f"{mox}.crt").read_bytes() == pki.cert_path(name).read_bytes(), name
    assert Path(f"{mox}.key").read_bytes() == pki.key_path(name).read_bytes(), name
    assert assert_serves_whole_pair(host, name) == sha256_fingerprint(pki.certificate(name))


def caddy_name_dir(host: TestHost, name: str, issuer: str = ISSUER_FOLDER) -> Path:
    """The folder of `name` in the host's own copy of Caddy's storage."""
    return host.source_of(host.caddy_data_dir) / "certificates" / issuer / name


def write_host_file(host: TestHost, path: str, content: bytes | str, mode: int = 0o755) -> None:
    """A root-owned file inside the host (under one of its private folders)."""
    target = host.source_of(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(content.encode() if isinstance(content, str) else content)
    os.chown(target, 0, 0)
    target.chmod(mode)


def cron_command(host: TestHost) -> str:
    """The command of the host's cron job, as cron runs it (root's line of its cron file)."""
    cron = host.run(f"cat {CRON_FILE}", check=True).stdout
    line = next(line for line in cron.splitlines() if " root " in line and not line.startswith("#"))
    return line.split(" root ", 1)[1]


def host_popen(host: TestHost, command: str, log: Path) -> subprocess.Popen[bytes]:
    """Start a shell command as root inside the host, in the background (output to `log`)."""
    with log.open("wb") as out:
        return subprocess.Popen(
            ["nsenter", "-t", str(host.namespace_pid), "-m", "-p", "--", "sh", "-c", command],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd="/",
            start_new_session=True,
        )


def host_processes(host: TestHost, pattern: str) -> list[str]:
    """Command lines of the host's processes that match `pattern` (a regular expression)."""
    found = []
    for pid in host.processes():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if re.search(pattern, cmdline):
            found.append(cmdline.strip())
    return found


def wait_until_no_sync_runs(host: TestHost, timeout: float = 90) -> None:
    wait_for(
        lambda: not host_processes(host, r"certsync\.pyz sync"),
        timeout,
        f"every certsync.pyz process of {host.name} to end",
        interval=0.1,
    )


def log_lines(host: TestHost) -> list[str]:
    log = host.source_of("/var/log/certsync/certsync.log")
    return log.read_text().splitlines() if log.exists() else []


def made_pair(
    names: Sequence[str],
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> tuple[bytes, bytes]:
    """A self-signed ECDSA P-256 (certificate PEM, SEC1 key PEM) made with `cryptography`."""
    pair = self_signed(list(names), not_before, not_after)
    return pair.cert_pem, pair.key_pem


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)
