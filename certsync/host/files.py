"""Files in folders another user owns: never follow a link, replace by rename, fix by descriptor.

mox's certificate folder belongs to the `mox` user: anything in it (a link, a hard link, a file
swapped in between two calls) is planted by that user as far as this root program knows.
"""

from __future__ import annotations

import errno
import os
import pwd
import stat

from .appdir import has_access_acl
from .crashpoint import step
from .errors import SymlinkedFolder, printable
from .record import Record

FILE, LINK, MISSING, OTHER = "file", "link", "missing", "other"
# Certificate chains and keys are a few kB: a larger file is not read (a sparse file of terabytes
# planted by the mox user would otherwise be read into this root program's memory).
MAX_FILE_BYTES = 1 << 20


def open_dir(path: str, create_mode: int | None = None) -> int:
    """Open a directory by absolute path without following any symlink on the way; with
    `create_mode`, create its last component if missing."""
    if not os.path.isabs(path):
        raise ValueError(f"{path} is not an absolute path")
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    parts = [p for p in path.split("/") if p]
    try:
        for index, part in enumerate(parts):
            if part in (".", ".."):
                raise ValueError(f"{path} has a '.' or '..' component")
            if index == len(parts) - 1 and create_mode is not None:
                try:
                    os.mkdir(part, create_mode, dir_fd=fd)
                except FileExistsError:
                    pass
            try:
                next_fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as error:
                where = "/" + "/".join(parts[: index + 1])
                if error.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link(fd, part):
                    raise SymlinkedFolder(where) from None
                error.filename = where
                raise
            os.close(fd)
            fd = next_fd
    except BaseException:
        os.close(fd)
        raise
    return fd


def _is_link(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


class FileState(Record):
    """A directory entry as found: a regular file (its bytes), a link (its target), missing or
    something else. Links are never followed."""

    kind: str
    data: bytes | None = None
    target: str | None = None
    uid: int = -1
    gid: int = -1
    mode: int = 0

    @property
    def exists(self) -> bool:
        return self.kind != MISSING

    def describe(self) -> str:
        if self.kind == LINK:
            return f"a symlink to {printable(self.target or '')}"
        if self.kind == OTHER:
            return "something else than a file"
        return "nothing" if self.kind == MISSING else "a file"


def read_file(dir_fd: int, name: str, limit: int = MAX_FILE_BYTES) -> FileState:
    """The entry `name`; a regular file of more than `limit` bytes is OTHER, read no further."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except FileNotFoundError:
        return FileState(MISSING)
    except OSError as error:
        if error.errno in (errno.ENXIO, errno.ENODEV, errno.EOPNOTSUPP):
            return FileState(OTHER)  # a socket or a device: something else than a file
        if error.errno != errno.ELOOP:
            raise
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        return FileState(
            LINK,
            target=os.readlink(name, dir_fd=dir_fd),
            uid=info.st_uid,
            gid=info.st_gid,
            mode=stat.S_IMODE(info.st_mode),
        )
    try:
        info = os.fstat(fd)
        data = _read_all(fd, limit) if stat.S_ISREG(info.st_mode) else None
        if data is None:
            return FileState(OTHER)
        return FileState(FILE, data, None, info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode))
    finally:
        os.close(fd)


def _read_all(fd: int, limit: int = MAX_FILE_BYTES) -> bytes | None:
    """The file's bytes; None when it holds more than `limit` (read up to limit + 1)."""
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = os.read(fd, min(1 << 16, limit + 1 - size))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
    return None


def _temp_name(name: str) -> str:
    return f".{name}.certsync-{os.getpid()}.tmp"


def is_temp_name(entry: str, name: str) -> bool:
    """Whether `entry` is a file staged for `name` by some run of certsync (a crash leaves it)."""
    prefix, suffix = f".{name}.certsync-", ".tmp"
    middle = entry[len(prefix) : -len(suffix)]
    return (
        entry.startswith(prefix)
        and entry.endswith(suffix)
        and middle.isascii()
        and middle.isdigit()  # a pid: str.isdigit alone takes other scripts' digits too
    )


def _stage(dir_fd: int, name: str, wanted: FileState) -> str:
    """Create `wanted` (a file, fsynced, or a link) under a temporary name beside `name`."""
    temp = _temp_name(name)
    try:
        os.unlink(temp, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    if wanted.kind == LINK:
        assert wanted.target is not None
        # A link's owner cannot be set through a descriptor, and setting it by name would reach
        # whatever the folder's owner renamed in meanwhile (a hard link to any file): the link
        # is made by its owner instead.
        _symlink_as(wanted.uid, wanted.gid, wanted.target, temp, dir_fd)
        return temp
    assert wanted.kind == FILE and wanted.data is not None
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(temp, flags, 0o600, dir_fd=dir_fd)
    try:
        os.fchown(fd, wanted.uid, wanted.gid)
        os.fchmod(fd, wanted.mode & 0o777)  # never set-id bits, whatever was there before
        view = memoryview(wanted.data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        try:
            os.unlink(temp, dir_fd=dir_fd)
        except OSError:
            pass
        raise
    finally:
        os.close(fd)
    return temp


def _symlink_as(uid: int, gid: int, target: str, name: str, dir_fd: int) -> None:
    """os.symlink with effective user and group `uid` and `gid` (when root)."""
    euid, egid = os.geteuid(), os.getegid()
    if euid != 0 or (uid, gid) == (euid, egid):
        os.symlink(target, name, dir_fd=dir_fd)
        return
    os.setegid(gid)
    try:
        os.seteuid(uid)
        try:
            os.symlink(target, name, dir_fd=dir_fd)
        finally:
            os.seteuid(euid)
    finally:
        os.setegid(egid)


def put_entries(dir_fd: int, entries: dict[str, FileState]) -> None:
    """Make each named entry a file or link as given (staged first, then renamed into place) or
    remove it (kind missing). A failure while staging (disk full, read-only) leaves every entry as
    it was; no staged file is left behind in any case."""
    staged: dict[str, str] = {}
    try:
        for name, wanted in entries.items():
            if wanted.kind in (FILE, LINK):
                staged[name] = _stage(dir_fd, name, wanted)
                step(f"stage:{name}")
        for name in list(staged):
            # rename() replaces a link planted at `name` instead of following it.
            os.rename(staged[name], name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            del staged[name]
            step(f"rename:{name}")
        for name, wanted in entries.items():
            if wanted.kind == MISSING:
                try:
                    os.unlink(name, dir_fd=dir_fd)
                except FileNotFoundError:
                    pass
        os.fsync(dir_fd)
    finally:
        for temp in staged.values():
            try:
                os.unlink(temp, dir_fd=dir_fd)
            except OSError:
                pass


class NotTheCheckedFile(Exception):
    """The file changed, or is hard-linked elsewhere, between the check and the repair."""


def remove_flat_folder(dir_fd: int, name: str) -> None:
    """Remove the folder `name` of `dir_fd` that holds only files and links (a backup, a
    generation of mox's pair): its entries first, none followed."""
    folder_fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
    try:
        for entry in os.listdir(folder_fd):
            os.unlink(entry, dir_fd=folder_fd)
    finally:
        os.close(folder_fd)
    os.rmdir(name, dir_fd=dir_fd)


def repair_owner_mode(
    dir_fd: int, name: str, expected: bytes, uid: int, gid: int, mode: int
) -> None:
    """Set owner and mode of the file `name` holding `expected`, through the very descriptor its
    contents were checked on, so that a file swapped in meanwhile is never touched; a file with
    other hard links is not touched either (its other names may be anywhere)."""
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            raise NotTheCheckedFile(f"{name} is not a file with a single link")
        if _read_all(fd) != expected:
            raise NotTheCheckedFile(f"{name} changed")
        if (info.st_uid, info.st_gid) != (uid, gid):
            os.fchown(fd, uid, gid)
        if stat.S_IMODE(info.st_mode) != mode:
            os.fchmod(fd, mode)
    finally:
        os.close(fd)


def writable_by_others(path: str) -> list[str]:
    """Who else than root can replace the program at `path`: the owners of the file and of every
    folder above it, and group- or world-writable ones among them."""
    found: list[str] = []
    seen: set[str] = set()
    for candidate in (path, os.path.realpath(path)):
        current = candidate
        while current not in seen:
            seen.add(current)
            try:
                info = os.stat(current, follow_symlinks=False)
            except OSError:
                break
            sticky = stat.S_ISDIR(info.st_mode) and info.st_mode & stat.S_ISVTX
            link = stat.S_ISLNK(info.st_mode)  # always mode 0777, which means nothing
            if info.st_uid != 0:
                found.append(f"{current} is owned by {_user_name(info.st_uid)}")
            elif info.st_mode & 0o002 and not sticky and not link:
                found.append(f"{current} is writable by every user")
            elif info.st_mode & 0o020 and info.st_gid != 0 and not link:
                found.append(f"{current} is writable by group {info.st_gid}")
            elif info.st_mode & 0o020 and not link and has_access_acl(current):
                found.append(f"{current} has an access ACL (or one that cannot be read)")
            parent = os.path.dirname(current)
            if parent == current:
                break
            current = parent
    return found


def nearest_existing(path: str) -> str:
    """`path`, or the nearest folder above it that exists (where it would be made)."""
    while not os.path.lexists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def creatable_by_others(path: str) -> list[str]:
    """Who else than root could decide what root makes at `path`, or in the folders it would
    make for it: writable_by_others of the nearest existing folder, where a sticky folder open to
    others (as /tmp) counts too: another user can take a new name in it first."""
    folder = nearest_existing(path)
    found = writable_by_others(folder)
    try:
        info = os.stat(folder, follow_symlinks=False)
    except OSError:
        return found
    open_to_others = info.st_mode & 0o002 or (info.st_mode & 0o020 and info.st_gid != 0)
    if stat.S_ISDIR(info.st_mode) and info.st_mode & stat.S_ISVTX and open_to_others:
        found.append(
            f"{folder} is writable by other users (sticky, yet another user can take a new name"
            " in it first)"
        )
    return found


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def trust_warning(binary: str, found: list[str]) -> str:
    return (
        f"running {binary} as root for `mox config test` trusts whoever can replace it"
        f" ({'; '.join(found)}); mox's own service does the same"
    )
