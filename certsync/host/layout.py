"""mox's two files of a name switched together by one rename (as Kubernetes' atomic writer does):

    <stored>.crt     -> ..<stored>.data/<stored>.crt      links, made once
    <stored>.key     -> ..<stored>.data/<stored>.key
    ..<stored>.data  -> ..<stored>.g<16 hex digits>       the one link a sync swaps by rename
    ..<stored>.g<16 hex digits>/<stored>.crt, .key        a generation: mox's files, 0644 and 0600

The paths mox.conf names stay the same; mox (as root, at start) follows the links. certsync itself
follows none: it reads the links' targets and accepts only exactly these, then opens the
generation folder with O_NOFOLLOW and reads its files with O_NOFOLLOW. Anything else at these
names is the mox user's (foreign) and is replaced by rename. A crash leaves staged files, a
generation made but not switched to, or an old generation: `clean` removes them, under the lock.
"""

from __future__ import annotations

import errno
import os
import stat

from .crashpoint import step
from .files import (
    FILE,
    LINK,
    FileState,
    is_temp_name,
    put_entries,
    read_file,
    remove_flat_folder,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

SUFFIXES = (".crt", ".key")
GENERATION_DIGITS = 16


def data_link(stored: str) -> str:
    return f"..{stored}.data"


def link_target(stored: str, suffix: str) -> str:
    return f"{data_link(stored)}/{stored}{suffix}"


def is_generation(stored: str, entry: str) -> bool:
    """`..<stored>.g` and GENERATION_DIGITS lowercase hex digits."""
    prefix = f"..{stored}.g"
    digits = entry[len(prefix) :]
    return (
        entry.startswith(prefix)
        and len(digits) == GENERATION_DIGITS
        and frozenset("0123456789abcdef").issuperset(digits)
    )


def _readlink(dir_fd: int, name: str) -> str | None:
    try:
        return os.readlink(name, dir_fd=dir_fd)
    except OSError as error:
        if error.errno in (errno.EINVAL, errno.ENOENT):  # not a link, or nothing
            return None
        raise


def linked(dir_fd: int, stored: str) -> dict[str, bool]:
    """For .crt and .key: whether it is exactly certsync's link into the current generation."""
    return {s: _readlink(dir_fd, stored + s) == link_target(stored, s) for s in SUFFIXES}


def generation(dir_fd: int, stored: str) -> str | None:
    """The generation `..<stored>.data` points to, when it is exactly such a link."""
    target = _readlink(dir_fd, data_link(stored))
    return target if target is not None and is_generation(stored, target) else None


def _open_generation(dir_fd: int, name: str) -> int | None:
    try:
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
    except OSError as error:
        if error.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            return None
        raise


def read_pair(dir_fd: int, stored: str) -> tuple[FileState, FileState, str | None]:
    """mox's .crt and .key for `stored` (certsync's links read through to the generation's files,
    anything else as found), and the generation when both are certsync's links into it."""
    links = linked(dir_fd, stored)
    gen = generation(dir_fd, stored) if any(links.values()) else None
    gen_fd = _open_generation(dir_fd, gen) if gen is not None else None
    try:
        found = [
            read_file(gen_fd, stored + s)
            if gen_fd is not None and links[s]
            else read_file(dir_fd, stored + s)
            for s in SUFFIXES
        ]
    finally:
        if gen_fd is not None:
            os.close(gen_fd)
    whole = gen_fd is not None and all(links.values())
    return found[0], found[1], gen if whole else None


def read_generation(dir_fd: int, stored: str, gen: str) -> tuple[FileState, FileState] | None:
    """The pair in generation folder `gen` (None when there is no such folder)."""
    gen_fd = _open_generation(dir_fd, gen)
    if gen_fd is None:
        return None
    try:
        return read_file(gen_fd, stored + ".crt"), read_file(gen_fd, stored + ".key")
    finally:
        os.close(gen_fd)


def make_generation(dir_fd: int, stored: str, crt: FileState, key: FileState) -> str:
    """A new generation folder holding `crt` and `key` (files, each with its owner and mode),
    both fsynced, owned like them; its name."""
    name = f"..{stored}.g{os.urandom(GENERATION_DIGITS // 2).hex()}"
    os.mkdir(name, 0o700, dir_fd=dir_fd)
    gen_fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
    try:
        info = os.fstat(gen_fd)
        if info.st_uid != os.geteuid() or os.listdir(gen_fd):
            raise OSError(errno.EEXIST, "not the folder certsync just made", name)
        # owned like its files first: a crash while filling it never leaves a folder mox
        # cannot read
        os.fchown(gen_fd, crt.uid, crt.gid)
        put_entries(gen_fd, {stored + ".crt": crt, stored + ".key": key})
    finally:
        os.close(gen_fd)
    step(f"generation:{stored}")
    return name


def switch(dir_fd: int, stored: str, gen: str, uid: int, gid: int) -> None:
    """Point `..<stored>.data` at `gen`: one rename switches both files."""
    put_entries(dir_fd, {data_link(stored): FileState(LINK, None, gen, uid, gid, 0o777)})


def make_links(dir_fd: int, stored: str, uid: int, gid: int) -> None:
    """Make .crt and .key certsync's links into the current generation (by rename)."""
    links = linked(dir_fd, stored)
    put_entries(
        dir_fd,
        {
            stored + s: FileState(LINK, None, link_target(stored, s), uid, gid, 0o777)
            for s in SUFFIXES
            if not links[s]
        },
    )


def prepare(
    dir_fd: int, stored: str, old: tuple[FileState, FileState], uid: int, gid: int
) -> str | None:
    """Before a new pair is switched in: the generation holding mox's pair `old` (None when it
    is not one certsync can switch back to: links of someone else's, nothing).

    When .crt and .key are not yet both certsync's links (the first run, or a crash's leftovers),
    they become links first, into a generation holding a copy of what they hold when both are
    files: each rename then leaves a pair that belongs together."""
    if all(linked(dir_fd, stored).values()):
        before = generation(dir_fd, stored)
        if before is not None:
            return before
    if old[0].kind != FILE or old[1].kind != FILE:
        return None
    before = make_generation(dir_fd, stored, *old)
    switch(dir_fd, stored, before, uid, gid)
    make_links(dir_fd, stored, uid, gid)
    return before


def switch_to(
    dir_fd: int, stored: str, new: tuple[FileState, FileState], before_switch: Any = None
) -> str:
    """Make `new` mox's pair for `stored`: a new generation, switched in by one rename (and the
    links made when mox's pair was not files); the generation. `before_switch(gen)`: called once
    the generation is made, before the rename."""
    gen = make_generation(dir_fd, stored, *new)
    if before_switch is not None:
        before_switch(gen)
    switch(dir_fd, stored, gen, new[0].uid, new[0].gid)
    make_links(dir_fd, stored, new[0].uid, new[0].gid)
    return gen


def migrate(dir_fd: int, stored: str, crt: FileState, key: FileState) -> None:
    """Turn mox's regular files (holding exactly `crt` and `key`) into the layout, no restart
    needed: every step leaves the same pair."""
    gen = make_generation(dir_fd, stored, crt, key)
    switch(dir_fd, stored, gen, crt.uid, crt.gid)
    make_links(dir_fd, stored, crt.uid, crt.gid)


def clean(dir_fd: int, stored: str, keep: tuple[str, ...] = ()) -> list[str]:
    """Remove what a crash (or an earlier run) left for `stored`: staged files, generations other
    than the current one (and `keep`), the data link when neither file links through it.
    Returns what could not be removed (a folder of the mox user's making, say)."""
    links = linked(dir_fd, stored)
    current = generation(dir_fd, stored) if any(links.values()) else None
    problems = []
    for entry in os.listdir(dir_fd):
        try:
            if is_leftover_of(stored, entry) and entry != current and entry not in keep:
                _remove(dir_fd, entry)
        except OSError as error:
            problems.append(f"{entry}: {error.strerror}")
    if current is None and _readlink(dir_fd, data_link(stored)) is not None:
        try:
            os.unlink(data_link(stored), dir_fd=dir_fd)
        except FileNotFoundError:
            pass
    return problems


def entry_names(stored: str) -> tuple[str, ...]:
    """The names layout keeps for `stored` in mox's folder (each generation's aside)."""
    return (stored + ".crt", stored + ".key", data_link(stored))


def is_leftover_of(stored: str, entry: str) -> bool:
    """Whether `entry` of mox's folder is what a run or a crash leaves for `stored` (a staged
    file, a generation): clean removes those, but the current generation and `keep`."""
    return is_generation(stored, entry) or any(
        is_temp_name(entry, name) for name in entry_names(stored)
    )


def is_entry_of(stored: str, entry: str) -> bool:
    """Whether `entry` of mox's folder is one layout makes for `stored`, or a leftover of one."""
    return entry in entry_names(stored) or is_leftover_of(stored, entry)


def _remove(dir_fd: int, entry: str) -> None:
    """Unlink an entry; a folder: its entries (files and links, never followed) first."""
    info = os.stat(entry, dir_fd=dir_fd, follow_symlinks=False)
    if not stat.S_ISDIR(info.st_mode):
        os.unlink(entry, dir_fd=dir_fd)
        return
    remove_flat_folder(dir_fd, entry)
