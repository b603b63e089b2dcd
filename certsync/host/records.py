"""certsync's own small records (JSON) in its root-only folder beside the lock file
(/var/lib/certsync): read whole, replaced whole by rename, under the lock.

Each record maps a certificate name to a value of a known shape (SHAPES); a record of any other
shape (a number too large, an object where a number belongs, not JSON) reads as empty, with a
warning (WARNINGS, which the sync logs and the state read reports), never a traceback."""

from __future__ import annotations

import os

from . import jsontext
from .files import (
    FILE,
    FileState,
    creatable_by_others,
    open_dir,
    put_entries,
    read_file,
    writable_by_others,
)
from .settings import Config

TYPE_CHECKING = False  # typing's costs an import on every run
if TYPE_CHECKING:
    from typing import Any

MAX_NUMBER = 1 << 53  # a time in seconds, a count: JSON numbers every reader agrees on
MAX_TEXT = 1000
# record -> the shape of each name's value: a type, or {field: type} of an object
SHAPES: dict[str, Any] = {
    "installed.json": str,
    "alerts.json": {"status": str, "told": int},
    "runs.json": {"ok": bool, "time": int, "last_success": int, "held": bool},
    "backoff.json": {"sha256": str, "failures": int, "tried": int, "status": str},
    # name -> the generation an install switched away from and the certificate it switched
    # in, written before the switch, kept until a run ends with that name synced or switched back
    "previous.json": {"generation": str, "sha256": str},
    "dane.json": None,  # not a value per name: dane.py checks each field of its own record
}
# record -> {field: default}: fields an earlier version did not write (read with the default)
OPTIONAL: dict[str, dict[str, Any]] = {"runs.json": {"held": False}}
WARNINGS: list[str] = []


def _fits(value: Any, shape: Any) -> bool:
    if isinstance(shape, dict):
        return (
            isinstance(value, dict)
            and set(value) == set(shape)
            and all(_fits(value[field], kind) for field, kind in shape.items())
        )
    if shape is int:
        return type(value) is int and 0 <= value < MAX_NUMBER
    if shape is str:
        return type(value) is str and len(value) <= MAX_TEXT
    return type(value) is shape


def state_folder(config: Config) -> str:
    return os.path.dirname(config.lock_file)


def unsafe_folders(config: Config) -> str | None:
    """Why certsync's own folders (the lock's and records', the backups') are not safe to use:
    another user than root can write them or a folder above them, or, for one not made yet,
    the folder it would be made in (the sync makes them)."""
    for folder in (state_folder(config), config.backup_dir):
        exists = os.path.lexists(folder)
        found = writable_by_others(folder) if exists else creatable_by_others(folder)
        if found:
            made = "" if exists else " (to be made)"
            return (
                f"certsync's state folder {folder}{made} is not root's alone"
                f" ({'; '.join(found)}):"
                " its lock, records and backups decide what certsync does; refusing"
            )
    return None


def load(config: Config, name: str) -> dict[str, Any]:
    """The record `name` ({} when missing or unreadable; {} with a warning when not of its
    shape)."""
    try:
        dir_fd = open_dir(state_folder(config))
    except (OSError, ValueError):
        return {}
    try:
        state = read_file(dir_fd, name)
    except OSError:
        return {}
    finally:
        os.close(dir_fd)
    if state.kind == "missing":
        return {}
    record: Any = None
    if state.kind == FILE and state.data is not None:
        try:
            record = jsontext.loads(state.data)
        except (ValueError, RecursionError):
            record = None
    shape = SHAPES[name]
    if isinstance(record, dict) and name in OPTIONAL:
        record = {
            key: {**OPTIONAL[name], **value} if isinstance(value, dict) else value
            for key, value in record.items()
        }
    fits = isinstance(record, dict) and (
        shape is None or all(_fits(value, shape) for value in record.values())
    )
    if not fits:
        path = os.path.join(state_folder(config), name)
        warning = f"{path} is not a record of certsync's: read as empty"
        if warning not in WARNINGS:
            WARNINGS.append(warning)
        return {}
    return record


def clean_staged(config: Config) -> None:
    """Remove the records' staged files a crash left (`.<record>.certsync-PID.tmp`), the state
    read's cache's too; under the lock."""
    from .files import is_temp_name
    from .statecache import RECORD

    try:
        dir_fd = open_dir(state_folder(config))
    except (OSError, ValueError):
        return
    try:
        for entry in os.listdir(dir_fd):
            if any(is_temp_name(entry, record) for record in (*SHAPES, RECORD)):
                try:
                    os.unlink(entry, dir_fd=dir_fd)
                except OSError:
                    pass
    finally:
        os.close(dir_fd)


def save(config: Config, name: str, record: dict[str, Any]) -> None:
    """Replace the record `name` (root's, 0600); raises OSError or ValueError."""
    data = jsontext.dumps(record, sort_keys=True).encode()
    dir_fd = open_dir(state_folder(config), create_mode=0o700)
    try:
        put_entries(dir_fd, {name: FileState(FILE, data, None, 0, 0, 0o600)})
    finally:
        os.close(dir_fd)
