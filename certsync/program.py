"""The host program as the hosts get it: the stdlib modules of `certsync.host` in one zipapp,
built in memory, byte for byte the same for the same sources (so that its sha256 tells whether a
host has it), and the `python3 -c` command that runs it for the state read.

Python cannot keep the bytecode of modules it imports from a zip: it would compile them at every
run, the larger part of a run that finds nothing to do. So the installed zipapp unpacks its
sources once (as root) beside itself, into `app-<its sha256>/`, where python3 keeps their
bytecode; the cron job, the deploy's sync and the state read then import them from there, once
checked (host/appdir.py).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import zipfile
import zlib
from importlib import resources

from certsync.host.appdir import shape_digest, tree_digest

HOST_PACKAGE = "certsync_host"  # the package's name inside the zipapp
FIXED_TIME = (1980, 1, 1, 0, 0, 0)
APP_PREFIX = "app-"  # + the first 16 hex digits of the zipapp's sha256
# zlib's level for the zipapp and the carried program, made on every run: 9 costs three times
# the CPU of 6 (25 ms against 9 for the carried program) for 0.5% fewer bytes
COMPRESS_LEVEL = 6

# {{tree}}: appdir.tree_digest of the package's sources, filled in by zipapp()
MAIN = f'''"""certsync's host program: python3 -I -S certsync.pyz sync|state|watch ..."""
import hashlib
import os
import sys

sys.dont_write_bytecode = True  # the unpacked folder's bytecode is written with it (appdir)
pyz = os.path.abspath(sys.argv[0])
with open(pyz, "rb") as file:
    data = file.read()
from {HOST_PACKAGE} import appdir

app = os.path.join(os.path.dirname(pyz), "{APP_PREFIX}" + hashlib.sha256(data).hexdigest()[:16])
found = appdir.unpacked(data, app, "{{tree}}", pyz)
if found is None:  # the bytes read, not the file a deploy may replace while this runs
    fd = os.memfd_create("certsync")
    os.write(fd, data)
    found = "/proc/self/fd/%d" % fd
appdir.import_from(found)
from {HOST_PACKAGE}.cli import main

sys.exit(main())
'''

# python3 -c BOOTSTRAP <the unpacked folder of this version> <tree digest> <N> <the carried
# program, base64, in N parts> <command...>:
# imports the sources the command carries (carried(): a zip, zlib-compressed), from memory,
# without writing them anywhere; or the unpacked ones when the host has this version and they
# are usable (appdir.usable). In parts: Linux refuses a single argument past 128 KiB.
# One line: sudo and the logs quote a command line by line.
BOOTSTRAP = (
    "import base64,os,sys,zlib;"
    "sys.dont_write_bytecode=True;"
    "n=4+int(sys.argv[3]);"
    "fd=os.memfd_create('certsync');"
    "os.write(fd,zlib.decompress(base64.b64decode(''.join(sys.argv[4:n]))));"
    "carried='/proc/self/fd/%d'%fd;"
    "sys.path.insert(0,carried);"
    f"from {HOST_PACKAGE} import appdir;"
    "appdir.import_from(appdir.usable(sys.argv[1],sys.argv[2]));"
    f"from {HOST_PACKAGE}.cli import main;"
    "sys.exit(main(sys.argv[n:]))"
)
PART_CHARS = 64 * 1024  # of the carried program's base64, per argument

# What the installed program's state read prints, alone, when the host cannot run this version
# from its unpacked folder (not installed yet, not root, the folder not usable): the controller
# then reads again with the command that carries the program (BOOTSTRAP).
NOT_INSTALLED = "certsync: this version is not installed here"

# python3 -c INSTALLED <the unpacked folder of this version> <its shape> <command...>: the state
# read of a host that has this version, the program carried nowhere. Nothing is imported from
# the folder (by its real path) before every level of it is root's, not writable by others and
# not a link (install_dir: appdir.holder_ok), and no other user can change where its path leads
# (appdir.held_by_root, inlined here: nothing may be imported before); its files' names and
# sizes are then those of this version (appdir.complete), or the command prints NOT_INSTALLED
# and imports nothing more.
INSTALLED_SOURCE = f"""import os, stat, sys
sys.dont_write_bytecode = True
given = sys.argv[1]
app = os.path.realpath(given)
package = app + "/{HOST_PACKAGE}"

def root_only(path, missing=False):
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return missing
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == 0 and not info.st_mode & 0o022

def held(path, link, sticky=True):
    try:
        info = os.lstat(path)
    except OSError:
        return False
    mode = info.st_mode
    if link and stat.S_ISLNK(mode):
        return info.st_uid == 0
    if mode & 0o020 and info.st_gid == 0:
        try:
            if "system.posix_acl_access" in os.listxattr(path, follow_symlinks=False):
                return False
        except OSError:
            return False
    return (
        stat.S_ISDIR(mode)
        and info.st_uid == 0
        and not (mode & 0o002 and not (sticky and mode & stat.S_ISVTX))
        and not (mode & 0o020 and info.st_gid != 0)
    )

def above(path):
    while os.path.dirname(path) != path:
        path = os.path.dirname(path)
        yield path

usable = (
    os.geteuid() == 0
    and held(os.path.dirname(app), False, sticky=False)
    and all(root_only(path) for path in (app, package))
    and root_only(package + "/__pycache__", missing=True)
    and all(held(path, False) for path in above(os.path.dirname(app)))
    and all(held(path, True) for path in above(given))
)
if usable:
    sys.path.insert(0, app)
    try:
        from {HOST_PACKAGE} import appdir
        usable = appdir.complete(app, sys.argv[2])
        if usable:
            from {HOST_PACKAGE}.cli import main
    except Exception:
        usable = False
if not usable:
    print({NOT_INSTALLED!r})
    sys.exit(0)
sys.exit(main(sys.argv[3:]))
"""
# One line, as BOOTSTRAP
INSTALLED = f"exec({INSTALLED_SOURCE!r})"


@functools.cache
def zipapp() -> bytes:
    """The zipapp: `__main__.py` and the package's modules, sorted, with fixed timestamps."""
    sources = _sources()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        members = [("__main__.py", main_source().encode())]
        members += [(f"{HOST_PACKAGE}/{name}", sources[name]) for name in sorted(sources)]
        for name, data in members:
            info = zipfile.ZipInfo(name, FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data, compresslevel=COMPRESS_LEVEL)
    return b"#!/usr/bin/python3\n" + buffer.getvalue()


def _sources() -> dict[str, bytes]:
    return {
        entry.name: entry.read_bytes()
        for entry in resources.files("certsync.host").iterdir()
        if entry.name.endswith(".py") and entry.name != "__main__.py"
    }


@functools.cache
def tree_sha256() -> str:
    """What the unpacked folder's sources must hash to (appdir.tree_digest)."""
    return tree_digest(_sources())


def main_source() -> str:
    return MAIN.replace("{tree}", tree_sha256())


@functools.cache
def source_shape() -> str:
    """What the unpacked folder's files' names and sizes must give (appdir.shape_digest)."""
    return shape_digest({name: len(data) for name, data in _sources().items()})


@functools.cache
def zipapp_sha256() -> str:
    return hashlib.sha256(zipapp()).hexdigest()


def unpacked_folder(install_dir: str) -> str:
    """Where the installed zipapp unpacks its sources (MAIN)."""
    return f"{install_dir}/{APP_PREFIX}{zipapp_sha256()[:16]}"


@functools.cache
def carried() -> bytes:
    """What the state read's command carries: the zipapp's members stored uncompressed in a zip
    compressed whole with zlib (smaller than the zipapp, whose members are compressed apart)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(zipapp())) as source, zipfile.ZipFile(buffer, "w") as archive:
        for info in source.infolist():
            stored = zipfile.ZipInfo(info.filename, FIXED_TIME)
            stored.external_attr = info.external_attr
            archive.writestr(stored, source.read(info))
    return zlib.compress(buffer.getvalue(), COMPRESS_LEVEL)


@functools.cache
def carried_parts() -> tuple[str, ...]:
    """carried(), base64, in arguments of PART_CHARS characters at most."""
    text = base64.b64encode(carried()).decode()
    return tuple(text[start : start + PART_CHARS] for start in range(0, len(text), PART_CHARS))


def bootstrap_arguments(app: str) -> list[str]:
    """BOOTSTRAP's arguments before the command: the unpacked folder to use when usable, the
    digest it must have, and the carried program's parts."""
    parts = carried_parts()
    return [app, tree_sha256(), str(len(parts)), *parts]
