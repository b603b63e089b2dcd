"""`state`: what a sync would do on this host, as JSON, changing nothing. The deploy's preview
and the status report read it: the plan per name with the public facts it rests on (what Caddy
holds, what mox has and serves), the files certsync installed, and warnings. No key material."""

from __future__ import annotations

import os
import sys
import time

from . import records, statecache, watch
from .errors import reason
from .files import (
    FILE,
    creatable_by_others,
    nearest_existing,
    open_dir,
    read_file,
    trust_warning,
    writable_by_others,
)
from .outcome import HELD, OK_STATUSES
from .output import emit
from .owners import DIR_MODE, file_meta_json, foreign_folder, mox_ids
from .settings import Config

TYPE_CHECKING = False  # typing's costs an import on every run
if TYPE_CHECKING:
    import datetime as dt  # imported for the full read only (a twentieth of a cached one)
    from typing import Any

STATE_VERSION = 1
LOG_TAIL_BYTES = 1 << 16


def on_path(command: str) -> bool:
    """Whether `command` is an executable on PATH (shutil.which, without importing shutil;
    os.get_exec_path imports warnings)."""
    folders = os.environ.get("PATH", os.defpath).split(os.pathsep)
    return any(os.access(os.path.join(d, command), os.X_OK) for d in folders)


def file_meta(path: str) -> dict[str, Any]:
    """sha256 (of a regular file), kind, owner and mode of one of certsync's own files, and who
    else than root could replace it (root runs it, or what it says, from the cron job)."""
    found = writable_by_others(nearest_existing(path))
    # the deploy writes it through a new name beside it, making the folders above it
    found += [f for f in creatable_by_others(os.path.dirname(path)) if f not in found]
    return {**_file_meta(path), "writable_by": found}


def _file_meta(path: str) -> dict[str, Any]:
    folder, name = os.path.split(path)
    try:
        dir_fd = open_dir(folder)
    except FileNotFoundError:
        return {"kind": "missing", "sha256": None}
    except (OSError, ValueError) as error:
        return {"kind": "other", "sha256": None, "error": reason(error)}
    try:
        state = read_file(dir_fd, name)
    finally:
        os.close(dir_fd)
    digest = (
        statecache.sha256_hex(state.data) if state.kind == FILE and state.data is not None else None
    )
    return {**file_meta_json(state), "sha256": digest}


def folder_refusal(config: Config) -> str | None:
    """A folder certsync writes that it would refuse (a symlink on the way, certsync's state
    folder that another user can write): the reason sync gives, in the order sync checks them
    (cli.run_sync, then Sync.run)."""
    folders = (
        (os.path.dirname(config.log_file), "log folder: "),
        (os.path.dirname(config.lock_file), f"lock {config.lock_file}: "),
        (config.backup_dir, ""),
        (config.mox_cert_dir, ""),
    )
    created: set[str] = set()  # by the sync, in this order: each one's last component only
    for folder, what in folders:
        try:
            os.close(open_dir(folder))
        except FileNotFoundError as error:
            missing = error.filename
            if missing == folder or (missing in created and os.path.dirname(folder) == missing):
                created.add(folder)
                continue
            return what + reason(error)
        except (OSError, ValueError) as error:
            return what + reason(error)
        if folder == records.state_folder(config):
            unsafe = records.unsafe_folders(config)
            if unsafe is not None:
                return unsafe
    return None


def last_runs(log_file: str, names: list[str], host: str) -> dict[str, dict[str, Any]]:
    """The newest log line of each name: {"time", "status", "detail", "ok"}."""
    found: dict[str, dict[str, Any]] = {}
    try:
        with open(log_file, "rb") as file:
            file.seek(0, os.SEEK_END)
            file.seek(max(file.tell() - LOG_TAIL_BYTES, 0))
            lines = file.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return found
    prefix = f" certsync {host}: "
    for line in reversed(lines):
        stamp, sep, rest = line.partition(prefix)
        if not sep:
            continue
        name, _, rest = rest.partition(": ")
        if name in names and name not in found:
            status, _, detail = rest.partition(": ")
            found[name] = {
                "time": stamp,
                "status": status,
                "detail": detail,
                "ok": status in OK_STATUSES or status == HELD,
            }
    return found


def read_state(
    config: Config,
    files: list[str],
    force: bool,
    all_ports: bool,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """The state; `now`: the time the plans are made for (tests)."""
    state: dict[str, Any] = {
        "certsync_state": STATE_VERSION,
        "host": config.host,
        "error": None,
        "python": ".".join(map(str, sys.version_info[:3])),
        "openssl": on_path("openssl"),
        "files": {path: file_meta(path) for path in files},
        "warnings": [],
        "mox_dir": None,
        "names": {},
        "last_runs": {},
    }
    if os.geteuid() != 0:
        state["error"] = "needs root to read the keys (set _sudo)"
        return state
    try:
        uid, gid = mox_ids(config)
    except ValueError as error:
        state["error"] = str(error)
        return state
    found = writable_by_others(config.mox_binary)
    if found:
        state["warnings"].append(trust_warning(config.mox_binary, found))
    state["last_runs"] = last_runs(config.log_file, list(config.names), config.host)
    state["watcher"] = watch.running(config) is not None
    seconds = time.time() if now is None else now.timestamp()
    refusal = folder_refusal(config)
    dir_fd = None
    dir_right = True
    if refusal is None:
        try:
            dir_fd = open_dir(config.mox_cert_dir)
            info = os.fstat(dir_fd)
            dir_right = (info.st_uid, info.st_gid, info.st_mode & 0o7777) == (uid, gid, DIR_MODE)
            state["mox_dir"] = {"kind": "dir", "right": dir_right}
            refusal = foreign_folder(config, dir_fd, uid)
        except FileNotFoundError:
            state["mox_dir"] = {"kind": "missing", "right": False}
        except (OSError, ValueError) as error:  # swapped for a link since folder_refusal
            refusal = reason(error)
    try:
        cached = None
        if refusal is None and dir_fd is not None and not force and not all_ports:
            cached = statecache.answer(config, dir_fd, state["mox_dir"], [uid, gid], seconds)
        if cached is not None:
            records.load(config, statecache.INSTALLED)  # its warnings, as the full read's
            state["names"] = cached
        else:
            if now is None:
                import datetime as dt

                now = dt.datetime.fromtimestamp(seconds, dt.timezone.utc)
            before = statecache.fingerprint(config, dir_fd) if dir_fd is not None else None
            greeters: dict[str, list[Any]] = {}
            state["names"] = _full_read(
                config, dir_fd, refusal, now, force, all_ports, dir_right, greeters
            )
            if not force and not all_ports:
                _remember(config, dir_fd, state, now, before, [uid, gid], greeters)
    finally:
        if dir_fd is not None:
            os.close(dir_fd)
    state["warnings"] += records.WARNINGS
    return state


def _full_read(
    config: Config,
    dir_fd: int | None,
    refusal: str | None,
    now: dt.datetime,
    force: bool,
    all_ports: bool,
    dir_right: bool,
    greeters: dict[str, list[Any]] | None = None,
) -> dict[str, Any]:
    """Each name's plan, read in full (Caddy's and mox's files parsed, what mox serves); in
    `greeters`, each name's first check target on a plaintext port ([address, port, protocol])."""
    from .dane import DaneRun
    from .plan import REFUSE, NamePlan, plan_or_refusal, probe_all

    names: dict[str, Any] = {}
    dane = DaneRun(config, now)
    for name in config.names:
        if refusal is not None:
            plan = NamePlan(name, REFUSE, refusal, None, None, [], None)
        else:
            plan = plan_or_refusal(config, name, dir_fd, now, force, dir_right, dane=dane)
        entry = plan.to_json()
        plain = [t for t in plan.targets or [] if t.protocol in statecache.GREETINGS]
        if greeters is not None and plain:
            greeters[name] = [plain[0].address, plain[0].port, plain[0].protocol]
        if all_ports and plan.targets:
            entry["served_all"] = probe_all(plan.targets, name)
        if all_ports:  # the status report's `dane` check: the keys mox serves
            keys = sorted(
                {e["spki_sha256"] for e in entry.get("served_all", []) if e["error"] is None}
            )
            entry["dane_served"] = dane.served_check(name, keys)
        names[name] = entry
    return names


def _remember(
    config: Config,
    dir_fd: int | None,
    state: dict[str, Any],
    now: dt.datetime,
    before: list[Any] | None,
    ids: list[int],
    greeters: dict[str, list[Any]],
) -> None:
    """Record the full read of a host where every name is in sync and has a check target on a
    plaintext port (whose greeting shows mox not hung), for the next reads (statecache.py);
    forget the record otherwise."""
    names = state["names"]
    in_sync = bool(names) and all(e["action"] == "in sync" for e in names.values())
    if (
        not in_sync
        or dir_fd is None
        or before is None
        or config.require_trusted_chain
        or set(greeters) != set(names)
    ):
        statecache.forget(config)
        return
    targets = sorted(
        {
            (address.strip("[]"), int(port))
            for e in names.values()
            for t in e["targets"]
            for address, _, port in [t.rpartition(":")]
        }
    )
    # mox's sockets after the read: one restarted during it loaded the same files (checked next)
    sockets = statecache.listening([list(t) for t in targets])
    served = {(s[1], s[2]) for s in sockets}
    if any(  # mox's listeners are not this host's (nothing tells a restart), or connections wait
        not served & {(statecache.ANY_ADDRESS, port), (statecache.packed(address), port)}
        for address, port in targets
    ) or any(s[4] for s in sockets):
        statecache.forget(config)
        return
    after = statecache.fingerprint(config, dir_fd)
    if after != before:  # changed during the read
        statecache.forget(config)
        return
    seconds = now.timestamp()
    statecache.save(
        config,
        {
            "written": seconds,
            "until": statecache.until(names, seconds, config.min_validity_hours),
            "mox_dir": state["mox_dir"],
            "mox_ids": ids,
            "greeters": sorted({tuple(g) for g in greeters.values()}),
            "targets": [list(t) for t in targets],
            "sockets": sockets,
            "fingerprint": after,
            "names": names,
        },
    )


def print_state(state: dict[str, Any]) -> None:
    from . import jsontext

    emit(jsontext.dumps(state, sort_keys=True))
