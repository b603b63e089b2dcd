"""The installed zipapp's sources unpacked beside it, in `app-<sha256 of the zipapp>/`, where
python3 keeps their bytecode (it cannot for modules imported from a zip).

Root imports them: the folder is made under umask 077 and renamed into place whole, and it is
used only when every level of it is root's, not writable by others and not a link, and its
sources are byte for byte the zipapp's own; otherwise the zipapp itself is used.
"""

from __future__ import annotations

import hashlib
import os
import stat
import sys

PACKAGE = "certsync_host"  # program.HOST_PACKAGE
PREFIX = "app-"  # program.APP_PREFIX
MAX_SOURCE_BYTES = 1 << 20


def _root_only(path: str, directory: bool) -> bool:
    """root's, not writable by group or others, not a link; a directory or a regular file."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    kind = stat.S_ISDIR(info.st_mode) if directory else stat.S_ISREG(info.st_mode)
    return kind and info.st_uid == 0 and not info.st_mode & 0o022


def tree_digest(sources: dict[str, bytes]) -> str:
    """The sha256 of the package's sources (file name -> bytes): the zipapp's MAIN holds it."""
    digest = hashlib.sha256()
    for name in sorted(sources):
        data = sources[name]
        digest.update(b"%s\0%d\0" % (name.encode(), len(data)) + data)
    return digest.hexdigest()


def usable(app: str, digest: str) -> bool:
    """Whether root may import from `app`: every level root's, not writable by others, not a
    link, and its sources those of `digest` (tree_digest), nothing more."""
    package = os.path.join(app, PACKAGE)
    if not all(_root_only(folder, True) for folder in (os.path.dirname(app), app, package)):
        return False
    cache = os.path.join(package, "__pycache__")
    if os.path.lexists(cache) and not _root_only(cache, True):
        return False
    sources: dict[str, bytes] = {}
    try:
        for name in os.listdir(package):
            path = os.path.join(package, name)
            if name == "__pycache__":
                continue
            if not _root_only(path, False):
                return False
            with open(path, "rb") as file:
                sources[name] = file.read(MAX_SOURCE_BYTES + 1)
    except OSError:  # e.g. not root: the files are root's alone
        return False
    return tree_digest(sources) == digest


def _unpack(pyz: str, app: str) -> None:
    """Unpack the zipapp's sources into `app`, whole or not at all."""
    import shutil
    import tempfile
    import zipfile

    previous = os.umask(0o077)
    try:
        temp = tempfile.mkdtemp(prefix=".unpacking-", dir=os.path.dirname(app))
        try:
            with zipfile.ZipFile(pyz) as archive:
                names = [n for n in archive.namelist() if n.startswith(PACKAGE + "/")]
                archive.extractall(temp, names)
            os.rename(temp, app)  # another run may have done it meanwhile: OSError
        except (OSError, ValueError):
            shutil.rmtree(temp, ignore_errors=True)
    finally:
        os.umask(previous)


def unpacked(pyz: str, app: str, digest: str) -> str | None:
    """`app` with the zipapp `pyz`'s sources, unpacked if missing (as root) and replaced if it
    is not usable; None when it cannot be used."""
    if os.geteuid() != 0:
        return None
    if not os.path.lexists(app):
        _unpack(pyz, app)
    elif not usable(app, digest) and _root_only(app, True):
        import shutil

        shutil.rmtree(app, ignore_errors=True)  # root's own, half made or changed: anew
        _unpack(pyz, app)
    if not usable(app, digest):
        return None
    folder = os.path.dirname(app)
    for entry in os.listdir(folder):
        if entry.startswith(PREFIX) and entry != os.path.basename(app):
            import shutil

            shutil.rmtree(os.path.join(folder, entry), ignore_errors=True)
    return app


def import_from(app: str | None) -> None:
    """Import the package from `app` from now on (when usable), not from the zipapp."""
    if app is None:
        return
    for module in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
        del sys.modules[module]
    sys.path.insert(0, app)
