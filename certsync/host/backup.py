"""Backups of mox's files before a change: a root-only folder per sync, the newest N kept."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import stat

from .errors import reason
from .files import FILE, LINK, FileState, open_dir, put_entries, remove_flat_folder

BACKUP_DIR_MODE = 0o700
STAMP_FORMAT = "%Y%m%dT%H%M%S%fZ"
STAMP_RE = re.compile(r"\d{8}T\d{12}Z")
PARTIAL_RE = re.compile(r"\.\d{8}T\d{12}Z\.partial")


def take_backup(
    backup_dir: str, olds: dict[str, FileState], keep: int, hold_pruning: str = ""
) -> tuple[str, str]:
    """Copy mox's files (files as root-owned copies, links as links) to a new folder of
    `backup_dir`; prune to `keep` (not when `hold_pruning` says why not). Returns (its path, a
    note when pruning failed or was held)."""
    root_fd = open_dir(backup_dir, create_mode=BACKUP_DIR_MODE)
    try:
        info = os.fstat(root_fd)
        if (info.st_uid, info.st_gid) != (0, 0):
            os.fchown(root_fd, 0, 0)
        if stat.S_IMODE(info.st_mode) != BACKUP_DIR_MODE:
            os.fchmod(root_fd, BACKUP_DIR_MODE)
        for entry in os.listdir(root_fd):  # what a crash while backing up left
            if PARTIAL_RE.fullmatch(entry):
                remove_backup(root_fd, entry)
        stamp = dt.datetime.now(dt.timezone.utc).strftime(STAMP_FORMAT)
        # filled under a name no backup has, renamed to its stamp once whole: a stamp folder is
        # always a whole backup (a crash leaves a partial one, never counted, removed above)
        partial = f".{stamp}.partial"
        os.mkdir(partial, BACKUP_DIR_MODE, dir_fd=root_fd)
        try:
            folder_fd = os.open(
                partial, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=root_fd
            )
            try:
                put_entries(
                    folder_fd,
                    {
                        file: FileState(
                            state.kind, state.data, state.target, 0, 0, 0o600
                        )  # root-only, no set-id bits
                        for file, state in olds.items()
                        if state.kind in (FILE, LINK)
                    },
                )
                os.fsync(folder_fd)
            finally:
                os.close(folder_fd)
            os.rename(partial, stamp, src_dir_fd=root_fd, dst_dir_fd=root_fd)
            os.fsync(root_fd)  # the backup survives a power loss before the install's renames
        except OSError:
            remove_backup(root_fd, partial)
            remove_backup(root_fd, stamp)
            raise
        note = ""
        if hold_pruning:
            note = f" (old backups not pruned: {hold_pruning})"
        else:
            try:
                prune(root_fd, keep, stamp)
            except OSError as error:
                note = f" (pruning old backups failed: {reason(error)})"
    finally:
        os.close(root_fd)
    return os.path.join(backup_dir, stamp), note


def prune(root_fd: int, keep: int, just_taken: str) -> None:
    """Remove the oldest backups beyond `keep`; never `just_taken`."""
    stamps = sorted(e for e in os.listdir(root_fd) if STAMP_RE.fullmatch(e) and e != just_taken)
    for stamp in stamps[: max(len(stamps) + 1 - keep, 0)]:
        remove_backup(root_fd, stamp)


def remove_backup(root_fd: int, stamp: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        remove_flat_folder(root_fd, stamp)
