"""Fixtures of the unit tests of files/certsync.py (helpers live in certs.py beside this file)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.unit.certs import Ca, load_certsync


@pytest.fixture(scope="session")
def cs() -> ModuleType:
    """The certsync host program, files/certsync.py."""
    return load_certsync()


@pytest.fixture(scope="session")
def ca() -> Ca:
    """A root and an intermediate CA shared by the whole session."""
    return Ca()


@pytest.fixture
def make_config(cs: ModuleType, tmp_path: Path) -> Callable[..., Any]:
    """A certsync Config whose folders are under tmp_path; keyword arguments override fields."""

    def make(**overrides: Any) -> Any:
        settings: dict[str, Any] = {
            "host": "mail-1",
            "names": ("mail.example.com",),
            "caddy_data_dir": str(tmp_path / "caddy"),
            "mox_cert_dir": str(tmp_path / "mox" / "certs"),
            "mox_user": "mox",
            "mox_group": "mox",
            "mox_binary": "/usr/local/bin/mox",
            "mox_config": str(tmp_path / "mox" / "mox.conf"),
            "restart_command": "systemctl restart mox",
            "verify_address": "127.0.0.1",
            "verify_ports": (993, 465, 587),
            "verify_timeout_seconds": 30,
            "min_validity_hours": 24,
            "backups_keep": 5,
            "backup_dir": str(tmp_path / "backups"),
            "lock_file": str(tmp_path / "run" / "certsync.lock"),
            "log_file": str(tmp_path / "log" / "certsync.log"),
            "alert_command": "",
        }
        settings.update(overrides)
        return cs.Config(**settings)

    return make


@pytest.fixture
def dir_fd(tmp_path: Path):
    """An O_DIRECTORY descriptor of tmp_path, closed after the test."""
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    yield fd
    os.close(fd)
