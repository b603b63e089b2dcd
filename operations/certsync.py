"""The certsync operation: mox's certificate files equal to Caddy's, and the cron job installed."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
from collections.abc import Callable
from io import StringIO

import jinja2
from pyinfra import host, logger
from pyinfra.api import (
    FileUploadCommand,
    FunctionCommand,
    Host,
    QuoteString,
    State,
    StringCommand,
    operation,
)

from facts.certsync import Candidate, CertsyncState, HostState, NameState
from files.certsync import CertInfo, describe, downgrade_problem, validity_problem
from operations.certinfo import cert_info
from operations.settings import Settings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROGRAM_SOURCE = os.path.join(ROOT, "files", "certsync.py")
CRON_TEMPLATE = os.path.join(ROOT, "templates", "certsync.cron.j2")


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a sync would do for one name: in sync, repair, install or refuse."""

    name: str
    action: str
    detail: str

    def __str__(self) -> str:
        return f"{self.name}: {self.action}: {self.detail}"


def plan_name(state: NameState, settings: Settings, now: dt.datetime) -> Plan:
    """Decide for one name as the host program will, from the public state the fact read."""
    min_validity = dt.timedelta(hours=settings.min_validity_hours)
    best: tuple[Candidate, CertInfo] | None = None
    problems = []
    for candidate in state.candidates:
        info = cert_info(candidate.cert.pem)
        if info is None:
            problems.append(f"{candidate.issuer}: certificate file is missing or does not parse")
        elif not candidate.key_matches:
            problems.append(f"{candidate.issuer}: key is missing or does not match (mid-renewal?)")
        elif problem := validity_problem(info, state.name, now, min_validity):
            problems.append(f"{candidate.issuer}: {problem}")
        elif best is None or info.not_before > best[1].not_before:
            best = (candidate, info)
    if best is None:
        if not problems:
            problems.append(f"Caddy has no certificate for it under {settings.caddy_data_dir}")
        return Plan(state.name, "refuse", "; ".join(problems))
    candidate, info = best
    current = cert_info(state.mox_cert.pem)
    new = f"{describe(info)} from {candidate.issuer}"
    same = candidate.cert.sha256 == state.mox_cert.sha256 and candidate.key_same_as_mox
    if same and not settings.force:
        user, group = settings.mox_user, settings.mox_group
        if state.mox_cert_meta.is_("file", user, group, 0o644) and state.mox_key_meta.is_(
            "file", user, group, 0o600
        ):
            return Plan(state.name, "in sync", new)
        return Plan(state.name, "repair", f"owner or mode of mox's files ({new})")
    if problem := downgrade_problem(info, current):
        return Plan(state.name, "refuse", problem)
    old = "nothing" if current is None else describe(current)
    checked = "; chain checked on the host" if settings.require_trusted_chain else ""
    return Plan(state.name, "install", f"{new}, replacing {old}{checked}")


def host_files(settings: Settings) -> dict[str, tuple[bytes, int]]:
    """The files the host gets from the deploy: path -> (content, mode)."""
    with open(PROGRAM_SOURCE, "rb") as file:
        program = file.read()
    config = json.dumps(settings.host_config(), indent=2, sort_keys=True) + "\n"
    with open(CRON_TEMPLATE, encoding="utf-8") as file:
        cron = jinja2.Template(file.read(), keep_trailing_newline=True).render(
            alert_email=settings.alert_email,
            schedule=settings.cron_schedule,
            command=str(sync_command(settings, [], force=False)),
        )
    return {
        settings.program: (program, 0o755),
        settings.config_file: (config.encode(), 0o644),
        settings.cron_file: (cron.encode(), 0o644),
    }


def sync_command(settings: Settings, names: list[str], force: bool) -> StringCommand:
    args = ["sync", "--config", settings.config_file]
    for name in names:
        args += ["--name", name]
    if force:
        args.append("--force")
    return StringCommand(*(QuoteString(a) for a in [settings.python, settings.program, *args]))


def _fail_host(state: State, host: Host, message: str) -> bool:
    host.log_styled(message, fg="red", log_func=logger.error)
    return False  # fails this host, with the message, without running anything on it


@operation()
def synced(settings: Settings, hold_back: Callable[[], str | None] | None = None):
    """
    Make mox's certificate files on this host equal to Caddy's newest valid pair, per name.

    + settings: the host's certsync settings (``operations.settings.settings_of_hosts``)
    + hold_back: asked when the operation runs; a reason fails the host without touching it

    Installs the host program, its settings and the cron job when they differ, then runs the
    host program for the names that differ (it validates, backs up, installs, restarts mox once
    and verifies). Reads only, in one command, when everything is already in sync.
    """
    if hold_back is not None and host.state.is_executing and (reason := hold_back()):
        yield FunctionCommand(_fail_host, (f"held back: {reason}",), {})
        return
    files = host_files(settings)
    state: HostState = host.get_fact(
        CertsyncState,
        names=list(settings.names),
        caddy_data_dir=settings.caddy_data_dir,
        mox_cert_dir=settings.mox_cert_dir,
        files=list(files),
    )
    if state.missing_tools:
        needs = " and ".join(state.missing_tools)
        yield FunctionCommand(_fail_host, (f"certsync needs {needs} on the host",), {})
        return

    now = dt.datetime.now(dt.timezone.utc)
    plans = [plan_name(state.names[name], settings, now) for name in settings.names]
    # Shown once: in the preview, or as the run goes when the preview was skipped (--yes).
    if not host.state.is_executing or not host.state.check_for_changes:
        for plan in plans:
            host.log(str(plan))
    for path, (content, mode) in files.items():
        installed = state.files[path]
        if installed.sha256 == hashlib.sha256(content).hexdigest() and installed.meta.is_(
            "file", "root", "root", mode
        ):
            continue
        yield StringCommand("install", "-d", "-m", "0755", QuoteString(os.path.dirname(path)))
        yield FileUploadCommand(StringIO(content.decode()), path)
        yield StringCommand("chown", "root:root", QuoteString(path))
        yield StringCommand("chmod", f"{mode:o}", QuoteString(path))

    pending = [plan.name for plan in plans if plan.action != "in sync"]
    dir_right = state.mox_dir.is_("dir", settings.mox_user, settings.mox_group, 0o700)
    if settings.force or not dir_right:
        pending = list(settings.names)
    if not pending:
        host.noop(f"mox's certificates equal Caddy's for {', '.join(settings.names)}")
        return
    yield sync_command(settings, pending, settings.force)
