"""The certsync operation: mox's certificate files equal to Caddy's, and the cron job installed."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from collections.abc import Iterator, Mapping
from importlib import resources
from typing import Any
from weakref import WeakKeyDictionary

import jinja2
from pyinfra import host, logger
from pyinfra.api import (
    FunctionCommand,
    Host,
    QuoteString,
    State,
    StringCommand,
    operation,
)
from pyinfra.operations.util.files import generate_color_diff

from certsync import program
from certsync.host.actions import IN_SYNC
from certsync.host.errors import printable
from certsync.hostdata import HostSettings, SettingsError, settings_of_host
from certsync.preview import host_lines
from certsync.pyinfra_compat import connector_arguments
from certsync.rollout import fail_no_wait_hosts, held_back, settings_at_call
from certsync.stateread import read_state, run_quiet

# The state read at change detection, or at the deploy call with --yes (read_ahead), or why it
# failed: reused when the operation runs (the host program decides again under its lock), where
# no operation comes before certsync's on the host: an in-sync host costs one command, with or
# without --yes. Per run (State), by host and the settings it was read with.
_state_of: WeakKeyDictionary[State, dict[tuple[str, str], dict[str, Any] | str]] = (
    WeakKeyDictionary()
)


@functools.cache
def _template(template: str) -> jinja2.Template:
    """Compiled once per run: compiling costs more than all of a host's other file work."""
    text = resources.files("certsync").joinpath(f"templates/{template}").read_text()
    return jinja2.Template(text, keep_trailing_newline=True)


def _render(template: str, **values: Any) -> str:
    return _rendered(template, json.dumps(values, sort_keys=True))


@functools.lru_cache(maxsize=256)
def _rendered(template: str, values: str) -> str:
    """Rendered once per run for the same values (JSON): most hosts share their cron job's."""
    return _template(template).render(**json.loads(values))


@functools.lru_cache(maxsize=256)
def _sha256(content: bytes) -> str:
    """The same program's bytes on every host: hashed once per run."""
    return hashlib.sha256(content).hexdigest()


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

    def make() -> dict[str, tuple[bytes, int]]:
        contents = (
            (program.zipapp(), 0o755),
            (settings.config_json().encode(), 0o644),
            (cron_file(settings).encode(), 0o644),
            (_render("certsync.logrotate.j2", log_file=settings.log_file).encode(), 0o644),
        )
        return dict(zip(settings.installed_files, contents, strict=True))

    return dict(settings.made("host_files", make))


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


def _run_logged(
    state: State, host: Host, command: StringCommand, arguments: dict[str, Any], what: str
) -> bool:
    """Run a command of the operation (`what`: the sync, the file writes): its output, a line at
    a time and made printable, shown when it fails (or with pyinfra's -vvv), never raw; its
    status fails the host."""
    ok, lines = run_quiet(host, command, arguments, what)
    if not ok or state.print_output:
        for line in lines:
            (logger.info if ok else logger.error)(f"{host.print_prefix}{line}")
    return ok


def _read_state(settings: HostSettings, paths: list[str]) -> dict[str, Any] | str:
    of_run = _state_of.setdefault(host.state, {})
    key = (host.name, repr((sorted(settings.values.items()), settings.configured_names, paths)))
    if host.state.is_executing and key in of_run:
        return of_run.pop(key)
    state = read_state(host, settings, paths, force=settings.force)
    # kept for the operation's run only when no operation comes before it on the host: one
    # could change what it read (the operation then reads again when it runs)
    if not host.state.is_executing and not host.state.get_meta_for_host(host).ops:
        of_run[key] = state
    return state


def read_ahead(settings: HostSettings) -> None:
    """Without change detection (pyinfra's --yes), read the host's state now, at its deploy
    call, for its `synced` operation to use as change detection's read is used: pyinfra runs
    each host's deploy code in a greenlet of its own (up to --parallel at once), so the hosts'
    reads overlap, where the operations would read the canary hosts' first, alone, then the
    others'. Only when no operation comes before on this host (one could change the host)."""
    state = host.state
    if not state.should_check_for_changes() and not state.get_meta_for_host(host).ops:
        _read_state(settings, settings.installed_files)


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
    return meta.get("sha256") == _sha256(content) and (
        meta.get("user"),
        meta.get("group"),
        meta.get("mode"),
    ) == ("root", "root", format(mode, "04o"))


def files_to_install(
    state: dict[str, Any], files: dict[str, tuple[bytes, int]]
) -> dict[str, tuple[bytes, int]]:
    """The host files (host_files) that the host does not hold as root's, with their mode."""
    return {path: file for path, file in files.items() if not _is_installed(state, path, *file)}


# Writes the files given on stdin, one line each: path, mode (octal), content (base64); each
# through a new file beside it (O_EXCL, made by root in root's folder), fsync'd, renamed over the
# path. No file goes through a name another user could create first, as pyinfra's uploads under
# `_sudo` do (SFTP as the SSH user to /tmp/pyinfra-<sha1 of the path>, then `cp`).
# The temporary name ends with `~`: cron and logrotate skip such files in their folders.
# Then each folder's mtime is set again in a later second: cron rereads /etc/cron.d when its
# mtime, in whole seconds, differs from what it saw at its last look (once a minute), so a file
# renamed in during the very second of a look would never be read.
# One line (exec of a string literal): sudo and the logs quote a command line by line.
_WRITE_FILES_LINES = (
    "import base64,os,sys,time",
    "folders=set()",
    "for line in sys.stdin:",
    "  path,mode,data=line.split()",
    "  folder,name=os.path.split(path)",
    "  os.makedirs(folder,0o755,exist_ok=True)",
    "  temp=os.path.join(folder,'.'+name+'.certsync-'+str(os.getpid())+'~')",
    "  os.path.lexists(temp) and os.unlink(temp)",
    "  fd=os.open(temp,os.O_WRONLY|os.O_CREAT|os.O_EXCL|os.O_NOFOLLOW,0o600)",
    "  view=memoryview(base64.b64decode(data))",
    "  while view:view=view[os.write(fd,view):]",
    "  os.fchown(fd,0,0);os.fchmod(fd,int(mode,8));os.fsync(fd);os.close(fd)",
    "  os.rename(temp,path);folders.add(folder)",
    "time.sleep(1.05-time.time()%1)",
    "for folder in folders:os.utime(folder)",
)
WRITE_FILES = f"exec({json.dumps(chr(10).join(_WRITE_FILES_LINES))})"

MAX_DIFF_ERROR_LINES = 4  # of a failed read of the file --diff compares with


def _show_diff(state: dict[str, Any], path: str, content: bytes, arguments: dict[str, Any]) -> None:
    """What --diff shows for one file, as pyinfra's files.put does: the zipapp by its sha256, a
    text file's diff against what the host holds (root's regular file: host_problem)."""
    if path.endswith(".pyz"):
        digest = hashlib.sha256(content).hexdigest()[:16]
        host.log(f"Will install {path}: the certsync host program, sha256 {digest}")
        return
    exists = state["files"].get(path, {}).get("kind") == "file"
    current: list[str] = []
    if exists:  # read as the state is: a failure is a line, never raw output or a failed fact
        ok, current = run_quiet(host, StringCommand("cat", QuoteString(path)), arguments, path)
        if not ok:
            shown = "; ".join(current[-MAX_DIFF_ERROR_LINES:]) or "no output"
            host.log(f"cannot read {path} to show its diff: {shown}", logger.warning)
            return
    host.log(f"Will {'modify' if exists else 'create'} {path}", logger.info)
    old = [line + "\n" for line in current]
    for line in generate_color_diff(old, content.decode().splitlines(keepends=True)):
        logger.info("  %s", line)
    logger.info("")


def _install(
    settings: HostSettings,
    state: dict[str, Any],
    files: dict[str, tuple[bytes, int]],
    arguments: dict[str, Any],
):
    """Write the files that differ, root's with their modes, in one command that carries their
    contents on its stdin (WRITE_FILES); with --diff, each text file's diff first."""
    if host.state.config.DIFF:
        for path, (content, _) in files.items():
            _show_diff(state, path, content, arguments)
    lines = [
        f"{path} {mode:o} {base64.b64encode(content).decode()}"
        for path, (content, mode) in files.items()
    ]
    command = StringCommand(
        QuoteString(settings.python), "-I", "-S", "-c", QuoteString(WRITE_FILES)
    )
    yield FunctionCommand(
        _run_logged, (command, {**arguments, "_stdin": lines}, "writing certsync's files"), {}
    )


STAGES = (None, "canary", "others")


def operation_settings(stage: Any, arguments: Mapping[str, Any]) -> HostSettings | None:
    """The current host's settings for the `synced` operation called with `stage` and the
    settings `arguments` (its data first, the arguments as defaults), or None when the stage is
    not this host's; raise SettingsError for an unknown stage or setting, or a bad value."""
    if stage not in STAGES:
        raise SettingsError(
            f"{host.name}: stage={stage!r}: certsync's stages are"
            f" {', '.join(repr(s) for s in STAGES)}"
        )
    at_call = settings_at_call(host.state, host) if stage is not None else None
    settings = at_call or settings_of_host(host.state, host, arguments)
    if stage is not None and (settings.canary_group in host.groups) != (stage == "canary"):
        return None
    return settings


@operation()
def synced(stage: str | None = None, **settings: Any):
    """
    Make mox's certificate files on this host equal to Caddy's newest valid pair, per name.

    + stage: ``None`` (the default): sync this host now; ``"canary"``: only if the host is in
      its canary group (``certsync_canary_group``), ``"others"``: only if it is not, once every
      canary host ended the ``"canary"`` operation of the same ``certsync_deploy()`` call, and
      not if one of them failed (``certsync_deploy()`` calls both, in this order)
    + settings: certsync's settings by name, without the ``certsync_`` prefix (the README's
      table), e.g. ``names=["mail.example.com"]``: defaults for what the host's data does not
      set, as ``certsync_deploy()``'s arguments (the same call reaches every host, while data is
      per host; ``--data certsync_x=...`` overrides data). An unknown name is refused.

    On the command line (pyinfra reads each ``key=value`` as JSON when it parses, else as text)::

        pyinfra inventory.py certsync.operations.synced names='["mail.example.com"]'

    Installs the host program, its settings and the cron job when they differ, then runs the
    host program for the names not in sync (for every name with ``force``, or when only those
    files differ; it validates, backs up, installs, restarts mox once and verifies). Reads only,
    in one command, when everything is already in sync. A host without names is left alone.
    """
    try:
        own = operation_settings(stage, settings)
    except SettingsError as error:
        if not host.state.is_executing:  # refused before anything runs on any host
            raise
        yield FunctionCommand(_fail_host, (str(error),), {})
        return
    if own is None:  # the other stage's host (the operation stays in the order, rollout.py)
        return
    if not own.names:
        host.noop("certsync: no certificate names (certsync_names): left alone")
        return
    fail_no_wait_hosts(host.state)
    if stage == "others" and host.state.is_executing:
        reason = held_back(host.state, host, own.canary_group)
        if reason:
            yield FunctionCommand(_fail_host, (f"held back: {reason}",), {})
            return
    yield from _sync(own)


def _sync(settings: HostSettings) -> Iterator[Any]:
    """The `synced` operation's commands for the host's checked settings."""
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
        try:
            lines = host_lines(state, verbose=host.state.print_noop_info)
        except Exception as error:  # a state the schema let through yet no view foresaw
            lines = [
                printable(f"error: its state cannot be shown ({type(error).__name__}: {error})")
            ]
        for line in lines:
            host.log(line)
    # All files' commands first: pyinfra's preview stops at an operation's first command, and
    # --diff shows each file's diff while its commands are made.
    differ = files_to_install(state, files)
    if differ:
        yield from list(_install(settings, state, differ, connector_arguments(host)))
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
    command = sync_command(settings, pending, settings.force)
    yield FunctionCommand(_run_logged, (command, connector_arguments(host), "the sync"), {})
