"""mox's pair as links into a generation folder (certsync/host/layout.py): one rename switches
both files; certsync reads only its own links, and what a crash leaves is removed."""

from __future__ import annotations

import os
from pathlib import Path

from certsync.host import layout
from certsync.host.files import FILE, LINK, FileState

STORED = "mail.example.com"
UID, GID = os.getuid(), os.getgid()


def pair(tag: bytes) -> tuple[FileState, FileState]:
    return (
        FileState(FILE, b"cert " + tag, None, UID, GID, 0o644),
        FileState(FILE, b"key " + tag, None, UID, GID, 0o600),
    )


def read(dir_fd: int) -> tuple[FileState, FileState, str | None]:
    return layout.read_pair(dir_fd, STORED)


def mox_reads(folder: Path) -> tuple[bytes, bytes]:
    """What mox (as root, following links) reads at the paths mox.conf names."""
    return (folder / f"{STORED}.crt").read_bytes(), (folder / f"{STORED}.key").read_bytes()


def test_regular_files_become_links_and_one_rename_switches_both(tmp_path, dir_fd):
    (tmp_path / f"{STORED}.crt").write_bytes(b"cert old")
    (tmp_path / f"{STORED}.key").write_bytes(b"key old")
    old = read(dir_fd)
    assert old[2] is None and old[0].data == b"cert old"

    before = layout.prepare(dir_fd, STORED, old[:2], UID, GID)
    assert before is not None and read(dir_fd)[2] == before
    assert mox_reads(tmp_path) == (b"cert old", b"key old")  # each rename kept the pair

    gen = layout.switch_to(dir_fd, STORED, pair(b"new"))
    crt, key, current = read(dir_fd)
    assert (crt.data, key.data, current) == (b"cert new", b"key new", gen)
    assert (crt.kind, crt.mode, key.mode) == (FILE, 0o644, 0o600)
    assert mox_reads(tmp_path) == (b"cert new", b"key new")
    assert os.readlink(tmp_path / f"{STORED}.crt") == f"..{STORED}.data/{STORED}.crt"

    layout.switch(dir_fd, STORED, before, UID, GID)  # a rollback: one rename
    assert mox_reads(tmp_path) == (b"cert old", b"key old")
    assert layout.clean(dir_fd, STORED) == []
    assert sorted(os.listdir(tmp_path)) == sorted(
        [f"{STORED}.crt", f"{STORED}.key", f"..{STORED}.data", before]
    )


def test_links_that_are_not_exactly_certsyncs_are_read_as_links_never_followed(tmp_path, dir_fd):
    secret = tmp_path / "elsewhere"
    secret.mkdir()
    (secret / f"{STORED}.crt").write_bytes(b"not mox's")
    (secret / f"{STORED}.key").write_bytes(b"not mox's")
    gen = layout.switch_to(dir_fd, STORED, pair(b"new"))
    # the mox user points the data link at a folder of its choice, with the same link text
    os.unlink(tmp_path / f"..{STORED}.data")
    os.symlink(str(secret), tmp_path / f"..{STORED}.data")
    crt, key, current = read(dir_fd)
    assert (crt.kind, key.kind, current) == (LINK, LINK, None)
    assert crt.data is None and crt.target == f"..{STORED}.data/{STORED}.crt"
    # or a generation folder replaced by a link to another one
    os.unlink(tmp_path / f"..{STORED}.data")
    os.symlink(gen, tmp_path / f"..{STORED}.data")
    os.rename(tmp_path / gen, tmp_path / "moved")
    os.symlink(str(secret), tmp_path / gen)
    crt, key, current = read(dir_fd)
    assert (crt.kind, current) == (LINK, None)


def test_what_a_crash_leaves_is_removed_and_the_pair_in_use_kept(tmp_path, dir_fd):
    gen = layout.switch_to(dir_fd, STORED, pair(b"in use"))
    half = layout.make_generation(dir_fd, STORED, *pair(b"never switched to"))
    staged = f".{STORED}.key.certsync-4242.tmp"
    (tmp_path / staged).write_bytes(b"a staged key")
    other = tmp_path / "unrelated.crt"
    other.write_bytes(b"not certsync's")

    assert layout.clean(dir_fd, STORED) == []

    assert not (tmp_path / half).exists() and not (tmp_path / staged).exists()
    assert other.exists() and (tmp_path / gen).is_dir()
    assert mox_reads(tmp_path) == (b"cert in use", b"key in use")


def test_clean_removes_only_the_leftovers_of_its_own_name(tmp_path, dir_fd):
    """Another name's (a prefix or suffix of this one, a wildcard) generations, staged files and
    links stay, and so do names that only look like a staged file."""
    others = ["example.com", "a.mail.example.com", "wildcard_.example.com"]
    for other in others:
        layout.switch_to(dir_fd, other, pair(other.encode()))
        layout.make_generation(dir_fd, other, *pair(b"never switched to"))
        (tmp_path / f".{other}.key.certsync-7.tmp").write_bytes(b"staged")
    looks_staged = [f".{STORED}.key.certsync-\u0661.tmp", f".{STORED}.key.certsync-.tmp"]
    for entry in looks_staged:
        (tmp_path / entry).write_bytes(b"not a pid")
    kept = sorted(os.listdir(tmp_path))
    gen = layout.switch_to(dir_fd, STORED, pair(b"in use"))
    half = layout.make_generation(dir_fd, STORED, *pair(b"never switched to"))
    staged = f"...{STORED}.data.certsync-12.tmp"
    os.symlink("anywhere", tmp_path / staged)

    assert layout.clean(dir_fd, STORED, keep=(half,)) == []
    assert (tmp_path / half).is_dir() and not (tmp_path / staged).is_symlink()
    assert layout.clean(dir_fd, STORED) == []
    mine = [f"{STORED}.crt", f"{STORED}.key", f"..{STORED}.data", gen]
    assert sorted(os.listdir(tmp_path)) == sorted(kept + mine)
    for other in others:
        assert layout.read_pair(dir_fd, other)[0].data == b"cert " + other.encode()


def test_a_data_link_nothing_uses_is_removed(tmp_path, dir_fd):
    layout.switch_to(dir_fd, STORED, pair(b"x"))
    for suffix in (".crt", ".key"):  # mox's files replaced by regular files (by hand)
        os.unlink(tmp_path / f"{STORED}{suffix}")
        (tmp_path / f"{STORED}{suffix}").write_bytes(b"by hand")
    assert layout.clean(dir_fd, STORED) == []
    assert sorted(os.listdir(tmp_path)) == [f"{STORED}.crt", f"{STORED}.key"]


def test_half_migrated_files_are_read_through_the_link_that_is_certsyncs(tmp_path, dir_fd):
    """Killed between the two renames of a migration: .crt is certsync's link, .key still the
    file; both hold the same pair, which reads whole."""
    (tmp_path / f"{STORED}.crt").write_bytes(b"cert old")
    (tmp_path / f"{STORED}.key").write_bytes(b"key old")
    gen = layout.make_generation(dir_fd, STORED, *read(dir_fd)[:2])
    layout.switch(dir_fd, STORED, gen, UID, GID)
    os.unlink(tmp_path / f"{STORED}.crt")
    os.symlink(f"..{STORED}.data/{STORED}.crt", tmp_path / f"{STORED}.crt")
    assert layout.clean(dir_fd, STORED) == []  # the generation is in use: kept
    crt, key, current = read(dir_fd)
    assert (crt.data, key.data, current) == (b"cert old", b"key old", None)


def test_a_generation_folder_is_owned_like_its_files_before_it_is_filled(
    tmp_path, dir_fd, monkeypatch
):
    # a crash while the folder is being filled must not leave a folder mox cannot read
    owners = []
    real = layout.put_entries

    def put(fd, entries):  # type: ignore[no-untyped-def]
        info = os.fstat(fd)
        owners.append((info.st_uid, info.st_gid))
        return real(fd, entries)

    monkeypatch.setattr(layout, "put_entries", put)
    crt, key = pair(b"new")
    other = (UID + 1, GID + 1)
    layout.make_generation(
        dir_fd,
        STORED,
        crt.replace(uid=other[0], gid=other[1]),
        key.replace(uid=other[0], gid=other[1]),
    )
    assert owners == [other]
