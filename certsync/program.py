"""The host program as the hosts get it: the stdlib modules of `certsync.host` in one zipapp,
built in memory, byte for byte the same for the same sources (so that its sha256 tells whether a
host has it), and the `python3 -c` command that runs it before it is installed."""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import zipfile
from importlib import resources

HOST_PACKAGE = "certsync_host"  # the package's name inside the zipapp
MAIN = f"import sys\nfrom {HOST_PACKAGE}.cli import main\nsys.exit(main())\n"
FIXED_TIME = (1980, 1, 1, 0, 0, 0)

# Runs the zipapp given (base64) as the first argument from memory, without writing it anywhere.
BOOTSTRAP = (
    "import base64,os,sys;"
    "fd=os.memfd_create('certsync');"
    "os.write(fd,base64.b64decode(sys.argv[1]));"
    "sys.path.insert(0,'/proc/self/fd/%d'%fd);"
    f"from {HOST_PACKAGE}.cli import main;"
    "sys.exit(main(sys.argv[2:]))"
)


@functools.cache
def zipapp() -> bytes:
    """The zipapp: `__main__.py` and the package's modules, sorted, with fixed timestamps."""
    sources = {
        entry.name: entry.read_bytes()
        for entry in resources.files("certsync.host").iterdir()
        if entry.name.endswith(".py") and entry.name != "__main__.py"
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        members = [("__main__.py", MAIN.encode())]
        members += [(f"{HOST_PACKAGE}/{name}", sources[name]) for name in sorted(sources)]
        for name, data in members:
            info = zipfile.ZipInfo(name, FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data, compresslevel=9)
    return b"#!/usr/bin/python3\n" + buffer.getvalue()


def zipapp_sha256() -> str:
    return hashlib.sha256(zipapp()).hexdigest()


@functools.cache
def zipapp_base64() -> str:
    return base64.b64encode(zipapp()).decode()
