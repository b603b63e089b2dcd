"""Reading the certsync state of an inventory's hosts for `certsync status`: pyinfra's own
command line reads the inventory, the data and config.py, connects and runs the deploy's code
(certsync/statusrun.py), so that status sees what `pyinfra INVENTORY DEPLOY` sees, from the same
working folder and with the same options; here, the hosts it found, each with its settings and
its state, or why it could not be checked (that host's alone)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from certsync import statusrun
from certsync.hostdata import HostSettings
from certsync.pyinfra_compat import has_exclude

HERE = Path(__file__).resolve().parent
END_FILE = HERE / "status_end.py"
DEFAULT_DEPLOY = "deploy.py"  # of the working folder, when there is no DEPLOY
STOPPED = "not checked: pyinfra stopped before the deploy ran through on this host (see above)"


class UsageError(Exception):
    """The inventory, the deploy or an option cannot be used; the message says why."""


@dataclass
class PyinfraOptions:
    """pyinfra's options that status passes on, as pyinfra names them."""

    data: Sequence[str] = ()
    group_data: Sequence[str] = ()
    config: str = "config.py"
    chdir: str | None = None
    limit: Sequence[str] = ()
    exclude: Sequence[str] = ()
    user: str | None = None
    key: str | None = None
    port: int | None = None
    sudo: bool = False
    sudo_user: str | None = None
    use_sudo_password: bool = False
    su_user: str | None = None
    parallel: int | None = None
    verbose: int = 0

    def arguments(self) -> list[str]:
        argv: list[str] = []
        for flag, values in (
            ("--data", self.data),
            ("--group-data", self.group_data),
            ("--limit", self.limit),
            ("--exclude", self.exclude),
        ):
            for value in values:
                argv += [flag, value]
        single: tuple[tuple[str, str | int | None], ...] = (
            ("--chdir", self.chdir),
            ("--user", self.user),
            ("--key", self.key),
            ("--port", self.port),
            ("--sudo-user", self.sudo_user),
            ("--su-user", self.su_user),
            ("--parallel", self.parallel),
        )
        for flag, one in single:
            if one is not None:
                argv += [flag, str(one)]
        argv += ["--sudo"] if self.sudo else []
        argv += ["--use-sudo-password"] if self.use_sudo_password else []
        argv += ["-v"] * self.verbose
        return argv


@dataclass
class FleetRead:
    """Per checked host (in inventory order): its settings, and its state or why not."""

    settings: dict[str, HostSettings] = field(default_factory=dict)
    states: dict[str, dict[str, Any] | str] = field(default_factory=dict)


def deploy_file(deploy: str | None, options: PyinfraOptions) -> str | None:
    """The deploy whose certsync_deploy() defaults status reads: DEPLOY, else the working
    folder's deploy.py when there is one, else none (data only)."""
    if deploy is not None:
        return deploy
    folder = Path(options.chdir) if options.chdir else Path.cwd()
    return DEFAULT_DEPLOY if (folder / DEFAULT_DEPLOY).is_file() else None


def pyinfra_arguments(inventory: str, deploy: str | None, options: PyinfraOptions) -> list[str]:
    """`pyinfra` without deploy changes: --dry executes no operation, --yes skips change
    detection (nothing of the deploy's operations runs on a host); --fail-percent 100: an
    unreachable host is that host's alone."""
    own = [deploy] if deploy is not None else []
    return [
        "--dry",
        "--yes",
        "--fail-percent",
        "100",
        "--config",
        options.config,
        *options.arguments(),
        "--",
        inventory,
        *own,
        str(END_FILE),
    ]


def _records(output: Path) -> list[dict[str, Any]]:
    lines = output.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _settings(host: str, found: dict[str, Any] | None) -> HostSettings:
    if found is None:  # a host not checked: its report holds only the reason
        return HostSettings(host, {}, [])
    return HostSettings(host, found["values"], found["names"])


def collect(records: list[dict[str, Any]]) -> FleetRead:
    """The hosts pyinfra targeted, each checked, unreachable or left out (no names, or the
    deploy does not call certsync_deploy() for it); a host the deploy did not run through on
    (pyinfra stopped: its error is on stderr) says so."""
    targets = list(dict.fromkeys(r["host"] for r in records if r["event"] == "target"))
    by_event: dict[str, dict[str, dict[str, Any]]] = {}
    for record in records:
        by_event.setdefault(record["event"], {}).setdefault(record["host"], record)
    read, unreachable = by_event.get("read", {}), by_event.get("unreachable", {})
    done = {**by_event.get("skipped", {}), **by_event.get("loaded", {})}
    fleet = FleetRead()
    for host in targets:
        if host in read:
            found = read[host]
            fleet.settings[host] = _settings(host, found["settings"])
            fleet.states[host] = found["state"] if found["state"] is not None else found["error"]
        elif host in unreachable:
            fleet.settings[host] = _settings(host, None)
            fleet.states[host] = f"unreachable: {unreachable[host]['reason']}"
        elif host not in done:
            fleet.settings[host] = _settings(host, None)
            fleet.states[host] = STOPPED
    return fleet


def read_fleet(inventory: str, deploy: str | None, options: PyinfraOptions) -> FleetRead:
    """Every targeted host's settings and state, read by pyinfra's command line (run from this
    working folder; its warnings and errors go to stderr)."""
    if options.exclude and not has_exclude():
        raise UsageError("--exclude needs pyinfra 3.10 or later")
    deploy = deploy_file(deploy, options)
    with tempfile.TemporaryDirectory(prefix="certsync-status-") as folder:
        output = Path(folder) / "read.jsonl"
        output.touch(mode=0o600)
        env = {
            **os.environ,
            statusrun.OUTPUT_ENV: str(output),
            statusrun.DEPLOY_ENV: "1" if deploy is not None else "",
            statusrun.VERBOSE_ENV: "1" if options.verbose else "",
            "PYINFRA_PROGRESS": "off",
        }
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "certsync.statusrun",
                *pyinfra_arguments(inventory, deploy, options),
            ],
            env=env,
            stdout=subprocess.PIPE,  # the deploy's own prints: to stderr, not into the report
            text=True,
        )
        records = _records(output)
    sys.stderr.write(run.stdout)
    if not any(record["event"] == "target" for record in records) and run.returncode != 0:
        raise UsageError(f"pyinfra stopped (exit status {run.returncode}): see its error above")
    return collect(records)
