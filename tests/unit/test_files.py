"""Files in folders another user may own: never follow a symlink, replace atomically."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

UID, GID = os.getuid(), os.getgid()


def test_read_file_reads_a_regular_file(cs, tmp_path, dir_fd):
    (tmp_path / "a.crt").write_bytes(b"data\n")
    (tmp_path / "a.crt").chmod(0o640)
    state = cs.read_file(dir_fd, "a.crt")
    assert state.data == b"data\n"
    assert state.is_regular and state.exists
    assert (state.uid, state.gid, state.mode) == (UID, GID, 0o640)


def test_read_file_of_a_missing_file(cs, dir_fd):
    state = cs.read_file(dir_fd, "missing.crt")
    assert state.data is None and not state.exists and not state.is_regular


def test_read_file_does_not_follow_a_symlink(cs, tmp_path, dir_fd):
    secret = tmp_path / "shadow"
    secret.write_bytes(b"root:secret\n")
    (tmp_path / "a.key").symlink_to(secret)
    state = cs.read_file(dir_fd, "a.key")
    assert state.is_regular is False
    assert state.exists is True
    assert state.data is None


def test_read_file_of_a_dangling_symlink(cs, tmp_path, dir_fd):
    (tmp_path / "a.key").symlink_to(tmp_path / "nowhere")
    state = cs.read_file(dir_fd, "a.key")
    assert state.exists and not state.is_regular and state.data is None


def test_read_file_does_not_block_on_a_fifo(cs, tmp_path, dir_fd):
    os.mkfifo(tmp_path / "a.crt")
    state = cs.read_file(dir_fd, "a.crt")
    assert state.exists and not state.is_regular and state.data is None


def test_read_file_of_a_directory(cs, tmp_path, dir_fd):
    (tmp_path / "a.crt").mkdir()
    state = cs.read_file(dir_fd, "a.crt")
    assert state.exists and not state.is_regular and state.data is None


def test_replace_files_writes_data_and_mode(cs, tmp_path, dir_fd):
    (tmp_path / "a.crt").write_bytes(b"old cert\n")
    cs.replace_files(
        dir_fd,
        {"a.crt": (b"new cert\n", UID, GID, 0o644), "a.key": (b"new key\n", UID, GID, 0o600)},
    )
    assert (tmp_path / "a.crt").read_bytes() == b"new cert\n"
    assert (tmp_path / "a.key").read_bytes() == b"new key\n"
    assert stat.S_IMODE((tmp_path / "a.crt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "a.key").stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.crt", "a.key"]  # no temp left


def test_replace_files_replaces_a_planted_symlink_without_touching_its_target(cs, tmp_path, dir_fd):
    target = tmp_path / "outside" / "shadow"
    target.parent.mkdir()
    target.write_bytes(b"root:secret\n")
    target.chmod(0o640)
    before = target.stat()
    link = tmp_path / "a.key"
    link.symlink_to(target)

    cs.replace_files(dir_fd, {"a.key": (b"new key\n", UID, GID, 0o600)})

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


def test_replace_files_ignores_a_symlink_planted_at_the_temporary_name(cs, tmp_path, dir_fd):
    target = tmp_path / "outside"
    target.write_bytes(b"keep me\n")
    temp = tmp_path / f".a.key.certsync-{os.getpid()}.tmp"
    temp.symlink_to(target)
    cs.replace_files(dir_fd, {"a.key": (b"new key\n", UID, GID, 0o600)})
    assert (tmp_path / "a.key").read_bytes() == b"new key\n"
    assert target.read_bytes() == b"keep me\n"
    assert not temp.exists() and not temp.is_symlink()


def test_replace_files_changes_nothing_when_staging_fails(cs, tmp_path, dir_fd):
    (tmp_path / "a.crt").write_bytes(b"old cert\n")
    (tmp_path / "a.key").write_bytes(b"old key\n")
    # the second file cannot be staged: a folder sits at its temporary name
    blocker = tmp_path / f".a.key.certsync-{os.getpid()}.tmp"
    (blocker / "inside").mkdir(parents=True)
    with pytest.raises(OSError):
        cs.replace_files(
            dir_fd,
            {"a.crt": (b"new cert\n", UID, GID, 0o644), "a.key": (b"new key\n", UID, GID, 0o600)},
        )
    assert (tmp_path / "a.crt").read_bytes() == b"old cert\n"
    assert (tmp_path / "a.key").read_bytes() == b"old key\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["a.crt", "a.key", blocker.name])


def test_open_dir_opens_a_real_directory(cs, tmp_path):
    (tmp_path / "sub").mkdir()
    fd = cs.open_dir(str(tmp_path / "sub"))
    try:
        assert os.path.samestat(os.fstat(fd), (tmp_path / "sub").stat())
    finally:
        os.close(fd)


def test_open_dir_creates_the_last_component(cs, tmp_path):
    fd = cs.open_dir(str(tmp_path / "new"), create_mode=0o700)
    os.close(fd)
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700


@pytest.mark.parametrize("where", ["last", "middle"])
def test_open_dir_does_not_follow_a_symlink(cs, tmp_path, where):
    real = tmp_path / "real"
    (real / "sub").mkdir(parents=True)
    (tmp_path / "link").symlink_to(real)
    path = tmp_path / "link" if where == "last" else tmp_path / "link" / "sub"
    with pytest.raises(OSError):
        os.close(cs.open_dir(str(path)))


def test_open_dir_does_not_create_through_a_symlink(cs, tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(OSError):
        os.close(cs.open_dir(str(tmp_path / "link" / "new"), create_mode=0o700))
    assert not (real / "new").exists()


@pytest.mark.parametrize("path", ["relative/dir", "/tmp/../etc", "/tmp/./x"])
def test_open_dir_refuses_relative_and_dot_paths(cs, path):
    with pytest.raises(ValueError):
        cs.open_dir(path)


def test_open_dir_of_a_file_fails(cs, tmp_path: Path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        cs.open_dir(str(tmp_path / "file"))
