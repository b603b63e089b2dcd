"""`watch` (optional, `certsync_watch`): sync seconds after Caddy writes, instead of waiting for
the cron job. inotify on Caddy's folders of the host's names; a sync once they have been quiet
for QUIET_SECONDS (Caddy writes key, certificate and metadata one after the other), and once
more RETRY_SECONDS later if a pair was still caught mid-write.

One watcher per host (a lock); the sync (cron or deploy) starts it when the settings want it and
none runs, so that it comes back after a reboot or a crash within one cron period, and replaces
it when config.json or the program changed. It leaves by itself when they change.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import struct
import sys
import time

from .names import storage_name
from .settings import Config

IN_CLOSE_WRITE, IN_MOVED_FROM, IN_MOVED_TO = 0x8, 0x40, 0x80
IN_CREATE, IN_DELETE, IN_DELETE_SELF, IN_MOVE_SELF = 0x100, 0x200, 0x400, 0x800
IN_ONLYDIR, IN_NONBLOCK, IN_CLOEXEC = 0x1000000, 0o4000, 0o2000000
EVENTS = IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
EVENTS |= IN_DELETE_SELF | IN_MOVE_SELF
EVENT_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len (then len bytes of name)
QUIET_SECONDS = 3.0
RETRY_SECONDS = 30.0
CONFIG_CHECK_SECONDS = 5.0


def lock_path(config: Config) -> str:
    return config.lock_file + ".watch"


class Inotify:
    """The few inotify calls a watcher needs, through libc (the standard library has none)."""

    def __init__(self) -> None:
        import ctypes  # only in the watcher: the state read imports this module too

        self.get_errno = ctypes.get_errno
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self.fd < 0:
            raise OSError(self.get_errno(), "inotify_init1")

    def add(self, folder: str) -> None:
        """Watch a folder (a missing one is skipped: its parent's watch sees it come)."""
        if self.libc.inotify_add_watch(self.fd, os.fsencode(folder), EVENTS | IN_ONLYDIR) < 0:
            error = self.get_errno()
            if error not in (errno.ENOENT, errno.ENOTDIR):
                raise OSError(error, "inotify_add_watch", folder)

    def wait(self, timeout: float | None) -> bool:
        """Whether something changed within `timeout` seconds (None: until it does)."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return False
        while True:
            try:
                if not os.read(self.fd, 1 << 16):
                    return True
            except BlockingIOError:
                return True


def folders(config: Config) -> list[str]:
    """Caddy's certificates folder, its issuer folders, and each issuer's folder of each name."""
    certificates = os.path.join(config.caddy_data_dir, "certificates")
    found = [config.caddy_data_dir, certificates]
    try:
        issuers = sorted(os.listdir(certificates))
    except OSError:
        return found
    for issuer in issuers:
        found.append(os.path.join(certificates, issuer))
        found += [os.path.join(certificates, issuer, storage_name(n)) for n in config.names]
    return found


def running(config: Config) -> tuple[int, str] | None:
    """(pid, what it runs) of the watcher holding the watch lock, or None."""
    try:
        fd = os.open(lock_path(config), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
    except BlockingIOError:
        pid, _, runs = os.read(fd, 4096).decode(errors="replace").strip().partition(" ")
        return (int(pid), runs) if pid.isdigit() else (0, runs)
    finally:
        os.close(fd)


def version(config_file: str) -> str:
    """What a watcher runs: config.json's and the program's modification times."""
    try:
        times = [os.stat(path).st_mtime_ns for path in (config_file, sys.argv[0])]
    except OSError:
        return ""
    return " ".join(map(str, times))


def program() -> list[str]:
    """How to run this program again: the installed zipapp (or None when run otherwise)."""
    path = os.path.abspath(sys.argv[0])
    return [sys.executable, "-I", "-S", path] if path.endswith(".pyz") else []


def start(config: Config, config_file: str) -> None:
    """Start a watcher in the background if the settings want one and none runs, or replace one
    that runs older settings or an older program."""
    holder = running(config)
    if not config.watch or not program() or (holder and holder[1] == version(config_file)):
        return
    import subprocess

    if holder and holder[0] > 1:
        import signal

        os.kill(holder[0], signal.SIGTERM)
        deadline = time.monotonic() + 5
        while running(config) and time.monotonic() < deadline:
            time.sleep(0.05)
    subprocess.Popen(
        [*program(), "watch", "--config", config_file],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )


def sync(config_file: str) -> int:
    """A sync of every name, as the cron job runs it (log, alerts and all): its exit status."""
    import subprocess

    argv = [*program(), "sync", "--config", config_file]
    return subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL).returncode


def watch(config_file: str) -> int:
    """Run until config.json changes or stops wanting a watcher."""
    config = Config.load(config_file)
    runs = version(config_file)
    fd = os.open(lock_path(config), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0  # another watcher runs
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()} {runs}\n".encode())
    inotify = Inotify()
    due: float | None = None  # when to sync: QUIET_SECONDS after the last change, or a retry
    retry = True
    while config.watch:
        for folder in folders(config):
            inotify.add(folder)
        timeout = CONFIG_CHECK_SECONDS if due is None else max(0.0, due - time.monotonic())
        if inotify.wait(min(timeout, CONFIG_CHECK_SECONDS)):
            due, retry = time.monotonic() + QUIET_SECONDS, True
        elif due is not None and time.monotonic() >= due:
            # exit 1: a name refused, maybe a pair still being written: once more, later
            refused = sync(config_file) == 1
            due = time.monotonic() + RETRY_SECONDS if refused and retry else None
            retry = False
        if version(config_file) != runs:
            return 0  # the next sync starts a watcher with the new settings and program
    return 0
