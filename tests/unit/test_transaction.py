"""The sync transaction against a fake mox that really serves TLS: install, restart, verify, and
the rollback that puts back exactly what was there, or says it could not."""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import stat
import threading
import time
from pathlib import Path

import pytest

from certsync.host import layout, transaction
from certsync.host.cli import run_sync
from certsync.host.files import FileState
from certsync.host.moxconf import Target
from certsync.host.outcome import Outcome
from certsync.host.output import Log
from certsync.host.settings import Config
from tests.unit.certs import DAY, LETSENCRYPT, NOW, Ca, Issued, key_of, write_caddy
from tests.unit.conftest import MakeFakeMox
from tests.unit.fakemox import FakeMox, accept_each, write_mox_files

NAME = "mail.example.com"
NOT_UTF8 = b"\xff\xfe invalid key \xc3\x28 for mail.example.com\n"


def entry_of(path: Path) -> tuple:
    info = path.lstat()
    what: str | bytes | None = None
    if stat.S_ISLNK(info.st_mode):
        what = os.readlink(path)
    elif stat.S_ISREG(info.st_mode):
        what = path.read_bytes()
    return stat.S_IFMT(info.st_mode), what, info.st_uid, info.st_gid, info.st_mode


@dataclasses.dataclass
class Host:
    """A host in a tmp dir: Caddy's new pair, mox serving its old one."""

    mox: FakeMox
    config: Config
    cert_dir: Path
    new: Issued
    old: Issued

    def sync(self, *names: str) -> list[Outcome]:
        log = Log(self.config.host, self.config.log_file)
        return run_sync(self.config, list(names or self.config.names), False, log)

    def entries(self) -> dict[str, tuple]:
        """What mox's folder holds, as a rollback must put it back: kind, contents or link
        target, owner, mode (not the inode: files come back by rename)."""
        return {entry: entry_of(self.cert_dir / entry) for entry in os.listdir(self.cert_dir)}

    def staged(self) -> list[str]:
        return [e for e in os.listdir(self.cert_dir) if ".certsync-" in e]

    def pair(self) -> tuple[bytes, bytes]:
        """mox's pair as mox reads it (following certsync's links)."""
        crt, key = (self.cert_dir / f"{NAME}{suffix}" for suffix in (".crt", ".key"))
        return crt.read_bytes(), key.read_bytes()

    def regular_files(self, mox_ids: tuple[int, int]) -> None:
        """mox's folder as certsync before its layout (or mox's setup) left it: regular files."""
        shutil.rmtree(self.cert_dir)
        write_mox_files(self.cert_dir, NAME, self.old.cert_pem, self.old.key_pem, mox_ids, False)


@pytest.fixture
def host(ca: Ca, fake_mox: MakeFakeMox, mox_ids, tmp_path: Path) -> Host:
    mox, config = fake_mox()
    new = ca.issue([NAME], key=key_of("ec256", 11), not_before=NOW - DAY)
    old = ca.issue([NAME], key=key_of("ec256", 12), not_before=NOW - 40 * DAY)
    write_caddy(tmp_path / "caddy", LETSENCRYPT, NAME, new.cert_pem, new.key_pem)
    cert_dir = tmp_path / "mox" / "certs"
    write_mox_files(cert_dir, NAME, old.cert_pem, old.key_pem, mox_ids)
    mox.start()
    assert mox.served(NAME) == old.sha256
    return Host(mox, config, cert_dir, new, old)


def test_install_restarts_once_and_mox_serves_the_new_certificate(host, mox_ids, tmp_path):
    (outcome,) = host.sync()

    assert (outcome.status, outcome.exit_status) == ("installed", 0), outcome.detail
    assert host.mox.served(NAME) == host.new.sha256
    assert host.mox.restarts == 1
    assert host.mox.config_test_calls == [f"-config {host.config.mox_config} config test"]
    crt, key = host.cert_dir / f"{NAME}.crt", host.cert_dir / f"{NAME}.key"
    assert (crt.read_bytes(), key.read_bytes()) == (host.new.cert_pem, host.new.key_pem)
    assert [(p.stat().st_uid, p.stat().st_gid, p.stat().st_mode & 0o777) for p in (crt, key)] == [
        (*mox_ids, 0o644),
        (*mox_ids, 0o600),
    ]
    (backup,) = (tmp_path / "backups").iterdir()
    assert (backup / f"{NAME}.key").read_bytes() == host.old.key_pem
    assert f"backup {backup}" in outcome.detail
    assert host.staged() == []


def test_a_second_sync_is_in_sync_and_does_not_restart(host):
    assert host.sync()[0].status == "installed"
    (outcome,) = host.sync()
    assert outcome.status == "in sync" and host.mox.restarts == 1


def test_one_restart_for_all_names_and_a_refused_name_does_not_stop_the_others(
    ca, fake_mox, mox_ids, tmp_path
):
    names = (NAME, "*.example.com", "mta-sts.example.com")
    mox, config = fake_mox(names)
    for name in names:
        old = ca.issue([name], not_before=NOW - 40 * DAY)
        write_mox_files(tmp_path / "mox" / "certs", name, old.cert_pem, old.key_pem, mox_ids)
    new = {name: ca.issue([name], not_before=NOW - DAY) for name in names[:2]}
    for name, issued in new.items():
        write_caddy(tmp_path / "caddy", LETSENCRYPT, name, issued.cert_pem, issued.key_pem)
    mox.start()

    outcomes = run_sync(config, list(names), False, Log(config.host, config.log_file))

    assert [(o.name, o.status) for o in outcomes] == [
        (NAME, "installed"),
        ("*.example.com", "installed"),
        ("mta-sts.example.com", "refused"),
    ]
    assert mox.restarts == 1
    assert [mox.served(name) for name in names[:2]] == [new[name].sha256 for name in names[:2]]
    assert max(o.exit_status for o in outcomes) == 1


# --- failures after the first file changed roll back -------------------------------------------


def test_a_failing_config_test_with_non_utf8_output_rolls_back(host, capsys):
    """What `mox config test` printed is neither shown nor logged: run as root, it may quote any
    file that mox.conf points to (a private key, too); the outcome says how to see it."""
    before = host.entries()
    host.mox.config_test(exit_status=1, output=NOT_UTF8)

    (outcome,) = host.sync()

    assert (outcome.status, outcome.exit_status) == ("rolled back", 3)
    config = host.config
    assert outcome.detail.startswith(
        f"mox config test failed (exit 1); to see why, run as root:"
        f" {config.mox_binary} -config {config.mox_config} config test; rolled back: "
    )
    log = Path(config.log_file)
    shown = capsys.readouterr()
    assert "invalid key" not in shown.out + shown.err + (log.read_text() if log.exists() else "")
    assert "mox was not restarted: it still serves them" in outcome.detail
    assert host.entries() == before
    assert host.mox.restarts == 0 and host.mox.served(NAME) == host.old.sha256
    assert host.staged() == []


def test_a_restart_command_that_does_not_split_into_words_rolls_back(host):
    """The settings check refuses such a command; should one get through, it is still an
    install that failed, rolled back with the reason, never a lock refusal."""
    before = host.entries()
    host.config.values["restart_command"] = "systemctl restart 'mox"

    (outcome,) = host.sync()

    assert (outcome.status, outcome.exit_status) == ("rolled back", 3), outcome.detail
    assert outcome.detail.startswith("unexpected error (ValueError: No closing quotation)")
    assert host.entries() == before
    assert host.mox.served(NAME) == host.old.sha256
    assert host.staged() == []


def test_an_unexpected_error_after_the_install_rolls_back(host, monkeypatch):
    before = host.entries()

    def broken(path: str) -> list[str]:
        raise RuntimeError("a bug")

    monkeypatch.setattr(transaction, "writable_by_others", broken)

    (outcome,) = host.sync()

    assert (outcome.status, outcome.exit_status) == ("rolled back", 3)
    assert outcome.detail.startswith("unexpected error (RuntimeError: a bug); rolled back:")
    assert host.entries() == before and host.staged() == []


def test_a_failed_restart_rolls_back_and_mox_serves_the_old_certificate(host):
    before = host.entries()
    host.mox.failing_restarts = 1

    (outcome,) = host.sync()

    assert (outcome.status, outcome.exit_status) == ("rolled back", 3), outcome.detail
    assert outcome.detail.startswith("restart failed (exit 1): Job for mox.service failed")
    assert outcome.detail.endswith("mox's previous files restored and served again")
    assert host.entries() == before
    assert host.mox.restarts == 2 and host.mox.served(NAME) == host.old.sha256


def test_mox_serving_another_certificate_after_the_restart_rolls_back(host, make_config, tmp_path):
    """The check goes to a port where something else answers: the new certificate is never
    seen there, so the install is undone."""
    other = FakeMox(tmp_path / "other", host.cert_dir, [NAME])
    try:
        other.start()  # serves the old pair, and is never restarted
        host.config.values.update(
            verify_address="127.0.0.1", verify_ports=[other.port], verify_timeout_seconds=1
        )
        before = host.entries()

        (outcome,) = host.sync()

        assert (outcome.status, outcome.exit_status) == ("rolled back", 3), outcome.detail
        assert outcome.detail.startswith("mox does not serve the expected certificate after 1 s:")
        assert f"serves sha256={host.old.sha256[:16]}" in outcome.detail
        assert host.entries() == before
    finally:
        other.close()


def test_a_rollback_restores_what_mox_served_its_files_not_a_stale_memory(host, ca, mox_ids):
    """mox served an older certificate than its files (they were copied by hand without a
    restart); after a failed install and the rollback's restart, mox serves its files again."""
    by_hand = ca.issue([NAME], key=key_of("ec256", 13), not_before=NOW - 20 * DAY)
    write_mox_files(host.cert_dir, NAME, by_hand.cert_pem, by_hand.key_pem, mox_ids)
    before = host.entries()
    host.mox.failing_restarts = 1

    (outcome,) = host.sync()

    assert (outcome.status, outcome.exit_status) == ("rolled back", 3), outcome.detail
    assert host.entries() == before
    assert host.mox.served(NAME) == by_hand.sha256


# --- a rollback puts back exactly what was there, or says it could not -------------------------


def test_a_rollback_puts_back_symlinks_with_their_targets(host, tmp_path, mox_ids):
    host.regular_files(mox_ids)
    handmade = tmp_path / "handmade"
    handmade.mkdir()
    (handmade / "old.crt").write_bytes(host.old.cert_pem)
    (handmade / "old.key").write_bytes(host.old.key_pem)
    for suffix in ("crt", "key"):
        link = host.cert_dir / f"{NAME}.{suffix}"
        link.unlink()
        link.symlink_to(handmade / f"old.{suffix}")
        os.lchown(link, *mox_ids)
    before = host.entries()
    host.mox.config_test(exit_status=1, output=b"config test failed\n")

    (outcome,) = host.sync()

    assert (outcome.status, outcome.exit_status) == ("rolled back", 3)
    assert host.entries() == before
    assert (handmade / "old.key").read_bytes() == host.old.key_pem  # the targets untouched


def test_a_hard_link_swapped_in_for_a_restored_symlink_is_never_chowned(
    host, tmp_path, mox_ids, monkeypatch
):
    """Rolling back to mox's own symlinks, the mox user renames a hard link to a root-owned file
    over each link just made (as it could with fs.protected_hardlinks=0): that file keeps its
    owner, and the run says the restore failed."""
    handmade = tmp_path / "handmade"
    handmade.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("root:secret\n")
    victim.chmod(0o600)
    for suffix in ("crt", "key"):
        link = host.cert_dir / f"{NAME}.{suffix}"
        link.unlink()
        link.symlink_to(handmade / f"old.{suffix}")
        os.lchown(link, *mox_ids)
        os.link(victim, host.cert_dir / f"planted.{suffix}")  # ready before the race
    host.mox.config_test(exit_status=1, output=b"config test failed\n")
    real_symlink, mox_folder = os.symlink, host.cert_dir.stat().st_ino

    def symlink_then_swap(src, dst, target_is_directory=False, *, dir_fd=None):
        real_symlink(src, dst, target_is_directory, dir_fd=dir_fd)
        in_mox_folder = os.fstat(dir_fd).st_ino == mox_folder
        suffix = str(dst).split(".")[-3]  # .<name>.<suffix>.certsync-<pid>.tmp
        if in_mox_folder and ".certsync-" in str(dst) and suffix in ("crt", "key"):
            os.rename(f"planted.{suffix}", dst, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)

    monkeypatch.setattr(os, "symlink", symlink_then_swap)

    (outcome,) = host.sync()

    info = victim.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, 0, 0o600)
    assert (outcome.status, outcome.exit_status) == ("restore failed", 4), outcome.detail
    assert host.staged() == []


@pytest.mark.parametrize("previous", ["no key", "another key"])
def test_a_rollback_never_restores_a_pair_that_does_not_load(host, mox_ids, previous):
    """mox's previous pair would not load (its key is missing, or not the certificate's), and the
    install fails: Caddy's pair, which mox can start with, is kept, and the run says so."""
    host.regular_files(mox_ids)
    key = host.cert_dir / f"{NAME}.key"
    if previous == "no key":
        key.unlink()
    else:
        key.write_bytes(host.new.key_pem)
    host.mox.config_test(exit_status=1, output=b"broken\n")

    (outcome,) = host.sync()

    assert (outcome.status, outcome.exit_status) == ("restore failed", 4)
    assert "mox's previous pair would not load (" in outcome.detail
    assert "kept Caddy's pair, the one mox can start with" in outcome.detail
    assert host.pair() == (host.new.cert_pem, host.new.key_pem)
    assert host.mox.restarts == 0


@pytest.mark.parametrize(
    ("restore", "says"),
    [
        ("raises", "restoring mox's previous files FAILED (Read-only file system)"),
        ("does nothing", "mox's previous files could not be put back as they were"),
    ],
)
def test_a_restore_that_fails_is_never_reported_as_restored(host, monkeypatch, restore, says):
    real = transaction.layout.switch
    installed: list[bool] = []

    def install_then_break(*args: object) -> None:
        if not installed:
            installed.append(True)
            real(*args)  # type: ignore[arg-type]
        elif restore == "raises":
            raise OSError(30, "Read-only file system")

    monkeypatch.setattr(transaction.layout, "switch", install_then_break)
    host.mox.config_test(exit_status=1, output=b"bad\n")

    (outcome,) = host.sync()

    assert (outcome.status, outcome.exit_status) == ("restore failed", 4)
    assert says in outcome.detail
    assert f"in the newest backup under {host.config.backup_dir}" in outcome.detail
    assert "restored" not in outcome.detail.replace("restoring", "")


def test_mox_not_coming_back_after_the_rollback_is_exit_4(host):
    host.mox.failing_restarts = 2

    (outcome,) = host.sync()

    assert (outcome.status, outcome.exit_status) == ("restore failed", 4)
    assert "mox's previous files restored, but after restarting mox: restart failed" in (
        outcome.detail
    )


def test_a_failed_install_leaves_no_staged_file_and_changes_nothing(host):
    """The switch's staging fails (a folder sits at its temporary name): the new generation,
    whose key mox does not use, is gone."""
    before = host.entries()
    blocker = host.cert_dir / f"...{NAME}.data.certsync-{os.getpid()}.tmp"
    (blocker / "inside").mkdir(parents=True)

    (outcome,) = host.sync()

    assert (outcome.status, outcome.exit_status) == ("failed", 3)
    assert outcome.detail.startswith("install failed (")
    assert outcome.detail.endswith("mox's files unchanged")
    blocker_entry = blocker.name
    after = host.entries()
    del after[blocker_entry]
    assert after == before
    assert host.staged() == [blocker_entry]
    assert host.mox.restarts == 0


# --- owner and mode repair never touches a file swapped in -------------------------------------


def test_a_hard_link_swapped_in_before_the_repair_is_never_chowned(host, monkeypatch, mox_ids):
    """mox's files equal Caddy's with a wrong mode: a repair. Right after the plan read
    `<name>.key`, the mox user swaps in a hard link to a root-owned 0600 file holding the same
    bytes. That file keeps its owner and mode; mox gets Caddy's pair anew."""
    write_mox_files(host.cert_dir, NAME, host.new.cert_pem, host.new.key_pem, mox_ids)
    (host.cert_dir / f"{NAME}.key").chmod(0o640)
    victim = host.cert_dir.parent / "victim"
    victim.write_bytes(host.new.key_pem)
    victim.chmod(0o600)
    real_read = layout.read_file

    def read_then_swap(dir_fd: int, name: str) -> FileState:
        state = real_read(dir_fd, name)
        if name == f"{NAME}.key":
            os.unlink(name, dir_fd=dir_fd)
            os.link(victim, name, dst_dir_fd=dir_fd)
        return state

    monkeypatch.setattr(layout, "read_file", read_then_swap)

    (outcome,) = host.sync()

    info = victim.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, 0, 0o600)
    assert victim.read_bytes() == host.new.key_pem
    assert outcome.status == "installed", outcome.detail
    key = host.cert_dir / f"{NAME}.key"
    assert key.read_bytes() == host.new.key_pem and key.stat().st_nlink == 1
    assert (key.stat().st_uid, stat.S_IMODE(key.stat().st_mode)) == (mox_ids[0], 0o600)
    assert host.mox.served(NAME) == host.new.sha256


def test_a_failed_restart_only_leaves_mox_s_files_and_says_so(host, mox_ids):
    """mox's files already equal Caddy's, mox serves the old pair: a restart, which fails."""
    write_mox_files(host.cert_dir, NAME, host.new.cert_pem, host.new.key_pem, mox_ids)
    before = host.entries()
    host.mox.failing_restarts = 1

    (outcome,) = host.sync()

    assert (outcome.status, outcome.exit_status) == ("failed", 3)
    assert outcome.detail.startswith("restart failed (exit 1): Job for mox.service failed")
    assert outcome.detail.endswith("; mox's files unchanged")
    assert host.entries() == before and host.mox.served(NAME) == host.old.sha256
    assert list(Path(host.config.backup_dir).iterdir()) == []  # nothing was backed up


def test_a_rollback_restores_a_file_that_had_set_id_bits_without_them(host, mox_ids):
    """The mox user may set any mode on its files; certsync never writes set-id bits, and a
    rollback that puts the file back without them is a rollback, not a failed restore."""
    host.regular_files(mox_ids)
    crt = host.cert_dir / f"{NAME}.crt"
    crt.chmod(0o4644)
    host.mox.config_test(exit_status=1, output=b"broken\n")

    (outcome,) = host.sync()

    assert (outcome.status, outcome.exit_status) == ("rolled back", 3), outcome.detail
    assert stat.S_IMODE(crt.stat().st_mode) == 0o644
    assert crt.read_bytes() == host.old.cert_pem


def test_the_check_after_a_restart_ends_at_its_timeout_however_many_ports_stall(host, mox_ids):
    """mox.conf may name many addresses, each answered by something that never finishes: the
    check still ends when its time is up (1 s here), not after 5 s per port."""

    done = threading.Event()

    def stall(conn: socket.socket) -> None:
        conn.sendall(b"220-slow\r\n")
        done.wait(30)

    listeners = [socket.create_server(("127.0.0.1", 0)) for _ in range(6)]
    for listener in listeners:
        accept_each(listener, stall)
    targets = [Target("127.0.0.1", s.getsockname()[1], "smtp") for s in listeners]
    host.config.values["verify_timeout_seconds"] = 1
    sync = transaction.Sync(host.config, False, Log(host.config.host, host.config.log_file))
    started = time.monotonic()
    try:
        with pytest.raises(transaction.StepFailed, match="after 1 s"):
            sync._verify({NAME: ("0" * 64, targets)})
    finally:
        done.set()
        for listener in listeners:
            listener.close()
    assert time.monotonic() - started < 3


# case -> whether certsync makes the folder mox's (else every name is refused, nothing changes)
FOLDER_CASES = {
    "empty": True,
    "not empty": False,
    "not empty, in a folder of root's": True,
    "missing, in a folder of root's": True,
    "left empty by a crash before it was mox's, in a folder of root's": True,
    "empty, in a folder of root's": False,
    "holding other files, in a folder of root's": False,
    "holding what a crash left, in a folder of root's": True,
    "holding a folder named almost as a generation, in a folder of root's": False,
    "missing, in a setgid folder of root's": True,
    "left empty with no permission, another user's, in a folder of root's": False,
    "not empty, in a folder of root's that its group can write": False,
}


@pytest.mark.parametrize("case", FOLDER_CASES)
def test_a_folder_of_roots_in_place_of_mox_s_folder_is_made_mox_s_only_when_safe(
    host, mox_ids, case
):
    """mox owns the folder above its certificate folder, so it can rename any folder of root's
    there into that place: certsync makes such a folder mox's only when it is empty (as mox could
    make it itself); otherwise every name is refused and the folder keeps its owner and mode. In
    a folder that only root can write, an admin made it: it becomes mox's when it holds mox's
    certificate files of the host's names and nothing else, or when certsync made it (empty, no
    permission at all, as a crash leaves it): certsync_mox_cert_dir naming /var/tmp, /etc or
    /etc/ssl/private by mistake must not hand mox what they hold."""
    stored = host.config.names[0]
    mode = 0o755
    if case.startswith(("empty", "left empty", "missing")):
        shutil.rmtree(host.cert_dir)
        host.cert_dir.mkdir()
    if case.startswith("left empty by a crash"):
        mode = 0o000  # as certsync makes it, until it makes it mox's
    if case.startswith("holding other files"):
        (host.cert_dir / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
        (host.cert_dir / "ssl-cert-snakeoil.key").write_text("not mox's\n")
        (host.cert_dir / "\x1b[2Jcron.d").mkdir()
        (host.cert_dir / "z-other.example.com.crt").write_text("another name's\n")
    if case.startswith("holding what a crash left"):
        for made in (f"{stored}.crt", f"{stored}.key", f"..{stored}.data"):
            (host.cert_dir / f".{made}.certsync-123.tmp").write_text("staged\n")
        (host.cert_dir / f"..{stored}.g{'0' * 16}").mkdir()
    if case.startswith("holding a folder named almost"):
        (host.cert_dir / f"..{stored}.gXYZ").mkdir()
    if case.startswith("left empty with no permission"):
        mode = 0o000
    parent_owner = (0, 0) if "of root's" in case else mox_ids
    os.chown(host.cert_dir.parent, *parent_owner)
    if "that its group can write" in case:
        os.chown(host.cert_dir.parent, 0, 50)  # root:staff 0775
        host.cert_dir.parent.chmod(0o775)
    if "setgid" in case:
        host.cert_dir.parent.chmod(0o2755)
    os.chown(host.cert_dir, 65534 if "another user's" in case else 0, 0)
    host.cert_dir.chmod(mode)
    if case.startswith("missing"):
        host.cert_dir.rmdir()
    before = host.entries() if host.cert_dir.exists() else None

    (outcome,) = host.sync()

    info = host.cert_dir.stat()
    if not FOLDER_CASES[case]:
        assert (outcome.status, outcome.exit_status) == ("refused", 1)
        owner = 65534 if "another user's" in case else 0
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (owner, 0, mode)
        assert host.entries() == before and host.mox.restarts == 0
    else:
        assert outcome.status == "installed", outcome.detail
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (*mox_ids, 0o700)
        assert not host.staged() and not [e for e in host.entries() if e.endswith(".g" + "0" * 16)]
    fix = "set certsync_mox_cert_dir to the folder mox.conf names; if it is that folder, chown mox:"
    fix += " it"
    if case == "not empty":
        assert outcome.detail == (
            f"{host.cert_dir} is root's, not mox's, and not empty, in a folder that mox can"
            f" write: certsync hands mox such a folder only when it is empty (chown mox: it, or"
            f" set certsync_mox_cert_dir)"
        )
    elif case == "empty, in a folder of root's":
        assert outcome.detail == (
            f"{host.cert_dir} is root's, not mox's, and empty: certsync makes such a folder"
            f" mox's only when it made it ({fix})"
        )
    elif case.startswith("holding other files"):
        assert outcome.detail == (
            f"{host.cert_dir} is root's, not mox's, and holds files other than mox's certificate"
            f" files for {stored} (\\x1b[2Jcron.d, passwd, ssl-cert-snakeoil.key and 1 more):"
            f" certsync hands mox such a folder only when it holds nothing else ({fix})"
        )


@pytest.mark.parametrize(
    ("entry", "names", "mox_s"),
    [
        ("wildcard_.example.com.crt", ["*.example.com"], True),
        ("..wildcard_.example.com.data", ["*.example.com"], True),
        (".wildcard_.example.com.key.certsync-7.tmp", ["*.example.com"], True),
        ("*.example.com.crt", ["*.example.com"], False),
        ("mail.example.com.key", ["a.example.com", "mail.example.com"], True),
        ("mail.example.com.pem", ["mail.example.com"], False),
        (".mail.example.com.key.certsync-x.tmp", ["mail.example.com"], False),
        ("..mail.example.com.g" + "0" * 15, ["mail.example.com"], False),
        ("mail.example.com.crt", [], False),
        ("..mail.example.com.g" + "0123456789abcdef", ["mail.example.com"], True),
        ("..mail.example.com.g" + "0123456789ABCDEF", ["mail.example.com"], False),
        ("..example.com.g" + "0" * 16, ["mail.example.com"], False),
        ("mail.example.com.crt", ["example.com"], False),
        ("...mail.example.com.data.certsync-7.tmp", ["mail.example.com"], True),
        (".mail.example.com.key.certsync-\u0661\u0662.tmp", ["mail.example.com"], False),
    ],
)
def test_what_counts_as_mox_s_certificate_files_of_the_names(entry, names, mox_s):
    from certsync.host.owners import _certificate_entry

    assert _certificate_entry(entry, names) is mox_s


# --- SIGTERM / SIGINT (a shutdown): stop where nothing is half-done -----------------------------


@pytest.fixture
def stop_at(monkeypatch):
    """stop_at(step): the run gets SIGTERM (its handler's flag) when it reaches `step`
    ("start": before anything)."""
    from certsync.host import output

    monkeypatch.setattr(output, "STOP", [])
    real = transaction.step

    def arm(at: str) -> None:
        def step(name: str) -> None:
            if name == at:
                output.STOP.append("interrupted by SIGTERM")
            real(name)

        monkeypatch.setattr(transaction, "step", step)
        if at == "start":
            output.STOP.append("interrupted by SIGTERM")

    return arm


def backoff_record(host: Host) -> dict:
    from certsync.host import backoff, records

    return records.load(host.config, backoff.BACKOFF_FILE)


def cron_sync(host: Host) -> list[Outcome]:
    log = Log(host.config.host, host.config.log_file)
    return run_sync(host.config, list(host.config.names), False, log, cron=True)


def test_sigterm_before_the_switch_changes_nothing_and_backs_nothing_off(host, stop_at):
    before = host.entries()
    stop_at("start")

    (outcome,) = cron_sync(host)

    assert (outcome.status, outcome.exit_status) == ("interrupted", 1), outcome.detail
    assert outcome.detail == "interrupted by SIGTERM; nothing changed"
    assert host.entries() == before and host.mox.restarts == 0
    assert backoff_record(host) == {}


def test_sigterm_during_the_backup_changes_nothing(host, stop_at):
    before = host.entries()
    stop_at("backup")

    (outcome,) = cron_sync(host)

    assert outcome.detail == "interrupted by SIGTERM; nothing changed"
    assert host.entries() == before and host.mox.restarts == 0 and host.mox.config_test_calls == []


def test_sigterm_after_the_switch_before_the_restart_switches_back(host, stop_at):
    before = host.entries()
    stop_at("config-tested")

    (outcome,) = cron_sync(host)

    assert (outcome.status, outcome.exit_status) == ("interrupted", 1), outcome.detail
    assert "switched back: nothing changed" in outcome.detail
    assert host.entries() == before and host.mox.restarts == 0
    assert host.mox.served(NAME) == host.old.sha256
    assert backoff_record(host) == {}


def test_sigterm_after_the_restart_lets_the_sync_finish(host, stop_at):
    stop_at("restarted")
    assert cron_sync(host)[0].status == "installed"
    assert host.mox.served(NAME) == host.new.sha256


def test_sigterm_after_a_restart_that_fails_records_no_back_off(host, stop_at):
    host.mox.failing_restarts = 1
    stop_at("restart")

    (outcome,) = cron_sync(host)

    assert outcome.status == "rolled back", outcome.detail
    assert backoff_record(host) == {}


def test_sigterm_while_waiting_for_the_lock_gives_up_at_once(host, stop_at):
    import fcntl

    os.makedirs(os.path.dirname(host.config.lock_file), mode=0o700, exist_ok=True)
    fd = os.open(host.config.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        stop_at("start")
        started = time.monotonic()
        (outcome,) = host.sync()
    finally:
        os.close(fd)
    assert time.monotonic() - started < 5
    assert outcome.status == "refused"
    assert outcome.detail.startswith("interrupted by SIGTERM while waiting for")
    assert host.mox.restarts == 0


# --- a failure before a name's switch leaves that name's files as they were ----------------------

OTHER = "mta-sts.example.com"


def test_a_failed_install_of_a_second_name_says_its_files_are_unchanged(
    ca, fake_mox, mox_ids, tmp_path, monkeypatch
):
    mox, config = fake_mox((NAME, OTHER))
    olds = {}
    for name in (NAME, OTHER):
        olds[name] = ca.issue([name], not_before=NOW - 40 * DAY)
        write_mox_files(
            tmp_path / "mox" / "certs", name, olds[name].cert_pem, olds[name].key_pem, mox_ids
        )
        new = ca.issue([name], not_before=NOW - DAY)
        write_caddy(tmp_path / "caddy", LETSENCRYPT, name, new.cert_pem, new.key_pem)
    mox.start()
    real = layout.make_generation

    def full_for_the_second(dir_fd, stored, crt, key):  # type: ignore[no-untyped-def]
        if stored == OTHER:
            raise OSError(28, "No space left on device")
        return real(dir_fd, stored, crt, key)

    monkeypatch.setattr(layout, "make_generation", full_for_the_second)

    outcomes = run_sync(config, [NAME, OTHER], False, Log(config.host, config.log_file))

    assert [(o.name, o.status) for o in outcomes] == [(NAME, "rolled back"), (OTHER, "failed")]
    assert outcomes[1].detail.endswith("its files unchanged"), outcomes[1].detail
    assert max(o.exit_status for o in outcomes) == 3
    for name in (NAME, OTHER):
        assert (tmp_path / "mox" / "certs" / f"{name}.crt").read_bytes() == olds[name].cert_pem
    assert mox.restarts == 0


# --- a crash between the switch and the restart ---------------------------------------------------


class Killed(BaseException):
    """SIGKILL at a step: nothing after it runs (no handler, no rollback)."""


def test_a_crash_between_switch_and_restart_keeps_the_previous_pair_to_roll_back_to(
    host, monkeypatch
):
    before = host.entries()
    real = transaction.step

    def killed_at_the_restart(name: str) -> None:
        if name == "restart":
            raise Killed
        real(name)

    monkeypatch.setattr(transaction, "step", killed_at_the_restart)
    with pytest.raises(Killed):
        host.sync()
    monkeypatch.setattr(transaction, "step", real)
    assert host.pair() == (host.new.cert_pem, host.new.key_pem)  # switched, not restarted
    assert host.mox.served(NAME) == host.old.sha256
    host.mox.config_test(exit_status=1, output=b"bad\n")  # the next run's change fails

    (outcome,) = host.sync()

    # the pair mox served is still there to go back to: the next run rolls back to it
    assert (outcome.status, outcome.exit_status) == ("rolled back", 3), outcome.detail
    assert host.pair() == (host.old.cert_pem, host.old.key_pem)
    assert host.entries() == before
    assert host.mox.served(NAME) == host.old.sha256

    host.mox.config_test(exit_status=0)
    assert host.sync()[0].status == "installed"
    assert host.mox.served(NAME) == host.new.sha256
    gens = [e for e in os.listdir(host.cert_dir) if layout.is_generation(NAME, e)]
    assert len(gens) == 1  # the previous generation, no longer needed, is gone


def test_an_interrupted_sync_starts_no_watcher_and_exits_1(host, stop_at, monkeypatch, tmp_path):
    import signal

    from certsync.host import cli, watch
    from tests.unit.hostrun import write_config

    started: list[str] = []
    monkeypatch.setattr(watch, "start", lambda config, path: started.append(path))
    path = str(write_config(host.config, tmp_path / "config.json"))
    handlers = {s: signal.getsignal(s) for s in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)}
    try:
        assert cli.sync_command({"config": path}) == 0  # (a run not interrupted)
        assert started == [path]
        del started[:]
        stop_at("start")
        assert cli.sync_command({"config": path, "force": True}) == 1
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    assert started == []
