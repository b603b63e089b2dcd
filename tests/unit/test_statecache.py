"""The state read's cached answer (statecache.py): on a host found in sync, the next reads answer
from the record of that check while nothing it depends on changed, and never say `in sync`
where the full read would not: the record is written, the world is changed on disk (files, mox's
process, time), and the read is compared with a full read of the same world."""

from __future__ import annotations

import json
import mmap
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from certsync import program
from certsync.host import statecache
from certsync.host.cli import run_sync
from certsync.host.output import Log
from certsync.host.settings import Config
from certsync.host.state import read_state
from tests.unit.certs import DAY, HOUR, NOW, cert_pem, key_of
from tests.unit.conftest import MakeFakeMox
from tests.unit.fakemox import FakeMox, write_mox_files
from tests.unit.hostrun import HOST_PYTHON, ISOLATED, run_host_program
from tests.unit.test_parity import CASES, NAME, World

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def answered(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each state read answered from the record."""
    found: list[bool] = []
    real = statecache.answer

    def spy(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)
        found.append(result is not None)
        return result

    monkeypatch.setattr(statecache, "answer", spy)
    return found


def record_path(config: Config) -> Path:
    return Path(config.lock_file).parent / statecache.RECORD


def full_read(config: Config, now: Any = None) -> dict[str, Any]:
    """The state read with no record to answer from."""
    record_path(config).unlink(missing_ok=True)
    return read_state(config, [], False, False, now)


def comparable(state: dict[str, Any]) -> dict[str, Any]:
    """The state, but why a mox that serves nothing closed the connection (reset, or EOF: the
    two reads may see either), in the served error and in the detail that quotes it."""
    state = json.loads(json.dumps(state))
    for entry in state["names"].values():
        if entry.get("served") and entry["served"]["error"] is not None:
            entry["served"]["error"] = "no answer"
            entry["detail"] = entry["detail"].partition("checked ports")[0] or entry["detail"]
        entry["warnings"] = [w.partition(": ")[0] for w in entry["warnings"]]
    return state


def in_sync_world(
    ca: Any,
    fake_mox: MakeFakeMox,
    mox_ids: Any,
    tmp_path: Path,
    submission: bool = True,
    record: bool = True,
    **settings: Any,
) -> tuple[FakeMox, World, dict[str, Any]]:
    """A host a sync left in sync (mox restarted on Caddy's pair, certsync's folders and records
    made; mox on IMAPS and, with `submission`, SMTP submission), then read once: the record is
    there (unless not `record`)."""
    mox, config = fake_mox(submission=submission, **settings)
    world = World.made(ca, tmp_path, mox_ids, config)
    world.caddy(world.caddys.cert_pem, world.caddys.key_pem)
    mox.start()
    (outcome,) = run_sync(config, [NAME], False, Log(config.host, config.log_file))
    assert outcome.status == "installed", outcome.detail
    mox.new_process()
    first = read_state(config, [], False, False)
    assert first["names"][NAME]["action"] == "in sync"
    assert record_path(config).exists() is record
    return mox, world, first


def test_an_unchanged_in_sync_host_is_answered_from_the_record(
    ca, fake_mox, mox_ids, tmp_path, answered
):
    _, world, first = in_sync_world(ca, fake_mox, mox_ids, tmp_path)

    again = read_state(world.config, [], False, False)

    assert answered == [False, True]
    assert again == first
    info = record_path(world.config).stat()
    assert (info.st_uid, info.st_mode & 0o777) == (0, 0o600)


def test_force_and_all_ports_always_read_in_full(ca, fake_mox, mox_ids, tmp_path, answered):
    _, world, _ = in_sync_world(ca, fake_mox, mox_ids, tmp_path)

    read_state(world.config, [], True, False)
    ports = read_state(world.config, [], False, True)

    assert answered == [False]  # the first read's; the forced and all-ports ones never ask
    assert "served_all" in ports["names"][NAME]


def _renewed_in_caddy(mox: FakeMox, w: World) -> None:
    renewed = w.ca.issue([NAME], key=key_of("ec256", 40), not_before=NOW - HOUR)
    w.caddy(renewed.cert_pem, renewed.key_pem)


def _mox_files_replaced(mox: FakeMox, w: World) -> None:
    write_mox_files(w.cert_dir, NAME, w.old.cert_pem, w.old.key_pem, w.mox_ids)


def _same_bytes_rewritten(mox: FakeMox, w: World) -> None:
    write_mox_files(w.cert_dir, NAME, w.caddys.cert_pem, w.caddys.key_pem, w.mox_ids)


def _key_mode(mox: FakeMox, w: World) -> None:
    os.chmod(w.cert_dir / f"{NAME}.key", 0o644)  # follows the links to the generation's key


def _mox_restarted_on_other_files(mox: FakeMox, w: World) -> None:
    """mox restarted while its files held another pair, and the pair put back in place since."""
    crt, key = (w.cert_dir / f"{NAME}{s}" for s in (".crt", ".key"))
    saved = crt.read_bytes(), key.read_bytes()
    _mox_files_replaced(mox, w)
    mox.new_process()
    write_mox_files(w.cert_dir, NAME, *saved, w.mox_ids)


def _other_listener(mox: FakeMox, w: World) -> None:
    """Another service on another address, on mox's port: not what is checked."""
    import socket

    mox.other = socket.create_server(("127.0.0.2", mox.port))  # type: ignore[attr-defined]


def _mox_config_edited(mox: FakeMox, w: World) -> None:
    with open(mox.mox_config, "a") as file:
        file.write("# edited\n")


def _record_not_roots_alone(mox: FakeMox, w: World) -> None:
    record_path(w.config).chmod(0o644)


def _record_forged(mox: FakeMox, w: World) -> None:
    """A record of another host's check (its fingerprint does not match)."""
    path = record_path(w.config)
    record = json.loads(path.read_bytes())
    record["fingerprint"] = ["not this host"]
    path.write_text(json.dumps(record))


def _mox_hung(mox: FakeMox, w: World) -> None:
    """mox up but serving nothing (hung, stopped): its listening sockets stay, the kernel still
    accepts connections, and nothing is said on them."""
    with mox._lock:
        mox._contexts = {}


def _mox_user_renumbered(mox: FakeMox, w: World) -> None:
    """The record of a check when the mox user had other ids (a directory service's answer,
    not /etc/passwd's file)."""
    path = record_path(w.config)
    record = json.loads(path.read_bytes())
    record["mox_ids"] = [os.getuid() + 12345, os.getgid() + 12345]
    path.write_text(json.dumps(record))


def _installed_record_changed(mox: FakeMox, w: World) -> None:
    (Path(w.config.lock_file).parent / statecache.INSTALLED).write_text("{}")


# (case, whether the read may answer from the record, what is changed after the record was written)
CHANGES: list[tuple[str, bool, Callable[[FakeMox, World], None]]] = [
    ("nothing", True, lambda mox, w: None),
    ("Caddy renewed", False, _renewed_in_caddy),
    ("mox's files replaced by the mox user", False, _mox_files_replaced),
    ("mox's files rewritten, same bytes", False, _same_bytes_rewritten),
    ("mox's key's mode", False, _key_mode),
    ("mox restarted", False, lambda mox, w: mox.new_process()),
    ("mox killed", False, lambda mox, w: mox.close()),
    ("another address's listener on mox's port", True, _other_listener),
    ("mox restarted on other files, files put back", False, _mox_restarted_on_other_files),
    ("mox.conf edited", False, _mox_config_edited),
    ("the record not root's alone", False, _record_not_roots_alone),
    ("the record forged", False, _record_forged),
    ("certsync's record of installed certificates", False, _installed_record_changed),
    ("mox hung, its sockets open", False, _mox_hung),
    ("the mox user's ids other than the record's", False, _mox_user_renumbered),
]


@pytest.mark.parametrize(
    ("cached", "change"), [c[1:] for c in CHANGES], ids=[c[0] for c in CHANGES]
)
def test_a_change_after_the_record_means_the_full_read(
    ca, fake_mox, mox_ids, tmp_path, answered, cached, change
):
    mox, world, _ = in_sync_world(ca, fake_mox, mox_ids, tmp_path)
    change(mox, world)

    read = read_state(world.config, [], False, False)
    full = full_read(world.config)

    assert answered[1] is cached
    assert comparable(read) == comparable(full)


def test_a_certificate_rewritten_through_mmap_means_the_full_read(
    ca, fake_mox, mox_ids, tmp_path, answered
):
    """The mox user (owner of the files) maps mox's certificate shared and writes to it before
    the record: a page already written to takes more writes with no new mtime or ctime, and
    inode and size stay."""
    _, world, _ = in_sync_world(ca, fake_mox, mox_ids, tmp_path)
    crt = world.cert_dir / f"{NAME}.crt"  # the link, followed to the generation's file
    with open(crt, "r+b") as file, mmap.mmap(file.fileno(), 0) as mapped:
        mapped[0:1] = mapped[0:1]  # the page's first write: mtime and ctime move now
        recorded = read_state(world.config, [], False, False)  # a full read, a new record
        before = os.stat(crt)
        at = mapped[:].index(b"\n") + 5  # in the base64
        mapped[at : at + 1] = b"A" if mapped[at : at + 1] != b"A" else b"B"
        after = os.stat(crt)

        read = read_state(world.config, [], False, False)
        full = full_read(world.config)

    assert recorded["names"][NAME]["action"] == "in sync"
    assert [before.st_ino, before.st_size] == [after.st_ino, after.st_size]
    assert answered[2] is False
    assert comparable(read) == comparable(full)
    assert read["names"][NAME]["action"] != "in sync"


def test_no_plaintext_port_no_record(ca, fake_mox, mox_ids, tmp_path, answered):
    """mox checked on IMAPS only: no greeting tells a hung mox from a serving one, so every read
    is a full one."""
    _, world, first = in_sync_world(ca, fake_mox, mox_ids, tmp_path, submission=False, record=False)

    again = read_state(world.config, [], False, False)

    assert answered == [False, False]
    assert again == first


def test_a_required_trusted_chain_means_the_full_read(ca, fake_mox, mox_ids, tmp_path, answered):
    """The chain check depends on the intermediates' dates and the system's CA store: no
    record."""
    (tmp_path / "trusted.pem").write_bytes(cert_pem(ca.root))
    trusted: dict[str, Any] = {
        "require_trusted_chain": True,
        "trusted_ca_file": str(tmp_path / "trusted.pem"),
    }
    _, world, first = in_sync_world(ca, fake_mox, mox_ids, tmp_path, record=False, **trusted)

    again = read_state(world.config, [], False, False)

    assert answered == [False, False]
    assert again == first


def test_the_state_caches_staged_file_is_cleaned(ca, fake_mox, mox_ids, tmp_path):
    """A crash between staging the record and renaming it leaves `.<record>.certsync-PID.tmp`:
    the next sync removes it."""
    from certsync.host.records import clean_staged

    _, world, _ = in_sync_world(ca, fake_mox, mox_ids, tmp_path)
    staged = Path(world.config.lock_file).parent / f".{statecache.RECORD}.certsync-4242.tmp"
    staged.write_bytes(b"{}")

    clean_staged(world.config)

    assert not staged.exists()
    assert record_path(world.config).exists()


# (case, the time of the read after the check: a function of the world)
TIMES: list[tuple[str, Callable[[World], Any]]] = [
    # Caddy's certificate (issued by Ca.issue: 60 days) comes within the 24 h minimum validity
    ("Caddy's certificate within the minimum validity", lambda w: NOW + 59 * DAY + HOUR),
    ("mox's certificate expired", lambda w: NOW + 61 * DAY),
    ("a day after the check", lambda w: NOW + DAY + HOUR),
    ("before the check (the clock set back)", lambda w: NOW - DAY),
]


@pytest.mark.parametrize("when", [c[1] for c in TIMES], ids=[c[0] for c in TIMES])
def test_time_passing_a_threshold_means_the_full_read(
    ca, fake_mox, mox_ids, tmp_path, answered, when
):
    _, world, _ = in_sync_world(ca, fake_mox, mox_ids, tmp_path)
    now = when(world)

    read = read_state(world.config, [], False, False, now)
    full = full_read(world.config, now)

    assert answered[1] is False
    assert comparable(read) == comparable(full)


def test_a_threshold_not_reached_keeps_the_record(ca, fake_mox, mox_ids, tmp_path, answered):
    """The control of the test above: an hour later, nothing passed; the record answers."""
    _, world, first = in_sync_world(ca, fake_mox, mox_ids, tmp_path)

    read = read_state(world.config, [], False, False, NOW + HOUR)

    assert answered == [False, True]
    assert read == first


@pytest.mark.parametrize(
    ("action", "settings", "make"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_every_starting_state_made_after_the_record_reads_as_the_full_read(
    ca, fake_mox: MakeFakeMox, mox_ids, tmp_path, answered, action, settings, make
):
    """Each starting state of the state table (test_parity.py), made on a host whose record says
    it was in sync: Caddy's and mox's files made anew as the case says, mox restarted on them."""
    mox, world, _ = in_sync_world(ca, fake_mox, mox_ids, tmp_path)
    if settings:  # the case's settings from now on (the record is of the others)
        values = {
            k: v.format(tmp=tmp_path) if isinstance(v, str) else v for k, v in settings.items()
        }
        world.config = Config(world.config.host, {**world.config.values, **values})
    shutil.rmtree(world.caddy_dir)
    shutil.rmtree(world.cert_dir)
    world.mox(world.old.cert_pem, world.old.key_pem)
    make(world)
    mox.new_process()

    read = read_state(world.config, [], False, False)
    full = full_read(world.config)

    assert True not in answered[1:]  # a refused folder asks nothing
    assert comparable(read) == comparable(full)
    assert read["names"][NAME]["action"] == action, read["names"][NAME]


def _state_command(config: Config) -> subprocess.CompletedProcess[str]:
    """The host program's `state`, as the deploy runs it, in a python3 of its own that lists
    every module it imports (-X importtime)."""
    settings = json.dumps(config.to_json())
    return subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-m",
            "certsync.host",
            "state",
            "--settings",
            settings,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )


def _imported(stderr: str) -> set[str]:
    return {line.rpartition("|")[2].strip() for line in stderr.splitlines() if "|" in line}


def test_the_cached_answer_loads_no_ssl(ca, fake_mox, mox_ids, tmp_path):
    _, world, _ = in_sync_world(ca, fake_mox, mox_ids, tmp_path)

    cached = _state_command(world.config)
    _mox_files_replaced(FakeMox.__new__(FakeMox), world)
    full = _state_command(world.config)

    assert json.loads(cached.stdout)["names"][NAME]["action"] == "in sync"
    assert not _imported(cached.stderr) & {"ssl", "_ssl", "socket"}
    assert json.loads(full.stdout)["names"][NAME]["action"] == "install"
    assert {"ssl", "_ssl"} <= _imported(full.stderr)


HEAVY = ("ssl", "_hashlib", "hashlib", "re", "json", "enum", "contextlib", "datetime", "base64")
# prints, at exit, which of HEAVY the state read loaded
PROBE = (
    "import atexit, sys\n"
    "atexit.register(lambda: sys.stderr.write('loaded: %s\\n' % ' '.join("
    f"m for m in {HEAVY!r} if m in sys.modules)))\n"
)


def test_the_installed_read_answered_from_the_record_loads_no_openssl_nor_re_json(
    ca, fake_mox, mox_ids, tmp_path, pyz
):
    """As the deploy reads a host in sync: the second read (the first wrote the record) loads
    neither OpenSSL nor the stdlib modules whose imports were most of its cost."""
    _, world, first = in_sync_world(ca, fake_mox, mox_ids, tmp_path)
    lib = tmp_path / "lib"
    lib.mkdir(mode=0o755)
    (lib / "certsync.pyz").write_bytes(pyz.read_bytes())
    assert run_host_program(lib / "certsync.pyz", "--help").returncode == 0  # unpacks it
    command = [HOST_PYTHON, *ISOLATED, "-c", PROBE + program.INSTALLED_SOURCE]
    command += [program.unpacked_folder(str(lib)), program.source_shape()]
    command += ["state", "--settings", json.dumps(world.config.to_json())]

    reads = [subprocess.run(command, capture_output=True, text=True, timeout=60) for _ in "12"]

    for read in reads:
        assert read.returncode == 0, read.stderr
        assert json.loads(read.stdout)["names"] == first["names"]
    loaded = [read.stderr.rpartition("loaded: ")[2].split() for read in reads]
    assert "ssl" in loaded[0]  # the full read, which wrote the record
    assert loaded[1] == []
