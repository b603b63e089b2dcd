"""certsync's own state (certsync/host/records.py, the lock): root's alone, and records of any
wrong shape read as empty with a warning, never a traceback."""

from __future__ import annotations

import json
import os
import time

import pytest

from certsync.host import records
from certsync.host.alert import ALERTS_FILE, alert
from certsync.host.cli import run_sync
from certsync.host.outcome import Outcome
from certsync.host.output import Log

NAME = "mail.example.com"


@pytest.fixture
def config(make_config, tmp_path, mox_ids):
    (tmp_path / "run").mkdir(mode=0o700)
    return make_config()


@pytest.mark.parametrize(
    "text",
    [
        '{"mail.example.com": {"status": "failed", "told": 1e400}}',
        '{"mail.example.com": {"status": "failed", "told": 99999999999999999999999}}',
        '{"mail.example.com": {"status": "failed", "told": {"a": 1}}}',
        '{"mail.example.com": {"status": ["failed"], "told": 1}}',
        '{"mail.example.com": "failed"}',
        "[1, 2]",
        "not json",
        '{"mail.example.com": {"status": "failed", "told": -1}}',
    ],
)
def test_alerts_json_of_a_wrong_shape_reads_as_empty_with_a_warning(config, tmp_path, text):
    (tmp_path / "run" / ALERTS_FILE).write_text(text)
    del records.WARNINGS[:]
    assert records.load(config, ALERTS_FILE) == {}
    assert [
        f"{tmp_path}/run/{ALERTS_FILE} is not a record of certsync's: read as empty"
    ] == records.WARNINGS
    log = Log(config.host, config.log_file)
    alert(config, [Outcome(NAME, "failed", "why")], log)  # no traceback: the failure recorded
    assert json.loads((tmp_path / "run" / ALERTS_FILE).read_text())[NAME]["status"] == "failed"
    del records.WARNINGS[:]


def test_a_sync_with_wrong_records_says_so_in_its_log(config, tmp_path):
    (tmp_path / "mox").mkdir()
    (tmp_path / "run" / "installed.json").write_text('{"mail.example.com": 5}')
    run_sync(config, [NAME], False, Log(config.host, config.log_file))
    log = (tmp_path / "log" / "certsync.log").read_text()
    assert (
        f"warning: {tmp_path}/run/installed.json is not a record of certsync's: read as empty"
        in log
    )


@pytest.mark.parametrize("how", ["owned by mox", "group-writable", "world-writable"])
def test_a_state_folder_another_user_can_write_refuses_every_name(config, tmp_path, mox_ids, how):
    folder = tmp_path / "run"
    if how == "owned by mox":
        os.chown(folder, *mox_ids)
    else:
        os.chown(folder, 0, mox_ids[1])
        folder.chmod(0o770 if how == "group-writable" else 0o777)
    outcomes = run_sync(config, [NAME, "b.example.com"], False, Log(config.host, config.log_file))
    assert [o.status for o in outcomes] == ["refused", "refused"]
    assert outcomes[0].detail.startswith(f"certsync's state folder {folder} is not root's alone (")
    assert not (tmp_path / "mox").exists()  # nothing done for mox


@pytest.mark.parametrize("how", ["owned by mox", "sticky and world-writable"])
def test_a_backup_folder_to_be_made_where_another_user_can_write_refuses_every_name(
    make_config, tmp_path, mox_ids, how
):
    """The sync makes a missing backup folder, then puts mox's keys in it: the folder it would
    be made in counts (sticky too: another user could make the backup folder first)."""
    (tmp_path / "run").mkdir(mode=0o700)
    parent = tmp_path / "shared"
    parent.mkdir()
    if how == "owned by mox":
        os.chown(parent, *mox_ids)
    else:
        parent.chmod(0o1777)
    config = make_config(backup_dir=str(parent / "backups"))
    outcomes = run_sync(config, [NAME], False, Log(config.host, config.log_file))
    assert [o.status for o in outcomes] == ["refused"]
    assert outcomes[0].detail.startswith(
        f"certsync's state folder {parent}/backups (to be made) is not root's alone ({parent} is"
    )
    assert not (parent / "backups").exists() and not (tmp_path / "mox").exists()


def test_a_replaced_lock_file_is_refused(config, tmp_path, mox_ids):
    lock = tmp_path / "run" / "certsync.lock"
    lock.write_text("")
    os.chown(lock, *mox_ids)
    (outcome,) = run_sync(config, [NAME], False, Log(config.host, config.log_file))
    assert outcome.status == "refused"
    assert outcome.detail == (
        f"lock {lock}: is not a file of root's with a single link (someone replaced it);"
        f" refusing: {lock}"
    )


def test_a_run_that_cannot_take_the_lock_still_writes_the_metrics(config, tmp_path, mox_ids):
    (tmp_path / "metrics").mkdir()
    lock = tmp_path / "run" / "certsync.lock"
    lock.symlink_to(tmp_path / "elsewhere")
    (outcome,) = run_sync(config, [NAME], False, Log(config.host, config.log_file))
    assert outcome.status == "refused"
    text = (tmp_path / "metrics" / "certsync.prom").read_text()
    assert f'certsync_last_run_ok{{name="{NAME}"}} 0' in text
    assert not (tmp_path / "run" / "runs.json").exists()  # no record without the lock


def test_runs_json_of_the_previous_version_without_held_is_read(config, tmp_path):
    # the version before DANE holds wrote no "held": an upgrade must not forget last_success
    entry = {"ok": True, "time": 1700000000, "last_success": 1700000000}
    (tmp_path / "run" / "runs.json").write_text(json.dumps({NAME: entry}))
    del records.WARNINGS[:]
    assert records.load(config, "runs.json") == {NAME: {**entry, "held": False}}
    assert records.WARNINGS == []


def test_a_lock_file_replaced_while_a_run_waited_is_not_the_lock_taken(config, tmp_path):
    import fcntl
    import threading

    from certsync.host.output import locked

    lock = tmp_path / "run" / "certsync.lock"
    lock.write_text("")
    holder = os.open(lock, os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)
    taken = threading.Event()

    def take() -> None:
        with locked(str(lock)):
            taken.set()
            # while this run holds it, the path's file is the one it locked
            with open(lock) as other:
                try:
                    fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    seen.append("free")
                except BlockingIOError:
                    seen.append("held")

    seen: list[str] = []
    waiter = threading.Thread(target=take)
    waiter.start()
    time.sleep(0.3)  # (the waiter is in its wait: its flock fails until release)
    assert not taken.is_set()
    # the holder (an old run) removes the file and lets go: the waiter's descriptor is stale
    lock.unlink()
    os.close(holder)
    waiter.join(10)
    assert taken.is_set() and seen == ["held"]


def test_staged_records_a_crash_left_are_removed_under_the_lock(config, tmp_path):
    (tmp_path / "mox").mkdir()
    staged = tmp_path / "run" / ".runs.json.certsync-12345.tmp"
    staged.write_text("{}")
    other = tmp_path / "run" / ".notes.certsync-12345.tmp"
    other.write_text("{}")
    run_sync(config, [NAME], False, Log(config.host, config.log_file))
    assert not staged.exists() and other.exists()
