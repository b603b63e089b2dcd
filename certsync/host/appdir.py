"""The installed zipapp's sources unpacked beside it, in `app-<sha256 of the zipapp>/`, with
their bytecode (python3 can keep none for modules imported from a zip).

Root imports them: the folder is made under umask 077, every file and folder of it written to
disk (fsync) before it is renamed into place whole, and it is used (by its real path) only when
every level of it is root's, not writable by others (install_dir: by root's group at most,
holder_ok) and not a link, no other user can change where its path leads (held_above), and its
sources are byte for byte the zipapp's own with this python3's bytecode (usable, what the
zipapp's own run checks: it makes the folder anew otherwise, from the bytes it read and only
when they hold its own version); otherwise the zipapp itself is used. Another version's
folder is removed a day after this version became the installed one: a run of that version may
still be importing from it, lazily, until it ends.

The state read (program.INSTALLED) checks less, for its cost (hashing every source is a quarter of
an in-sync read): the levels, and each file's name, size, owner and mode (complete). What the
digest adds is no defence against the mox user, who can write nothing where every level is
root's and not writable by others; it would catch a folder torn by a power loss, and none can be:
a folder is in place only after all it holds, its bytecode included, is on disk, and nothing
writes into it afterwards (the commands that import from it set sys.dont_write_bytecode). A
folder changed by root by hand with the same sizes is root's own doing: the next sync (the cron
job's) finds it and makes it anew.
"""

from __future__ import annotations

import os
import stat
import sys

TYPE_CHECKING = False  # typing's costs an import on every run
if TYPE_CHECKING:
    from collections.abc import Iterable

PACKAGE = "certsync_host"  # program.HOST_PACKAGE
PREFIX = "app-"  # program.APP_PREFIX
MAX_SOURCE_BYTES = 1 << 20


def _root_only(path: str, directory: bool) -> bool:
    """root's, not writable by group or others, not a link; a directory or a regular file."""
    return _root_status(path, directory) is not None


def _root_status(path: str, directory: bool) -> os.stat_result | None:
    """The path's lstat when _root_only, else None."""
    try:
        info = os.lstat(path)
    except OSError:
        return None
    kind = stat.S_ISDIR(info.st_mode) if directory else stat.S_ISREG(info.st_mode)
    return info if kind and info.st_uid == 0 and not info.st_mode & 0o022 else None


def held_by_root(path: str, link: bool = False, sticky: bool = True) -> bool:
    """A folder above the unpacked one: root's, and no other user can rename what it holds (not
    writable by others but sticky (`sticky`), nor by a group other than root's, nor through an
    access ACL: files.writable_by_others); `link`: or root's link (in a folder checked the same
    way, only root can change it)."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    mode = info.st_mode
    if link and stat.S_ISLNK(mode):
        return info.st_uid == 0  # another user's can be replaced by it in a sticky folder
    if mode & 0o020 and info.st_gid == 0 and has_access_acl(path):
        return False
    return (
        stat.S_ISDIR(mode)
        and info.st_uid == 0
        and not (mode & 0o002 and not (sticky and mode & stat.S_ISVTX))
        and not (mode & 0o020 and info.st_gid != 0)
    )


def holder_ok(path: str) -> bool:
    """install_dir, which holds the unpacked folder: held_by_root, and no other user can make an
    entry in it (not writable by every user, sticky or not: the mox user could make the folder's
    name first, its own)."""
    return held_by_root(path, sticky=False)


def has_access_acl(path: str) -> bool:
    """Whether the file has a POSIX access ACL (whose named entries the group bits then mask):
    True when that cannot be read."""
    try:
        return "system.posix_acl_access" in os.listxattr(path, follow_symlinks=False)
    except OSError:
        return True


def _above(path: str) -> list[str]:
    """The folders above `path`, up to /."""
    found = []
    while os.path.dirname(path) != path:
        path = os.path.dirname(path)
        found.append(path)
    return found


def held_above(app: str) -> str | None:
    """`app`'s real path when no user but root can change where `app` leads: every folder above
    it, on its real path and on the path as given (where a link is root's to change), is
    held_by_root; else None."""
    real = os.path.realpath(app)
    if all(held_by_root(f) for f in _above(os.path.dirname(real))) and all(
        held_by_root(f, link=True) for f in _above(app)
    ):
        return real
    return None


def tree_digest(sources: dict[str, bytes]) -> str:
    """The sha256 of the package's sources (file name -> bytes): the zipapp's MAIN holds it."""
    import hashlib

    digest = hashlib.sha256()
    for name in sorted(sources):
        data = sources[name]
        digest.update(b"%s\0%d\0" % (name.encode(), len(data)) + data)
    return digest.hexdigest()


def shape_digest(sizes: dict[str, int]) -> str:
    """The package's files' names and sizes (file name -> bytes) in one word: a torn or
    incomplete folder gives another one (a check of completeness, not of authenticity)."""
    import zlib

    text = "".join(f"{name}\0{sizes[name]}\0" for name in sorted(sizes))
    return f"{zlib.crc32(text.encode()):08x}-{len(sizes)}"


def complete(app: str, shape: str) -> bool:
    """Whether `app`'s package holds the files of `shape` (shape_digest), each root's, regular
    and not writable by others, and nothing more, with this python3's bytecode of each (the
    levels are the caller's to check)."""
    package = os.path.join(app, PACKAGE)
    sizes: dict[str, int] = {}
    try:
        for name in os.listdir(package):
            if name == "__pycache__":
                continue
            info = _root_status(os.path.join(package, name), False)
            if info is None:
                return False
            sizes[name] = info.st_size
    except OSError:
        return False
    return shape_digest(sizes) == shape and compiled(package, sizes)


def compiled(package: str, sources: Iterable[str]) -> bool:
    """Whether the package's bytecode folder holds this python3's bytecode of each source (after
    an upgrade of python3, the folder's is another version's: unused, every run would compile
    every module anew, as nothing writes bytecode into the folder)."""
    tag = sys.implementation.cache_tag
    if tag is None:  # a python3 that keeps no bytecode
        return True
    try:
        found = set(os.listdir(os.path.join(package, "__pycache__")))
    except OSError:
        return False
    return all(f"{name[:-3]}.{tag}.pyc" in found for name in sources if name.endswith(".py"))


def usable(app: str, digest: str) -> str | None:
    """The folder root may import from for `app` (its real path): every level root's, not
    writable by others, not a link, no folder above it another user can rename, and its sources
    those of `digest` (tree_digest), nothing more; else None."""
    real = held_above(app)
    if real is None:
        return None
    app, package = real, os.path.join(real, PACKAGE)
    if not (
        holder_ok(os.path.dirname(app)) and _root_only(app, True) and _root_only(package, True)
    ):
        return None
    cache = os.path.join(package, "__pycache__")
    if os.path.lexists(cache) and not _root_only(cache, True):
        return None
    sources: dict[str, bytes] = {}
    try:
        for name in os.listdir(package):
            path = os.path.join(package, name)
            if name == "__pycache__":
                continue
            if not _root_only(path, False):
                return None
            with open(path, "rb") as file:
                sources[name] = file.read(MAX_SOURCE_BYTES + 1)
    except OSError:  # e.g. not root: the files are root's alone
        return None
    return app if tree_digest(sources) == digest and compiled(package, sources) else None


def _unpack(pyz: bytes, app: str) -> None:
    """Unpack the zipapp's sources (its bytes) into `app`, whole or not at all."""
    import io
    import shutil
    import tempfile
    import zipfile

    previous = os.umask(0o077)
    temp = None
    try:
        temp = tempfile.mkdtemp(prefix=".unpacking-", dir=os.path.dirname(app))
        with zipfile.ZipFile(io.BytesIO(pyz)) as archive:
            names = [n for n in archive.namelist() if n.startswith(PACKAGE + "/")]
            archive.extractall(temp, names)
        _compile(os.path.join(temp, PACKAGE))
        _root_alone(temp)
        _to_disk(temp)
        os.rename(temp, app)  # another run may have done it meanwhile: OSError
    except Exception:  # a full or read-only disk; a torn zipapp (BadZipFile, zlib.error...)
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
    finally:
        os.umask(previous)


def _root_alone(folder: str) -> None:
    """Folders 0700 and files 0600 under `folder`, whatever the umask left them: a default ACL
    of the folder above overrides it (and chmod masks the ACL's named entries to nothing)."""
    for parent, _, files in os.walk(folder):  # root's alone since made: no link in it
        os.chmod(parent, 0o700)
        for name in files:
            os.chmod(os.path.join(parent, name), 0o600)


def _compile(package: str) -> None:
    """The package's bytecode, written now to be on disk with the sources (_to_disk): python3
    writes no bytecode into the folder afterwards (the commands set sys.dont_write_bytecode), so
    no power loss can leave a torn one there, which python3 would not tell from a whole one."""
    import py_compile

    for name in sorted(os.listdir(package)):
        if name.endswith(".py"):
            source = os.path.join(package, name)
            try:
                py_compile.compile(source, doraise=True)
            except py_compile.PyCompileError as error:
                raise ValueError(str(error)) from None


def _to_disk(folder: str) -> None:
    """Every file and folder under `folder` written to disk (fsync), before it is renamed into
    place: a power loss leaves the folder whole or not in place (module docstring)."""
    for parent, _, files in os.walk(folder, topdown=False):
        for path in [*(os.path.join(parent, name) for name in files), parent]:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def unpacked(pyz: bytes, app: str, digest: str, installed: str) -> str | None:
    """The folder to import from for `app`, with the sources of the zipapp whose bytes are `pyz`
    (those it was named after, whatever replaced the file `installed` since), unpacked if missing
    (as root) and made anew if it is not usable; None when it cannot be used. Nothing is written
    where another user could rename it away (held_above, the folder holding `app` root's alone),
    nor from bytes whose sources are not those of `digest` (the running program's: a zipapp
    replaced between its start and its read)."""
    real = held_above(app) if os.geteuid() == 0 else None
    if real is None or not holder_ok(os.path.dirname(real)):
        return None
    if not os.path.lexists(real):
        if _holds(pyz, digest):
            _unpack(pyz, real)
    elif usable(real, digest) is None and _root_only(real, True) and _holds(pyz, digest):
        import shutil

        shutil.rmtree(real, ignore_errors=True)  # root's own, half made or changed: anew
        _unpack(pyz, real)
    if usable(real, digest) is None:
        return None
    try:
        _remove_stale(real, pyz, installed)
    except OSError:  # another run removed them meanwhile
        pass
    return real


def _holds(pyz: bytes, digest: str) -> bool:
    """Whether the zipapp's bytes hold the package's sources of `digest` (tree_digest)."""
    import io
    import zipfile

    prefix = PACKAGE + "/"
    try:
        with zipfile.ZipFile(io.BytesIO(pyz)) as archive:
            sources = {
                name[len(prefix) :]: archive.read(name)
                for name in archive.namelist()
                if name.startswith(prefix)
            }
    except Exception:  # not a zip, torn
        return False
    return tree_digest(sources) == digest


STALE_SECONDS = 86400  # a run lasts far less: none of another version's can import from it then
UNPACKING_STALE_SECONDS = 3600
HEX = frozenset("0123456789abcdef")


def _remove_stale(real: str, pyz: bytes, installed: str) -> None:
    """Other versions' folders, once this version has been the installed one (`installed` holds
    its bytes) for STALE_SECONDS: a run of the version it replaced may still import from its own,
    lazily, until it ends; and what unpacks killed long ago left (.unpacking-*)."""
    import shutil
    import time

    now = time.time()
    folder, own = os.path.split(real)
    versions, unpacking = [], []
    for entry in os.listdir(folder):
        path = os.path.join(folder, entry)
        if entry != own and entry.startswith(PREFIX) and set(entry[len(PREFIX) :]) <= HEX:
            if len(entry) == len(own):
                versions.append(path)
        elif entry.startswith(".unpacking-") and now - os.lstat(path).st_ctime > (
            UNPACKING_STALE_SECONDS
        ):
            unpacking.append(path)
    if versions:
        since = max(os.lstat(real).st_ctime, os.lstat(installed).st_ctime)
        with open(installed, "rb") as file:
            current = file.read() == pyz
        if current and now - since > STALE_SECONDS:
            unpacking += versions
    for path in unpacking:
        shutil.rmtree(path, ignore_errors=True)


def import_from(app: str | None) -> None:
    """Import the package from `app` from now on (when usable), not from the zipapp."""
    if app is None:
        return
    for module in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
        del sys.modules[module]
    sys.path.insert(0, app)
