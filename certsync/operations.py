"""The certsync operation: mox's certificate files equal to Caddy's, and the cron job installed."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from importlib import resources
from io import BytesIO, StringIO
from typing import Any

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
from pyinfra.operations import files as pyinfra_files

from certsync import program
from certsync.host.plan import IN_SYNC
from certsync.hostdata import HostSettings
from certsync.preview import host_lines
from certsync.stateread import read_state

# The state read at change detection (or why it failed), reused when the operation runs (the
# host program decides again under its lock): an in-sync host costs one command, with or without
# --yes.
_state_of: dict[tuple[str, int], dict[str, Any] | str] = {}


def _render(template: str, **values: Any) -> str:
    text = resources.files("certsync").joinpath(f"templates/{template}").read_text()
    return jinja2.Template(text, keep_trailing_newline=True).render(**values)


def cron_file(settings: HostSettings) -> str:
    return _render(
        "certsync.cron.j2",
        alert_email=settings.alert_email,
        schedule=settings.cron_schedule,
        command=str(sync_command(settings, [], force=False, cron=True)),
    )


def host_files(settings: HostSettings) -> dict[str, tuple[bytes, int]]:
    """The files the host gets from the deploy (settings.installed_files): path -> (content,
    mode)."""
    contents = (
        (program.zipapp(), 0o755),
        (settings.config_json().encode(), 0o644),
        (cron_file(settings).encode(), 0o644),
        (_render("certsync.logrotate.j2", log_file=settings.log_file).encode(), 0o644),
    )
    return dict(zip(settings.installed_files, contents, strict=True))


def sync_command(
    settings: HostSettings, names: list[str], force: bool, cron: bool = False
) -> StringCommand:
    args = ["sync", "--config", settings.config_file]
    for name in names:
        args += ["--name", name]
    if force:
        args.append("--force")
    if cron:
        args.append("--cron")
    return StringCommand(
        QuoteString(settings.python),
        "-I",
        "-S",
        *(QuoteString(a) for a in [settings.program, *args]),
    )


def _fail_host(state: State, host: Host, message: str) -> bool:
    host.log_styled(message, fg="red", log_func=logger.error)
    return False  # fails this host, with the message, without running anything on it


def _read_state(settings: HostSettings, paths: list[str]) -> dict[str, Any] | str:
    key = (host.name, id(settings))
    if host.state.is_executing and key in _state_of:
        return _state_of.pop(key)
    state = read_state(host, settings, paths, force=settings.force)
    if not host.state.is_executing:
        _state_of[key] = state
    return state


def host_problem(state: dict[str, Any] | str) -> str | None:
    """Why the host cannot be synced at all: its state could not be read, or says so, or one of
    certsync's own files is not root's regular file, or another user could replace it. Writing
    through such a file (a link the mox user planted in a folder it can write) would write
    elsewhere, and --diff would show the contents of whatever it points to; the cron job runs the
    program, with the config's commands, as root."""
    if isinstance(state, str):
        return state
    if state["error"]:  # (not root: nothing else the state says can be trusted)
        return str(state["error"])
    problems = []
    if not state["openssl"]:
        problems.append("certsync needs openssl on the host")
    for path, meta in state["files"].items():
        if meta["kind"] != "missing" and (meta["kind"], meta.get("user")) != ("file", "root"):
            owner = f" owned by {meta['user']}" if meta.get("user") else ""
            what = meta.get("error") or f"a {meta['kind']}{owner}, not root's regular file"
            problems.append(f"{path}: {what}; refusing to write there (remove it, or set another)")
        if meta.get("writable_by"):
            problems.append(
                f"{path}: {'; '.join(meta['writable_by'])}: whoever can replace it decides what"
                f" root runs; refusing (make it root's, or set another path)"
            )
    return "; ".join(problems) or None


def _is_installed(state: dict[str, Any], path: str, content: bytes, mode: int) -> bool:
    meta = state["files"].get(path, {})
    return meta.get("sha256") == hashlib.sha256(content).hexdigest() and (
        meta.get("user"),
        meta.get("group"),
        meta.get("mode"),
    ) == ("root", "root", format(mode, "04o"))


def files_to_install(
    state: dict[str, Any], files: dict[str, tuple[bytes, int]]
) -> dict[str, tuple[bytes, int]]:
    """The host files (host_files) that the host does not hold as root's, with their mode."""
    return {path: file for path, file in files.items() if not _is_installed(state, path, *file)}


def _install(files: dict[str, tuple[bytes, int]]):
    """Upload the files that differ, root's with their modes: in a few commands (the state read
    already says what each is), or with --diff by pyinfra's files.put, which shows each text
    file's diff (the zipapp is named with its sha256)."""
    if host.state.config.DIFF:
        for path, (content, mode) in files.items():
            if path.endswith(".pyz"):
                digest = hashlib.sha256(content).hexdigest()[:16]
                host.log(f"Will install {path}: the certsync host program, sha256 {digest}")
                yield from _upload({path: (content, mode)})
            else:
                yield from pyinfra_files.put._inner(
                    src=StringIO(content.decode()),
                    dest=path,
                    user="root",
                    group="root",
                    mode=f"{mode:o}",
                )
        return
    yield from _upload(files)


def _upload(files: dict[str, tuple[bytes, int]]):
    folders = sorted({os.path.dirname(path) for path in files})
    yield StringCommand("install", "-d", "-m", "0755", *map(QuoteString, folders))
    for path, (content, _) in files.items():
        yield FileUploadCommand(BytesIO(content), path)
    owners: list[Any] = ["chown", "root:root", *map(QuoteString, files)]
    for mode in sorted({mode for _, mode in files.values()}):
        paths = [QuoteString(path) for path, (_, m) in files.items() if m == mode]
        owners += ["&&", "chmod", f"{mode:o}", *paths]
    yield StringCommand(*owners)


@operation()
def synced(
    settings: HostSettings,
    hold_back: Callable[[], str | None] | None = None,
    skip: bool = False,
):
    """
    Make mox's certificate files on this host equal to Caddy's newest valid pair, per name.

    + settings: the host's certsync settings (``certsync.hostdata.settings_of_hosts``)
    + hold_back: asked when the operation runs; a reason fails the host without touching it
    + skip: nothing to do on this host (called only to keep the operation order, rollout.py)

    Installs the host program, its settings and the cron job when they differ, then runs the
    host program for the names that differ (it validates, backs up, installs, restarts mox once
    and verifies). Reads only, in one command, when everything is already in sync.
    """
    if skip:
        return
    if hold_back is not None and host.state.is_executing and (reason := hold_back()):
        yield FunctionCommand(_fail_host, (f"held back: {reason}",), {})
        return
    files = host_files(settings)
    state = _read_state(settings, list(files))
    problem = host_problem(state)
    if problem is not None:
        if not host.state.is_executing:  # the preview says why this host will fail
            host.log_styled(problem, fg="red", log_func=logger.error)
        yield FunctionCommand(_fail_host, (problem,), {})
        return
    assert isinstance(state, dict)
    # Shown once: in the preview, or as the run goes when the preview was skipped (--yes).
    if not host.state.is_executing or not host.state.check_for_changes:
        for line in host_lines(state, verbose=host.state.print_noop_info):
            host.log(line)
    # All files' commands first: pyinfra's preview stops at an operation's first command, and
    # --diff shows each file's diff while its commands are made.
    differ = files_to_install(state, files)
    yield from list(_install(differ)) if differ else []
    pending = [name for name, plan in state["names"].items() if plan["action"] != IN_SYNC]
    if settings.force:
        pending = list(settings.names)
    if not pending and (differ or (settings.watch and not state.get("watcher"))):
        # a sync unpacks a new host program (for the next state reads' bytecode), and starts the
        # watcher or replaces one that runs older settings
        pending = list(settings.names)
    if not pending:
        host.noop(f"mox's certificates equal Caddy's for {', '.join(settings.names)}")
        return
    yield sync_command(settings, pending, settings.force)
