"""Files in folders another user may own: never follow a symlink, replace atomically."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from certsync.host.errors import SymlinkedFolder
from certsync.host.files import (
    FILE,
    LINK,
    MAX_FILE_BYTES,
    MISSING,
    OTHER,
    FileState,
    NotTheCheckedFile,
    open_dir,
    put_entries,
    read_file,
    repair_owner_mode,
    writable_by_others,
)

UID, GID = os.getuid(), os.getgid()


def file_state(data: bytes, mode: int = 0o600) -> FileState:
    return FileState(FILE, data, None, UID, GID, mode)


def test_read_file_reads_a_regular_file(tmp_path, dir_fd):
    (tmp_path / "a.crt").write_bytes(b"data\n")
    (tmp_path / "a.crt").chmod(0o640)
    state = read_file(dir_fd, "a.crt")
    assert state == FileState(FILE, b"data\n", None, UID, GID, 0o640)
    assert state.exists


def test_read_file_of_a_missing_file(dir_fd):
    state = read_file(dir_fd, "missing.crt")
    assert state == FileState(MISSING) and not state.exists
    assert state.describe() == "nothing"


def test_read_file_does_not_follow_a_symlink(tmp_path, dir_fd):
    secret = tmp_path / "shadow"
    secret.write_bytes(b"root:secret\n")
    (tmp_path / "a.key").symlink_to(secret)
    state = read_file(dir_fd, "a.key")
    assert (state.kind, state.target, state.data) == (LINK, str(secret), None)
    assert state.exists
    assert state.describe() == f"a symlink to {secret}"


def test_a_symlink_target_is_described_escaped_and_kept_as_it_is(tmp_path, dir_fd):
    """The mox user chooses the target: described, it cannot add a line or a terminal escape;
    kept raw, a rollback puts the very same link back."""
    target = "../x\nmail.example.com: in sync: \x1b[32mok"
    (tmp_path / "a.crt").symlink_to(target)
    state = read_file(dir_fd, "a.crt")
    assert state.target == target
    assert state.describe() == "a symlink to ../x\\nmail.example.com: in sync: \\x1b[32mok"


def test_read_file_of_a_dangling_symlink(tmp_path, dir_fd):
    (tmp_path / "a.key").symlink_to(tmp_path / "nowhere")
    state = read_file(dir_fd, "a.key")
    assert (state.kind, state.target, state.data) == (LINK, str(tmp_path / "nowhere"), None)


def test_read_file_does_not_block_on_a_fifo(tmp_path, dir_fd):
    os.mkfifo(tmp_path / "a.crt")
    state = read_file(dir_fd, "a.crt")
    assert state == FileState(OTHER) and state.exists
    assert state.describe() == "something else than a file"


def test_read_file_does_not_read_a_file_larger_than_any_certificate(tmp_path, dir_fd):
    """A sparse file of any size costs the mox user nothing to make; root reads at most
    MAX_FILE_BYTES of it."""
    with open(tmp_path / "a.crt", "wb") as file:
        file.truncate(64 * MAX_FILE_BYTES)
    assert read_file(dir_fd, "a.crt") == FileState(OTHER)
    with open(tmp_path / "a.key", "wb") as file:
        file.truncate(MAX_FILE_BYTES)
    assert read_file(dir_fd, "a.key").data == bytes(MAX_FILE_BYTES)


def test_read_file_of_a_directory(tmp_path, dir_fd):
    (tmp_path / "a.crt").mkdir()
    assert read_file(dir_fd, "a.crt") == FileState(OTHER)


def test_put_entries_writes_data_and_mode(tmp_path, dir_fd):
    (tmp_path / "a.crt").write_bytes(b"old cert\n")
    put_entries(
        dir_fd,
        {"a.crt": file_state(b"new cert\n", 0o644), "a.key": file_state(b"new key\n")},
    )
    assert (tmp_path / "a.crt").read_bytes() == b"new cert\n"
    assert (tmp_path / "a.key").read_bytes() == b"new key\n"
    assert stat.S_IMODE((tmp_path / "a.crt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "a.key").stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.crt", "a.key"]  # no temp left


def test_put_entries_replaces_a_planted_symlink_without_touching_its_target(tmp_path, dir_fd):
    target = tmp_path / "outside" / "shadow"
    target.parent.mkdir()
    target.write_bytes(b"root:secret\n")
    target.chmod(0o640)
    before = target.stat()
    link = tmp_path / "a.key"
    link.symlink_to(target)

    put_entries(dir_fd, {"a.key": file_state(b"new key\n")})

    assert not link.is_symlink()
    assert link.is_file() and link.read_bytes() == b"new key\n"
    assert stat.S_IMODE(link.stat().st_mode) == 0o600
    after = target.stat()
    assert target.read_bytes() == b"root:secret\n"
    assert stat.S_IMODE(after.st_mode) == 0o640
    assert (after.st_uid, after.st_gid, after.st_ino) == (
        before.st_uid,
        before.st_gid,
        before.st_ino,
    )


def test_put_entries_ignores_a_symlink_planted_at_the_temporary_name(tmp_path, dir_fd):
    target = tmp_path / "outside"
    target.write_bytes(b"keep me\n")
    temp = tmp_path / f".a.key.certsync-{os.getpid()}.tmp"
    temp.symlink_to(target)
    put_entries(dir_fd, {"a.key": file_state(b"new key\n")})
    assert (tmp_path / "a.key").read_bytes() == b"new key\n"
    assert target.read_bytes() == b"keep me\n"
    assert not temp.exists() and not temp.is_symlink()


def test_put_entries_changes_nothing_when_staging_fails(tmp_path, dir_fd):
    (tmp_path / "a.crt").write_bytes(b"old cert\n")
    (tmp_path / "a.key").write_bytes(b"old key\n")
    # the second file cannot be staged: a folder sits at its temporary name
    blocker = tmp_path / f".a.key.certsync-{os.getpid()}.tmp"
    (blocker / "inside").mkdir(parents=True)
    with pytest.raises(OSError):
        put_entries(
            dir_fd,
            {"a.crt": file_state(b"new cert\n", 0o644), "a.key": file_state(b"new key\n")},
        )
    assert (tmp_path / "a.crt").read_bytes() == b"old cert\n"
    assert (tmp_path / "a.key").read_bytes() == b"old key\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["a.crt", "a.key", blocker.name])


def test_open_dir_opens_a_real_directory(tmp_path):
    (tmp_path / "sub").mkdir()
    fd = open_dir(str(tmp_path / "sub"))
    try:
        assert os.path.samestat(os.fstat(fd), (tmp_path / "sub").stat())
    finally:
        os.close(fd)


def test_open_dir_creates_the_last_component(tmp_path):
    fd = open_dir(str(tmp_path / "new"), create_mode=0o700)
    os.close(fd)
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700


@pytest.mark.parametrize("where", ["last", "middle"])
def test_open_dir_does_not_follow_a_symlink(tmp_path, where):
    real = tmp_path / "real"
    (real / "sub").mkdir(parents=True)
    (tmp_path / "link").symlink_to(real)
    path = tmp_path / "link" if where == "last" else tmp_path / "link" / "sub"
    with pytest.raises(OSError):
        os.close(open_dir(str(path)))


def test_open_dir_does_not_create_through_a_symlink(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(OSError):
        os.close(open_dir(str(tmp_path / "link" / "new"), create_mode=0o700))
    assert not (real / "new").exists()


@pytest.mark.parametrize("path", ["relative/dir", "/tmp/../etc", "/tmp/./x"])
def test_open_dir_refuses_relative_and_dot_paths(path):
    with pytest.raises(ValueError):
        open_dir(path)


def test_open_dir_of_a_file_fails(tmp_path: Path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        open_dir(str(tmp_path / "file"))


def test_open_dir_names_the_symlinked_folder(tmp_path):
    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(SymlinkedFolder) as caught:
        open_dir(str(tmp_path / "link" / "sub"), create_mode=0o700)
    assert str(caught.value) == f"{tmp_path / 'link'} is a symlink; refusing"
    assert isinstance(caught.value, OSError)
    assert not (tmp_path / "real" / "sub" / "sub").exists()


# --- put_entries: files, links and removals, as a rollback needs them --------------------------


def test_put_entries_puts_back_links_with_their_target_and_removes_what_was_not_there(
    tmp_path, dir_fd
):
    (tmp_path / "a.crt").write_bytes(b"new cert\n")
    (tmp_path / "a.key").write_bytes(b"new key\n")
    target = "../caddy/a.crt"  # relative, dangling here: a link is put back as it was, unread
    put_entries(
        dir_fd, {"a.crt": FileState(LINK, None, target, UID, GID), "a.key": FileState(MISSING)}
    )
    assert os.readlink(tmp_path / "a.crt") == target
    assert not (tmp_path / "a.key").exists()
    assert read_file(dir_fd, "a.crt").target == target
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.crt"]


def test_put_entries_removing_a_missing_file_is_no_error(tmp_path, dir_fd):
    put_entries(dir_fd, {"a.key": FileState(MISSING)})
    assert list(tmp_path.iterdir()) == []


def test_put_entries_leaves_no_staged_file_when_a_rename_fails(tmp_path, dir_fd, monkeypatch):
    real_rename = os.rename
    renamed: list[str] = []

    def rename_once(src, dst, **kwargs):
        if renamed:
            raise OSError(28, "No space left on device")
        renamed.append(dst)
        real_rename(src, dst, **kwargs)

    monkeypatch.setattr(os, "rename", rename_once)
    with pytest.raises(OSError, match="No space"):
        put_entries(dir_fd, {"a.crt": file_state(b"cert\n"), "a.key": file_state(b"key\n")})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.crt"]  # the staged key is gone


# --- repair_owner_mode: only the file whose contents were checked ------------------------------


def test_repair_owner_mode_sets_owner_and_mode(tmp_path, dir_fd, mox_ids):
    path = tmp_path / "a.key"
    path.write_bytes(b"key\n")
    path.chmod(0o644)
    uid, gid = mox_ids
    repair_owner_mode(dir_fd, "a.key", b"key\n", uid, gid, 0o600)
    info = path.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (*mox_ids, 0o600)


def test_repair_owner_mode_never_touches_a_hard_linked_file(tmp_path, dir_fd, mox_ids):
    uid, gid = mox_ids
    victim = tmp_path / "shadow"
    victim.write_bytes(b"key\n")  # the very bytes that were checked
    victim.chmod(0o600)
    os.link(victim, tmp_path / "a.key")
    with pytest.raises(NotTheCheckedFile, match="single link"):
        repair_owner_mode(dir_fd, "a.key", b"key\n", uid, gid, 0o644)
    info = victim.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, 0, 0o600)


def test_repair_owner_mode_never_touches_a_file_that_changed(tmp_path, dir_fd, mox_ids):
    uid, gid = mox_ids
    (tmp_path / "a.key").write_bytes(b"other\n")
    (tmp_path / "a.key").chmod(0o600)
    with pytest.raises(NotTheCheckedFile, match="changed"):
        repair_owner_mode(dir_fd, "a.key", b"key\n", uid, gid, 0o644)
    info = (tmp_path / "a.key").stat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (0, 0o600)


def test_repair_owner_mode_does_not_follow_a_symlink(tmp_path, dir_fd, mox_ids):
    uid, gid = mox_ids
    victim = tmp_path / "shadow"
    victim.write_bytes(b"key\n")
    victim.chmod(0o600)
    (tmp_path / "a.key").symlink_to(victim)
    with pytest.raises(OSError):
        repair_owner_mode(dir_fd, "a.key", b"key\n", uid, gid, 0o644)
    info = victim.stat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (0, 0o600)


# --- writable_by_others: who else can replace the mox binary -----------------------------------


def test_a_root_owned_binary_in_root_owned_folders_trusts_nobody(tmp_path):
    binary = tmp_path / "bin" / "mox"
    binary.parent.mkdir(mode=0o755)
    binary.write_bytes(b"#!/bin/sh\n")
    assert writable_by_others(str(binary)) == []


def test_who_can_replace_the_binary_is_named(tmp_path, mox_ids):
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    binary = home / "mox"
    binary.write_bytes(b"#!/bin/sh\n")
    os.chown(binary, *mox_ids)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    link = tmp_path / "mox-link"
    link.symlink_to(shared / "mox")
    (shared / "mox").write_bytes(b"#!/bin/sh\n")
    assert writable_by_others(str(binary)) == [f"{binary} is owned by mox"]
    assert f"{shared} is writable by every user" in writable_by_others(str(link))
    shared.chmod(0o1777)  # sticky, as /tmp: others cannot replace root's file in it
    assert writable_by_others(str(link)) == []


def test_a_folder_whose_acl_lets_another_user_write_is_named(tmp_path, mox_ids):
    from tests.unit.test_appdir import acl_letting_write

    folder = tmp_path / "bin"
    folder.mkdir(mode=0o755)
    binary = folder / "mox"
    binary.write_bytes(b"#!/bin/sh\n")
    acl_letting_write(folder, mox_ids[0])
    assert writable_by_others(str(binary)) == [
        f"{folder} has an access ACL (or one that cannot be read)"
    ]
