"""The read of `certsync status`, run inside pyinfra's own command line (certsync/fleetread.py
starts it): `pyinfra --dry --yes INVENTORY [DEPLOY] certsync/status_end.py`, so that the
inventory, `--data`, `--group-data`, `--limit`, the connection options and config.py are read by
pyinfra itself, as `pyinfra INVENTORY DEPLOY` reads them.

Nothing of the deploy runs on a host: `--dry` stops pyinfra before it executes any operation and
`--yes` skips change detection, so the deploy's operations are only recorded, never evaluated;
`certsync_deploy(...)` (certsync/deploy.py) sees the status read and, instead of its operations,
reads the host's state with the defaults the deploy gives it, in the deploy's context (its
`_sudo` and the like): the one read-only command of the state fact. status_end.py then calls
`certsync_deploy()` for a host the deploy did not call it for when there is no DEPLOY (data
only), and marks the host's deploy as run through. After pyinfra: the hosts it targeted
(--limit, --exclude) and, for each it could not connect to, why.

Each finding is one JSON line in the file CERTSYNC_STATUS_OUTPUT names:
    {"event": "target", "host": H}                     pyinfra targeted H
    {"event": "unreachable", "host": H, "reason": R}   and could not connect to it
    {"event": "read", "host": H, "settings": {...} | null, "state": {...} | null, "error": E}
    {"event": "skipped", "host": H}                    H has no certificate names
    {"event": "loaded", "host": H}                     the deploy ran through on H
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gevent
from pyinfra import host, logger, state
from pyinfra.api.exceptions import ConnectError

from certsync.host.errors import printable
from certsync.hostdata import SettingsError, settings_of_host
from certsync.pyinfra_compat import cli_state, pyinfra_main
from certsync.stateread import read_state

OUTPUT_ENV = "CERTSYNC_STATUS_OUTPUT"  # where the findings go
DEPLOY_ENV = "CERTSYNC_STATUS_DEPLOY"  # "1": the user's deploy runs; "": certsync_deploy() alone
VERBOSE_ENV = "CERTSYNC_STATUS_VERBOSE"  # "1": pyinfra's own progress lines too


class StatusRun:
    """The findings of this status read, written as they come (a host that pyinfra stops at
    still has what was found before)."""

    def __init__(self, output: Path, own_deploy: bool) -> None:
        self.output = output
        self.own_deploy = own_deploy
        self.read: dict[str, dict[str, Any]] = {}  # host name: the defaults it was read with

    def write(self, record: dict[str, Any]) -> None:
        with self.output.open("a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")

    def read_host(self, defaults: Mapping[str, Any]) -> None:
        """The current host's state, read with its settings (its data, then `defaults`)."""
        name = host.name
        if name in self.read:
            if self.read[name] != dict(defaults):
                host.log(
                    "certsync status: certsync_deploy() is called twice, with other arguments:"
                    " the first call's are checked",
                    logger.warning,
                )
            return
        self.read[name] = dict(defaults)
        try:
            settings = settings_of_host(state, host, defaults)
        except SettingsError as error:
            refusal = {"settings": None, "state": None, "error": str(error)}
            self.write({"event": "read", "host": name, **refusal})
            return
        if not settings.names:
            self.write({"event": "skipped", "host": name})
            return
        found = read_state(host, settings, settings.installed_files, False, all_ports=True)
        self.write(
            {
                "event": "read",
                "host": name,
                "settings": {"values": settings.values, "names": settings.configured_names},
                "state": found if isinstance(found, dict) else None,
                "error": found if isinstance(found, str) else None,
            }
        )

    def host_loaded(self) -> None:
        """The deploy ran through on the current host (status_end.py)."""
        if not self.own_deploy and host.name not in self.read:
            from certsync.deploy import certsync_deploy  # certsync.deploy imports this module

            certsync_deploy()
        self.write({"event": "loaded", "host": host.name})

    def targets(self) -> None:
        """Once pyinfra is done: the hosts it targeted, and why it could not connect to those it
        failed (connected again, all at once, for the reason, which pyinfra only prints)."""
        ran = cli_state()
        if ran is None:  # pyinfra stopped before it read the inventory
            return
        targeted = [target for target in ran.inventory if ran.is_host_in_limit(target)]
        for target in targeted:
            self.write({"event": "target", "host": target.name})
        failed = [t for t in targeted if t in ran.failed_hosts and t.name not in self.read]
        jobs = [gevent.spawn(_why_unreachable, target) for target in failed]
        gevent.joinall(jobs)
        for target, job in zip(failed, jobs, strict=True):
            self.write({"event": "unreachable", "host": target.name, "reason": job.value})


def _why_unreachable(target: Any) -> str:
    try:
        target.connect(show_errors=False, raise_exceptions=True)
    except ConnectError as error:
        return printable(str(error))
    except Exception as error:  # whatever the connector raises: still this host's alone
        return printable(f"{type(error).__name__}: {error}")
    target.disconnect()
    return "pyinfra failed the host (its error is above)"


_run: StatusRun | None = None


def current() -> StatusRun | None:
    """The status read this process runs, or None (a deploy)."""
    return _run


def _run_of_process() -> StatusRun:
    if _run is None:
        raise RuntimeError("certsync status's files are for `certsync status`, not for a deploy")
    return _run


def host_loaded() -> None:
    _run_of_process().host_loaded()


class _WarningsOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING


def main(argv: Sequence[str]) -> None:
    """pyinfra's command line with `argv`, as the status read (fleetread.py gives the options)."""
    global _run
    _run = StatusRun(Path(os.environ[OUTPUT_ENV]), own_deploy=os.environ.get(DEPLOY_ENV) == "1")
    if os.environ.get(VERBOSE_ENV) != "1":  # pyinfra's warnings and errors, not its progress
        logging.getLogger("pyinfra").addFilter(_WarningsOnly())
    sys.argv = ["pyinfra", *argv]
    try:
        pyinfra_main()
    finally:
        _run.targets()


if __name__ == "__main__":
    from certsync.statusrun import main as _main  # the module certsync.deploy sees

    _main(sys.argv[1:])
