"""Owners, modes and the mox user's ids: what the state read and the sync both check of mox's
folder and files, without what reading certificates needs (ssl): the state read's cached answer
(statecache.py) uses these alone."""

from __future__ import annotations

import grp
import os
import pwd
import stat

from .errors import printable
from .files import FileState
from .layout import is_entry_of
from .names import storage_name
from .settings import Config

TYPE_CHECKING = False  # typing's costs an import on every run
if TYPE_CHECKING:
    from typing import Any

CERT_MODE = 0o644
KEY_MODE = 0o600
DIR_MODE = 0o700
# mox's folder as certsync makes it, until it has made it mox's: what a crash leaves is told
# from a folder of an admin's (none has no permission at all)
UNCLAIMED_MODE = 0o000
MAX_SHOWN = 3  # entries named in a refusal


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
    """Why certsync will not make mox's certificate folder mox's, when it is another user's:
    - in a folder where another user than root can rename folders, it holds something (mox,
      owning /home/mox, can move any folder of root's there into its place; an empty one it
      could have made itself);
    - in a folder only root can write, it is empty and certsync did not make it, or it holds
      more than mox's certificate files of the host's names: certsync_mox_cert_dir naming a
      folder such as /var/tmp, /etc or /etc/ssl/private by mistake; were it mox's, mox could
      replace what it holds."""
    info = os.fstat(dir_fd)
    if info.st_uid == uid:
        return None
    entries = os.listdir(dir_fd)
    parent = os.stat("..", dir_fd=dir_fd, follow_symlinks=False)  # of this very folder
    owner, mox = _user(info.st_uid), config.mox_user
    fix = (
        f"set certsync_mox_cert_dir to the folder mox.conf names; if it is that folder, chown"
        f" {mox}: it"
    )
    if parent.st_uid != 0 or parent.st_mode & 0o022:
        if not entries:
            return None
        writer = _user(parent.st_uid) if parent.st_uid != 0 else "other users than root"
        return (
            f"{config.mox_cert_dir} is {owner}'s, not {mox}'s, and not empty, in a folder that"
            f" {writer} can write: certsync hands {mox} such a folder only when it is empty"
            f" (chown {mox}: it, or set certsync_mox_cert_dir)"
        )
    if not entries:
        # (a folder made in a setgid folder is setgid itself)
        if info.st_uid == 0 and stat.S_IMODE(info.st_mode) & ~stat.S_ISGID == UNCLAIMED_MODE:
            return None  # certsync made it (a crash stopped it before it made it mox's)
        return (
            f"{config.mox_cert_dir} is {owner}'s, not {mox}'s, and empty: certsync makes such a"
            f" folder {mox}'s only when it made it ({fix})"
        )
    others = sorted(entry for entry in entries if not _certificate_entry(entry, config.names))
    if not others:
        return None
    shown = ", ".join(printable(entry) for entry in others[:MAX_SHOWN])
    more = f" and {len(others) - MAX_SHOWN} more" if len(others) > MAX_SHOWN else ""
    names = ", ".join(config.names[:MAX_SHOWN])
    names += f" and {len(config.names) - MAX_SHOWN} more" if len(config.names) > MAX_SHOWN else ""
    return (
        f"{config.mox_cert_dir} is {owner}'s, not {mox}'s, and holds files other than {mox}'s"
        f" certificate files for {names} ({shown}{more}): certsync hands {mox} such a folder"
        f" only when it holds nothing else ({fix})"
    )


def _certificate_entry(entry: str, names: list[str]) -> bool:
    """Whether `entry` of mox's folder is one of mox's certificate files of `names`."""
    return any(is_entry_of(storage_name(name), entry) for name in names)
