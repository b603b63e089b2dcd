"""Owners, modes and the mox user's ids: what the state read and the sync both check of mox's
folder and files, without what reading certificates needs (ssl): the state read's cached answer
(statecache.py) uses these alone."""

from __future__ import annotations

import grp
import os
import pwd

from .errors import printable
from .files import FileState
from .settings import Config

TYPE_CHECKING = False  # typing's costs an import on every run
if TYPE_CHECKING:
    from typing import Any

CERT_MODE = 0o644
KEY_MODE = 0o600
DIR_MODE = 0o700


def file_meta_json(state: FileState) -> dict[str, Any]:
    return {
        "kind": state.kind,
        "target": None if state.target is None else printable(state.target),
        "user": _user(state.uid) if state.exists else None,
        "group": _group(state.gid) if state.exists else None,
        "mode": format(state.mode, "04o") if state.exists else None,
    }


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def mox_ids(config: Config) -> tuple[int, int]:
    try:
        return pwd.getpwnam(config.mox_user).pw_uid, grp.getgrnam(config.mox_group).gr_gid
    except KeyError as error:
        raise ValueError(f"no such user or group: {error}") from None


def foreign_folder(config: Config, dir_fd: int, uid: int) -> str | None:
    """Why certsync will not make mox's certificate folder mox's: it is another user's, holds
    something, and sits in a folder where another user than root can rename folders (mox, owning
    /home/mox, can move any folder of root's there into its place; an empty one it could have
    made itself)."""
    info = os.fstat(dir_fd)
    if info.st_uid == uid or not os.listdir(dir_fd):
        return None
    parent = os.stat("..", dir_fd=dir_fd, follow_symlinks=False)  # of this very folder
    if parent.st_uid == 0 and not parent.st_mode & 0o002 and not parent.st_mode & 0o020:
        return None
    writer = _user(parent.st_uid) if parent.st_uid != 0 else "other users than root"
    return (
        f"{config.mox_cert_dir} is {_user(info.st_uid)}'s, not {config.mox_user}'s, and not empty,"
        f" in a folder that {writer} can write: certsync hands {config.mox_user}"
        f" such a folder only when it is empty (chown {config.mox_user}: it, or set"
        f" certsync_mox_cert_dir)"
    )
