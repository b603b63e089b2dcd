"""The installed zipapp's unpacked folder: made root-only, imported from only when every level
is root's, not writable by others, not a link, with the zipapp's own sources; otherwise the
zipapp itself runs (and root's own folder is made anew)."""

from __future__ import annotations

import os
import shutil
import stat
import struct
import subprocess
from pathlib import Path

import pytest

from certsync import program
from tests.unit.hostrun import HOST_PYTHON, ISOLATED, run_host_program

PACKAGE = program.HOST_PACKAGE
EVIL = "import pathlib; pathlib.Path({marker!r}).write_text('imported')\n"


@pytest.fixture
def installed(pyz: Path, tmp_path: Path) -> tuple[Path, Path]:
    """(the zipapp in a folder of its own, the path of its unpacked folder)."""
    folder = tmp_path / "lib"
    folder.mkdir(mode=0o755)
    copy = folder / "certsync.pyz"
    copy.write_bytes(pyz.read_bytes())
    return copy, Path(program.unpacked_folder(str(folder)))


def run_ok(pyz: Path) -> None:
    result = run_host_program(pyz, "--help")
    assert result.returncode == 0, result.stderr


def test_the_folder_is_made_root_only_and_imported_from(installed):
    pyz, app = installed
    run_ok(pyz)
    assert stat.S_IMODE(app.stat().st_mode) == 0o700
    sources = list((app / PACKAGE).glob("*.py"))
    assert sources and {stat.S_IMODE(p.stat().st_mode) for p in sources} == {0o600}
    assert list((app / PACKAGE / "__pycache__").glob("cli.*.pyc"))  # its bytecode with it


@pytest.mark.parametrize("change", ["contents", "group writable", "extra module"])
def test_root_s_folder_changed_is_made_anew(installed, change):
    pyz, app = installed
    run_ok(pyz)
    cli = app / PACKAGE / "cli.py"
    original = cli.read_bytes()
    if change == "contents":
        cli.write_bytes(original + b"\nraise SystemExit(9)\n")
    elif change == "group writable":
        cli.chmod(0o620)
    else:
        (app / PACKAGE / "extra.py").write_text("")

    run_ok(pyz)

    assert cli.read_bytes() == original and stat.S_IMODE(cli.stat().st_mode) == 0o600
    assert not (app / PACKAGE / "extra.py").exists()


@pytest.mark.parametrize("planted", ["link", "folder of mox"])
def test_a_folder_root_does_not_own_is_never_imported_nor_removed(
    installed, tmp_path, mox_ids, planted
):
    pyz, app = installed
    evil = tmp_path / "evil"
    marker = tmp_path / "marker"
    (evil / PACKAGE).mkdir(parents=True)
    for name in ("__init__.py", "cli.py", "appdir.py"):
        (evil / PACKAGE / name).write_text(EVIL.format(marker=str(marker)))
    for path in (evil, evil / PACKAGE, *(evil / PACKAGE).iterdir()):
        os.chown(path, *mox_ids)
    if planted == "link":
        app.symlink_to(evil)
    else:
        evil.rename(app)

    run_ok(pyz)

    assert not marker.exists()  # the zipapp itself ran
    assert app.is_symlink() if planted == "link" else app.stat().st_uid == mox_ids[0]


def imported_from(folder: Path, result: subprocess.CompletedProcess[str]) -> bool:
    """Whether the host program's `cli` module was imported from `folder` (python3 -v)."""
    return f"{folder}/{PACKAGE}/cli.py" in result.stderr or (
        f"{folder}/{PACKAGE}/__pycache__/cli." in result.stderr
    )


def bootstrap(app: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The state read's command: the program carried in it, the unpacked folder named (run with
    python3 -v: its imports on stderr)."""
    command = [HOST_PYTHON, *ISOLATED, "-v", "-c", program.BOOTSTRAP]
    command += [*program.bootstrap_arguments(str(app)), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_the_state_read_imports_a_usable_folder_and_never_a_changed_one(installed, tmp_path):
    pyz, app = installed
    run_ok(pyz)
    result = bootstrap(app, "--help")
    assert result.returncode == 0
    assert imported_from(app, result)

    marker = tmp_path / "marker"
    cli = app / PACKAGE / "cli.py"
    cli.write_text(EVIL.format(marker=str(marker)) + cli.read_text())
    result = bootstrap(app, "--help")
    assert result.returncode == 0
    assert not marker.exists() and not imported_from(app, result)  # the carried program ran


def installed_read(app: Path, *args: str, verbose: bool = True) -> subprocess.CompletedProcess[str]:
    """The state read's command on a host that has this version: nothing carried (`verbose`:
    run with python3 -v, its imports on stderr)."""
    command = [HOST_PYTHON, *ISOLATED, *(["-v"] if verbose else []), "-c", program.INSTALLED]
    command.append(str(app))
    command.append(program.source_shape())
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_the_installed_read_runs_the_unpacked_folder(installed):
    pyz, app = installed
    run_ok(pyz)

    result = installed_read(app, "--help")

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: certsync.pyz COMMAND [OPTIONS]")
    assert imported_from(app, result)


def test_the_folders_bytecode_is_written_with_it_and_never_after(installed):
    # written before the folder is renamed into place (on disk with it): a power loss cannot
    # leave a torn one, which python3 would load as it is
    pyz, app = installed
    run_ok(pyz)
    cache = app / PACKAGE / "__pycache__"
    sources = {path.stem for path in (app / PACKAGE).glob("*.py")}
    assert {path.name.split(".")[0] for path in cache.glob("*.pyc")} == sources
    (next(cache.glob("cli.*.pyc"))).unlink()

    assert installed_read(app, "--help").stdout == program.NOT_INSTALLED + "\n"
    assert bootstrap(app, "--help").returncode == 0

    assert not list(cache.glob("cli.*.pyc"))  # no command wrote one into the folder
    run_ok(pyz)  # the zipapp's own run makes the folder anew, its bytecode with it
    assert list(cache.glob("cli.*.pyc"))


def test_a_folder_without_this_python3_s_bytecode_is_made_anew(installed):
    # python3 upgraded (3.11 to 3.13): the folder's bytecode is another version's, unused
    pyz, app = installed
    run_ok(pyz)
    cache = app / PACKAGE / "__pycache__"
    tag = next(cache.glob("cli.*.pyc")).name.split(".")[1]  # the hosts' python3's
    for compiled in cache.glob("*.pyc"):
        compiled.rename(cache / compiled.name.replace(f".{tag}.", ".cpython-30."))

    result = installed_read(app, "--help")
    assert (result.returncode, result.stdout) == (0, program.NOT_INSTALLED + "\n"), result.stderr
    run_ok(pyz)
    result = installed_read(app, "--help")
    assert result.returncode == 0 and imported_from(app, result), result.stderr
    assert list(cache.glob(f"cli.{tag}.pyc"))


def test_without_the_folder_the_installed_read_says_so_and_runs_nothing(installed):
    _, app = installed  # the zipapp never ran: no folder

    result = installed_read(app, "--help", verbose=False)

    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        program.NOT_INSTALLED + "\n",
        "",
    )


@pytest.mark.parametrize("change", ["torn", "missing module", "extra module", "changed module"])
def test_a_torn_or_changed_folder_is_never_imported_by_the_installed_read(
    installed, tmp_path, change
):
    pyz, app = installed
    run_ok(pyz)
    marker = tmp_path / "marker"
    package = app / PACKAGE
    shutil.rmtree(package / "__pycache__")
    if change == "torn":  # what a power loss leaves of a file whose data was not on disk
        (package / "cli.py").write_bytes(b"")
    elif change == "missing module":
        (package / "statecache.py").unlink()
    elif change == "extra module":
        (package / "extra.py").write_text(EVIL.format(marker=str(marker)))
    else:
        cli = package / "cli.py"
        cli.write_text(EVIL.format(marker=str(marker)) + cli.read_text())

    result = installed_read(app, "--help")

    assert (result.returncode, result.stdout) == (0, program.NOT_INSTALLED + "\n"), result.stderr
    assert not marker.exists()
    assert not imported_from(app, result)  # nothing imported from it but appdir


@pytest.mark.parametrize("planted", ["link", "folder of mox", "bytecode folder of mox"])
def test_a_folder_root_does_not_own_is_never_imported_by_the_installed_read(
    installed, tmp_path, mox_ids, planted
):
    pyz, app = installed
    marker = tmp_path / "marker"
    if planted == "bytecode folder of mox":
        run_ok(pyz)
        cache = app / PACKAGE / "__pycache__"
        shutil.rmtree(cache)
        cache.mkdir()
        os.chown(cache, *mox_ids)
    else:  # this version's sources, the mox user's, some its own of the same sizes
        evil = tmp_path / "evil"
        (evil / PACKAGE).mkdir(parents=True)
        own = EVIL.format(marker=str(marker)).encode()
        for name, data in program._sources().items():
            if name in ("__init__.py", "appdir.py", "cli.py"):
                data = own + b"#" * (len(data) - len(own) - 1) + b"\n"
            (evil / PACKAGE / name).write_bytes(data)
        for path in (evil, *evil.rglob("*")):
            os.chown(path, *mox_ids)
        if planted == "link":
            app.symlink_to(evil)
        else:
            evil.rename(app)

    result = installed_read(app, "--help")

    assert (result.returncode, result.stdout) == (0, program.NOT_INSTALLED + "\n"), result.stderr
    assert not marker.exists()


@pytest.mark.parametrize("above", ["owned by mox", "writable by every user", "group writable"])
def test_a_folder_above_that_another_user_can_rename_keeps_root_from_importing(
    installed, tmp_path, mox_ids, above
):
    # the mox user could rename the folder that holds the unpacked one and put its own in place
    pyz, app = installed
    run_ok(pyz)
    holder = tmp_path / "holder"
    holder.mkdir()
    (tmp_path / "lib").rename(holder / "lib")  # the zipapp and its unpacked folder, one deeper
    pyz, app = holder / "lib" / pyz.name, holder / "lib" / app.name
    if above == "owned by mox":
        os.chown(holder, *mox_ids)
    elif above == "writable by every user":
        holder.chmod(0o777)
    else:
        os.chown(holder, 0, mox_ids[1])
        holder.chmod(0o775)

    result = installed_read(app, "--help")
    assert (result.returncode, result.stdout) == (0, program.NOT_INSTALLED + "\n"), result.stderr
    assert not imported_from(app, result)
    result = bootstrap(app, "--help")
    assert result.returncode == 0 and not imported_from(app, result), result.stderr


def test_a_link_above_that_only_root_can_change_is_followed_to_the_real_folder(installed, tmp_path):
    pyz, app = installed
    run_ok(pyz)
    (tmp_path / "linked").symlink_to(tmp_path / "lib")
    real = app
    app = tmp_path / "linked" / app.name

    result = installed_read(app, "--help")
    assert result.returncode == 0 and imported_from(real, result), result.stderr
    result = bootstrap(app, "--help")
    assert result.returncode == 0 and imported_from(real, result), result.stderr


def test_a_sticky_folder_above_is_no_bar(installed, tmp_path):
    # nobody but root can rename root's entries of a sticky folder (as /tmp)
    pyz, app = installed
    run_ok(pyz)
    tmp_path.chmod(0o1777)

    result = installed_read(app, "--help")
    assert result.returncode == 0 and imported_from(app, result), result.stderr


def test_the_folder_is_unpacked_from_the_bytes_that_named_it(tmp_path, mox_ids):
    # a deploy may replace certsync.pyz between the run's read of it and the unpack: the folder
    # named after the bytes read holds their sources, never the new file's
    from certsync.host import appdir

    folder = tmp_path / "lib"
    folder.mkdir(mode=0o755)
    (folder / "certsync.pyz").write_bytes(b"another version")
    app = program.unpacked_folder(str(folder))

    found = appdir.unpacked(
        program.zipapp(), app, program.tree_sha256(), str(folder / "certsync.pyz")
    )

    assert found == app
    assert appdir.usable(app, program.tree_sha256()) == app


def acl_letting_write(path: Path, uid: int, kind: str = "access") -> None:
    """A POSIX ACL on the folder `path` (root's, mode 0775 with it) with an entry
    `user:<uid>:rwx`: the group bits show the mask, so only the ACL tells that this user may
    write there; `kind` "default": what is made in the folder gets it."""

    def entry(tag: int, perm: int, ident: int = 0xFFFFFFFF) -> bytes:
        return struct.pack("<HHI", tag, perm, ident)

    # version 2; user::rwx, user:<uid>:rwx, group::r-x, mask::rwx, other::r-x
    data = struct.pack("<I", 2) + entry(1, 7) + entry(2, 7, uid) + entry(4, 5)
    os.setxattr(path, f"system.posix_acl_{kind}", data + entry(0x10, 7) + entry(0x20, 5))


def test_a_folder_above_whose_acl_lets_another_user_write_keeps_root_from_importing(
    installed, tmp_path, mox_ids
):
    pyz, app = installed
    run_ok(pyz)
    acl_letting_write(tmp_path, mox_ids[0])
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o775 and tmp_path.stat().st_gid == 0

    result = installed_read(app, "--help")
    assert (result.returncode, result.stdout) == (0, program.NOT_INSTALLED + "\n"), result.stderr
    result = bootstrap(app, "--help")
    assert result.returncode == 0 and not imported_from(app, result), result.stderr


def test_a_link_on_the_way_that_another_user_can_replace_keeps_root_from_importing(
    installed, tmp_path, mox_ids
):
    pyz, app = installed
    run_ok(pyz)
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, *mox_ids)
    (theirs / "lib").symlink_to(tmp_path / "lib")  # the mox user may point it anywhere

    result = installed_read(theirs / "lib" / app.name, "--help")
    assert (result.returncode, result.stdout) == (0, program.NOT_INSTALLED + "\n"), result.stderr


def test_a_folder_above_that_fails_is_neither_removed_nor_unpacked_again(
    installed, tmp_path, mox_ids
):
    # a root:staff 2775 /usr/local of an old Debian: every run would otherwise remake it
    from certsync.host import appdir

    pyz, app = installed
    run_ok(pyz)
    os.chown(tmp_path, 0, mox_ids[1])
    tmp_path.chmod(0o2775)
    cli = app / PACKAGE / "cli.py"
    before = cli.stat()

    assert appdir.unpacked(pyz.read_bytes(), str(app), program.tree_sha256(), str(pyz)) is None
    run_ok(pyz)  # the zipapp itself runs

    assert (cli.stat().st_ino, cli.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_bytes_of_another_version_never_replace_a_folder(installed, tmp_path):
    # a zipapp replaced between the program's start and its read of the file: another tree
    from certsync.host import appdir

    pyz, app = installed
    run_ok(pyz)
    cli = app / PACKAGE / "cli.py"
    before = cli.stat()
    other = tmp_path / "other"
    other.mkdir()

    digest = program.tree_sha256()
    assert appdir.unpacked(b"not this version", str(app), digest, str(pyz)) == str(app)
    assert appdir.unpacked(pyz.read_bytes(), str(other / app.name), "0" * 64, str(pyz)) is None

    assert cli.stat().st_ino == before.st_ino
    assert not (other / app.name).exists()


def test_other_versions_folders_are_removed_a_day_after_this_one_was_put_in_place(
    installed, monkeypatch
):
    # a run of the version this one replaced may still import from its folder, lazily
    import time

    from certsync.host import appdir

    pyz, app = installed
    run_ok(pyz)
    older = app.parent / (program.APP_PREFIX + "0" * 16)
    older.mkdir()
    killed = app.parent / ".unpacking-abcdef"
    killed.mkdir()
    data, digest = pyz.read_bytes(), program.tree_sha256()

    assert appdir.unpacked(data, str(app), digest, str(pyz)) == str(app)
    assert older.exists() and killed.exists()

    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + appdir.UNPACKING_STALE_SECONDS + 1)
    assert appdir.unpacked(data, str(app), digest, str(pyz)) == str(app)
    assert older.exists() and not killed.exists()

    monkeypatch.setattr(time, "time", lambda: now + appdir.STALE_SECONDS + 1)
    assert appdir.unpacked(data, str(app), digest, str(pyz)) == str(app)
    assert not older.exists() and app.exists()

    older.mkdir()  # a run of this version while a deploy has put another one in place
    pyz.write_bytes(b"the next version")
    assert appdir.unpacked(data, str(app), digest, str(pyz)) == str(app)
    assert older.exists()


@pytest.mark.parametrize("holder", ["writable by another group", "sticky"])
def test_a_folder_holding_it_that_is_not_root_s_alone_is_not_remade_at_every_run(
    installed, mox_ids, holder
):
    from certsync.host import appdir

    pyz, app = installed
    run_ok(pyz)
    if holder == "writable by another group":
        os.chown(app.parent, 0, mox_ids[1])
    app.parent.chmod(0o775 if holder == "writable by another group" else 0o1777)
    cli = app / PACKAGE / "cli.py"
    before = cli.stat()

    for _ in range(2):
        assert appdir.unpacked(pyz.read_bytes(), str(app), program.tree_sha256(), str(pyz)) is None
    result = installed_read(app, "--help")
    assert (result.returncode, result.stdout) == (0, program.NOT_INSTALLED + "\n"), result.stderr

    assert (cli.stat().st_ino, cli.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_a_folder_holding_it_that_root_s_group_may_write_is_used(installed):
    # as the deploy's check of who can replace the program (files.writable_by_others) has it
    pyz, app = installed
    app.parent.chmod(0o775)  # root:root
    run_ok(pyz)

    result = installed_read(app, "--help")
    assert result.returncode == 0 and imported_from(app, result), result.stderr


def test_a_default_acl_above_leaves_the_folder_root_s_alone(installed, mox_ids):
    # the ACL's default entries override the umask: the unpack sets the modes itself
    pyz, app = installed
    acl_letting_write(app.parent, mox_ids[0], kind="default")
    run_ok(pyz)

    result = installed_read(app, "--help")
    assert result.returncode == 0 and imported_from(app, result), result.stderr
    modes = {stat.S_IMODE(p.stat().st_mode) for p in (app / PACKAGE).rglob("*")}
    assert modes <= {0o600, 0o700}, modes
