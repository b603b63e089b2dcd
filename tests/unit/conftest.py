"""Fixtures of the unit tests of certsync.host (helpers live in certs.py and fakemox.py)."""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from certsync import program
from certsync.host.settings import Config
from tests.conftest import REQUIRE_E2E_ENV
from tests.unit.certs import Ca
from tests.unit.fakemox import FakeMox

MOX_ACCOUNT = "mox"


@pytest.fixture(autouse=True)
def _keep_umask() -> Iterator[None]:
    """The host program's main() sets the process' umask (0077); the tests that run after (the
    test fleet's folders, the mox it starts) need the one they started with."""
    mask = os.umask(0o022)
    os.umask(mask)
    yield
    os.umask(mask)


@pytest.fixture(autouse=True)
def _no_warnings_of_other_tests() -> Iterator[None]:
    """records.WARNINGS is the host program's, once per process (its sync logs them, its state
    read reports them): each test starts without those of the tests before it."""
    from certsync.host import records

    del records.WARNINGS[:]
    yield
    del records.WARNINGS[:]


@pytest.fixture(scope="session")
def ca() -> Ca:
    """A root and an intermediate CA shared by the whole session."""
    return Ca()


@pytest.fixture(scope="session")
def mox_ids() -> tuple[int, int]:
    """uid and gid of the `mox` user and group (created when missing); the tests run as root."""
    if os.geteuid() != 0:
        reason = "needs root: the host program reads keys and sets owners as root"
        if os.environ.get(REQUIRE_E2E_ENV) == "1":
            pytest.fail(f"{reason} ({REQUIRE_E2E_ENV}=1)", pytrace=False)
        pytest.skip(reason)
    try:
        pwd.getpwnam(MOX_ACCOUNT)
    except KeyError:
        subprocess.run(["useradd", "--system", "--user-group", MOX_ACCOUNT], check=True)
    return pwd.getpwnam(MOX_ACCOUNT).pw_uid, grp.getgrnam(MOX_ACCOUNT).gr_gid


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., Config]:
    """A certsync Config whose folders are under tmp_path; keyword arguments override settings."""

    def make(**overrides: Any) -> Config:
        values: dict[str, Any] = {
            "names": ["mail.example.com"],
            "caddy_data_dir": str(tmp_path / "caddy"),
            "mox_cert_dir": str(tmp_path / "mox" / "certs"),
            "mox_user": MOX_ACCOUNT,
            "mox_group": MOX_ACCOUNT,
            "mox_binary": "/usr/local/bin/mox",
            "mox_config": str(tmp_path / "mox" / "mox.conf"),
            "restart_command": "systemctl restart mox",
            "verify_address": "127.0.0.1",
            "verify_ports": [993, 465, 587],
            "verify_timeout_seconds": 30,
            "min_validity_hours": 24,
            "backups_keep": 5,
            "backup_dir": str(tmp_path / "backups"),
            "lock_file": str(tmp_path / "run" / "certsync.lock"),
            "log_file": str(tmp_path / "log" / "certsync.log"),
            "alert_command": "",
            "metrics_file": str(tmp_path / "metrics" / "certsync.prom"),
            # no DNS lookups unless a test asks for them (and fakes the lookup: test_dane.py)
            "dane": "off",
        }
        values.update(overrides)
        return Config("mail-1", values)

    return make


@pytest.fixture
def dir_fd(tmp_path: Path) -> Iterator[int]:
    """An O_DIRECTORY descriptor of tmp_path, closed after the test."""
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    yield fd
    os.close(fd)


MakeFakeMox = Callable[..., tuple[FakeMox, Config]]


@pytest.fixture
def fake_mox(
    tmp_path: Path, mox_ids: tuple[int, int], make_config: Callable[..., Config]
) -> Iterator[MakeFakeMox]:
    """Factory: fake_mox(names, **settings) -> (a FakeMox for these names in tmp_path/mox, not
    started yet, and a Config whose restart, `mox config test` and mox.conf are that mox's).
    Without `verify_address`, the check after a restart goes where mox.conf's listener says.
    With `submission`, mox serves SMTP submission (STARTTLS) too, checked after IMAPS."""
    made: list[FakeMox] = []

    def make(
        names: tuple[str, ...] = ("mail.example.com",), submission: bool = False, **overrides: Any
    ) -> Any:
        mox = FakeMox(tmp_path / "mox", tmp_path / "mox" / "certs", list(names), submission)
        made.append(mox)
        ports = [mox.port, mox.submission_port] if submission else [mox.port]
        settings: dict[str, Any] = {
            "names": list(names),
            "mox_binary": str(mox.mox_binary),
            "mox_config": str(mox.mox_config),
            "restart_command": mox.restart_command,
            "verify_address": "",
            "verify_ports": ports,
            "verify_timeout_seconds": 2,
        }
        return mox, make_config(**{**settings, **overrides})

    yield make
    for mox in made:
        mox.close()


@pytest.fixture(scope="session")
def pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The host program as the hosts get it: the zipapp, in a file."""
    path = tmp_path_factory.mktemp("program") / "certsync.pyz"
    path.write_bytes(program.zipapp())
    return path
