"""The host program's command line: `sync` (the deploy and the cron job) and `state` (read-only).

Exit status of `sync` (the last line printed says it too when it is not 0):
  0  every name is in sync, installed, repaired or restarted, or held for DANE (a key change
     waiting for its TLSA record: nothing is broken yet)
  1  some names were refused (no valid pair in Caddy, a symlinked folder...), or the run was
     interrupted (SIGTERM, SIGINT) before mox's restart: nothing changed for them; the other
     names were synced
  2  usage or settings error: nothing was done
  3  an install, repair or restart failed; mox's previous files were kept or restored
  4  an install failed and restoring mox's previous files (or serving them again) failed too:
     look at the host now; the previous files are in the newest backup

A dropped SSH session does not stop a sync half-way: SIGHUP is noted and the sync goes on, and
output to a closed stdout is dropped, so the transaction ends as it would have (installed, or
rolled back) within its bounds (the commands' and the check's timeouts). SIGTERM (a shutdown) and
SIGINT stop it at a safe point: waiting for the lock or before the switch, nothing changes;
after the switch and before the restart, the previous pair is switched back (one rename); after
the restart, the sync ends as it would have. An interrupted run is not a failed try (no
back-off) and starts no watcher. What SIGKILL or a power loss leaves, the next run repairs
(layout.py).
"""

from __future__ import annotations

import os
import sys

from . import jsontext
from .errors import reason
from .names import is_host_name
from .output import STOP, LockTimeout, Log, emit, flush_all, locked, stopping
from .settings import Config

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

EXIT_MEANINGS = {
    1: "some names were refused; nothing changed for them",
    2: "usage or settings error; nothing was done",
    3: "an install failed; mox's previous files were kept or restored",
    4: "an install failed and restoring mox's previous files failed too",
}


def run_sync(config: Config, names: list[str], force: bool, log: Log, cron: bool = False) -> list:
    """Check certsync's folders, take the lock, sync, tell: every failure is an Outcome. The
    records (runs, alerts) are updated under the lock; a run that could not take it still
    writes the metrics and alerts, recording nothing."""
    from .files import open_dir
    from .outcome import Outcome
    from .records import clean_staged, state_folder, unsafe_folders
    from .transaction import Sync

    def refuse_all(detail: str) -> list[Outcome]:
        return [Outcome(name, "refused", detail) for name in names]

    try:
        # The log folder: refuse rather than silently log nowhere.
        os.close(open_dir(os.path.dirname(config.log_file), create_mode=0o750))
    except (OSError, ValueError) as error:
        unsafe: str | None = f"log folder: {reason(error)}"
    else:
        try:
            os.close(open_dir(state_folder(config), create_mode=0o700))
            unsafe = unsafe_folders(config)
        except (OSError, ValueError) as error:
            unsafe = f"lock {config.lock_file}: {reason(error)}"
    if unsafe is not None:
        outcomes = refuse_all(unsafe)
    else:
        try:
            lock = locked(
                config.lock_file,
                on_wait=lambda: log.line(f"waiting for {config.lock_file}: another sync holds it"),
            )
            with lock:
                clean_staged(config)
                sync = Sync(config, force, log, cron)
                try:
                    outcomes = sync.run(names)
                except Exception as error:  # a bug: still report it per name, and where to look
                    detail = (
                        f"unexpected error ({type(error).__name__}: {error}); check mox's files"
                        f" in {config.mox_cert_dir} against the newest backup in"
                        f" {config.backup_dir}"
                    )
                    outcomes = [Outcome(name, "restore failed", detail) for name in names]
                report(config, outcomes, log, cron, record=True)
                return outcomes
        except LockTimeout as error:
            outcomes = refuse_all(str(error))
        except (OSError, ValueError) as error:
            outcomes = refuse_all(f"lock {config.lock_file}: {reason(error)}")
    report(config, outcomes, log, cron, record=False)
    return outcomes


def report(config: Config, outcomes: list, log: Log, cron: bool, record: bool) -> None:
    """The run's outcomes to the log, the metrics and the alerts; `record`: under the lock,
    update certsync's records too."""
    from .alert import alert
    from .records import WARNINGS

    for warning in WARNINGS:
        log.line(f"warning: {warning}")
    del WARNINGS[:]
    for outcome in outcomes:
        detail = f": {outcome.detail}" if outcome.detail else ""
        log.line(f"{outcome.name}: {outcome.status}{detail}", failed=not outcome.ok)
    record_metrics(config, outcomes, log, record)
    alert(config, outcomes, log, cron=cron, remember=record)


def record_metrics(config: Config, outcomes: list, log: Log, record: bool = True) -> None:
    """The run's outcomes for monitoring; a failure here is logged and changes nothing else."""
    import datetime as dt

    from .metrics import update_metrics

    try:
        problem = update_metrics(config, outcomes, dt.datetime.now(dt.timezone.utc), record)
    except Exception as error:  # a bug: logged, never fails the sync
        problem = f"metrics failed: unexpected error ({type(error).__name__}: {error})"
    if problem:
        log.line(f"warning: {problem}")


def _noted(signum: int, _frame: object) -> None:
    """A signal that must not stop a sync half-way: the sync finishes, then the program exits."""


def _stop(signum: int, _frame: object) -> None:
    """SIGTERM (a shutdown) or SIGINT: the sync stops at its next safe point (transaction.py):
    before the switch nothing changes, after it and before the restart the previous pair is
    switched back, after the restart the sync ends as it would have."""
    import signal

    if not STOP:
        STOP.append(f"interrupted by {signal.Signals(signum).name}")


def sync_command(args: dict[str, Any]) -> int:
    # A dropped SSH session (SIGHUP) must not stop a sync half-way; a shutdown (SIGTERM) or ^C
    # stops it where nothing is left half-done. Handlers, not SIG_IGN: the commands the sync
    # runs (the restart) get the default back. (Imported here: `signal` imports `enum`, a tenth
    # of an in-sync state read.)
    import signal

    signal.signal(signal.SIGHUP, _noted)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _stop)
    try:
        config = Config.load(args["config"])
    except (OSError, ValueError) as error:
        emit(f"certsync: settings error: {reason(error)}", failed=True)
        return 2
    if os.geteuid() != 0:
        emit(f"certsync {config.host}: needs root to read the keys (run it with sudo)", failed=True)
        return 2
    names = [name.lower() for name in args.get("name", [])] or list(config.names)
    bad = [name for name in names if not is_host_name(name)]
    if bad:
        emit(f"certsync {config.host}: {', '.join(map(repr, bad))}: not a host name", failed=True)
        return 2
    try:
        from .plan import mox_ids

        mox_ids(config)
    except ValueError as error:
        emit(f"certsync {config.host}: settings error: {error}", failed=True)
        return 2
    # Run by cron, failures reach stderr (which cron mails) only through alert(): once, and only
    # when certsync could not tell them itself.
    log = Log(config.host, config.log_file, failures_to_stderr="cron" not in args)
    os.umask(0o077)
    if "boot" in args:
        from .boot import BOOT_WAIT_SECONDS, wait_for_mox

        if not wait_for_mox(config, names):
            log.line(f"mox answers on none of its checked ports {BOOT_WAIT_SECONDS} s after boot")
    outcomes = run_sync(config, names, "force" in args, log, cron="cron" in args)
    status = max((o.exit_status for o in outcomes), default=0)
    if status:
        log.line(f"exit {status}: {EXIT_MEANINGS[status]}", failed=True, log_file=False)
    if not stopping():  # (a shutdown: the watcher is not started)
        from . import watch

        watch.start(config, args["config"])
    flush_all()
    return status


def watch_command(args: dict[str, Any]) -> int:
    import signal

    from . import watch

    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if os.geteuid() != 0:
        emit("certsync: the watcher needs root (it runs the sync)", failed=True)
        return 2
    try:
        return watch.watch(args["config"])
    except (OSError, ValueError) as error:
        emit(f"certsync: watch: {reason(error)}", failed=True)
        return 2


USAGE = """usage: certsync.pyz COMMAND [OPTIONS]
  sync  [--config FILE] [--name NAME]... [--force] [--cron] [--boot]
        sync mox's files with Caddy's (the deploy and the cron job run this); --name: only this
        name; --force: install and restart even when equal; --cron: failures to stderr (cron's
        mail) only when they could not be mailed; --boot: first wait (60 s at most) for mox to
        answer (the cron job's @reboot line)
  state --settings JSON [--file PATH]... [--force] [--all-ports]
        print what a sync would do, as JSON, changing nothing (the deploy reads this); --settings
        as config.json holds them; --file: also report that file's sha256 and mode; --force: plan
        as sync --force would; --all-ports: check what every port serves
  watch [--config FILE]
        sync seconds after Caddy writes (certsync_watch)
FILE defaults to /etc/certsync/config.json."""

# command: (options with a value, of which the ones that repeat), flags; argparse is not used:
# its import costs more than the rest of what a run that finds nothing to do imports.
COMMANDS = {
    "sync": ({"--config": False, "--name": True}, {"--force", "--cron", "--boot"}),
    "state": ({"--settings": False, "--file": True}, {"--force", "--all-ports"}),
    "watch": ({"--config": False}, set()),
}


class Usage(Exception):
    """The command line is not one of USAGE's."""


def parse(argv: list[str]) -> tuple[str, dict[str, Any]]:
    """(command, {option or flag without its dashes: value, list of values, or True})."""
    if not argv or argv[0] not in COMMANDS:
        raise Usage
    options, flags = COMMANDS[argv[0]]
    args: dict[str, Any] = {"config": "/etc/certsync/config.json"}
    words = iter(argv[1:])
    for word in words:
        key = word[2:].replace("-", "_")
        if word in flags:
            args[key] = True
        elif word in options:
            value = next(words, None)
            if value is None:
                raise Usage
            args[key] = [*args.get(key, []), value] if options[word] else value
        else:
            raise Usage
    return argv[0], args


def state_command(args: dict[str, Any]) -> int:
    from .state import print_state, read_state

    if "settings" not in args:
        raise Usage
    try:
        config = Config.from_json(jsontext.loads(args["settings"]), "--settings")
    except ValueError as error:
        emit(f"certsync: settings error: {reason(error)}", failed=True)
        return 2
    files = args.get("file", [])
    print_state(read_state(config, files, "force" in args, "all_ports" in args))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    if "--help" in words or "-h" in words:
        emit(USAGE)
        return 0
    try:
        command, args = parse(words)
        run = {"sync": sync_command, "state": state_command, "watch": watch_command}[command]
        return run(args)
    except Usage:
        emit(USAGE, failed=True)
        return 2
