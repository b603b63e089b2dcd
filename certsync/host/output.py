"""Where the host program speaks: stdout and stderr (which may be gone: a dropped SSH session),
the log file (one line per name per run), and the lock that keeps two syncs apart."""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import sys
import time

from .errors import printable
from .files import open_dir

# contextlib and datetime are not imported: with what they import, a sixth of an in-sync state
# read, which writes no log line
TYPE_CHECKING = False
if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Callable

LOCK_WAIT_SECONDS = 300
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # UTC, in log lines and in the state's certificates
LOG_DIR_MODE = 0o750


def emit(text: str, failed: bool = False) -> None:
    """Print a line to stdout (stderr if `failed`); if the reader is gone, drop this and later
    output instead of failing, also at exit, when Python flushes what is left."""
    stream = sys.stderr if failed else sys.stdout
    try:
        print(text, file=stream, flush=True)
    except (OSError, ValueError):
        silence(stream)


def silence(stream: object) -> None:
    """Point a broken stream's file descriptor at /dev/null (its buffer then flushes there)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, stream.fileno())  # type: ignore[attr-defined]
        finally:
            os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def flush_all() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            silence(stream)


def utc_stamp() -> str:
    return time.strftime(TIME_FORMAT, time.gmtime())


def parse_utc(stamp: str) -> dt.datetime:
    """A time written with TIME_FORMAT; raises ValueError."""
    import datetime as dt

    return dt.datetime.strptime(stamp, TIME_FORMAT).replace(tzinfo=dt.timezone.utc)


def ago(delta: dt.timedelta) -> str:
    """'3 days', '5 hours', '12 minutes' (whole units, rounded down)."""
    seconds = int(abs(delta.total_seconds()))
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} seconds"


class Log:
    """Lines to stdout (pyinfra, a terminal) or stderr (failures, unless `failures_to_stderr`
    is off), and to the log file."""

    def __init__(self, host: str, log_file: str, failures_to_stderr: bool = True) -> None:
        self.host = host
        self.log_file = log_file
        self.failures_to_stderr = failures_to_stderr

    def line(self, message: str, failed: bool = False, log_file: bool = True) -> None:
        """Print and log one line (one: whatever a message quotes, a newline or a terminal escape
        in a name someone chose included, is written as its escape)."""
        text = printable(f"{utc_stamp()} certsync {self.host}: {message}")
        # the SSH session may be gone: finish all the same
        emit(text, failed and self.failures_to_stderr)
        if log_file:
            try:
                self._append(text)
            except (OSError, ValueError):
                pass

    def _append(self, text: str) -> None:
        dir_fd = open_dir(os.path.dirname(self.log_file), create_mode=LOG_DIR_MODE)
        try:
            fd = os.open(
                os.path.basename(self.log_file),
                os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o640,
                dir_fd=dir_fd,
            )
        finally:
            os.close(dir_fd)
        with os.fdopen(fd, "a", encoding="utf-8") as file:
            file.write(text + "\n")


class LockTimeout(Exception):
    pass


STOP: list[str] = []  # why the run must stop, set by the SIGTERM and SIGINT handler (cli.py)


def stopping() -> str | None:
    """Why this run was asked to stop (a signal), or None."""
    return STOP[0] if STOP else None


class Held:
    """A lock taken (locked), released at the end of the `with` block."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __enter__(self) -> None:
        return None

    def __exit__(self, *_: object) -> None:
        os.close(self.fd)


def locked(path: str, on_wait: Callable[[], object] | None = None) -> Held:
    """Take an exclusive lock so that a cron run and a deploy never interleave: `with
    locked(...):` holds it for the block.

    Calls `on_wait` once if another sync holds the lock; raises LockTimeout after
    LOCK_WAIT_SECONDS, and OSError (SymlinkedFolder...) when the lock cannot be opened."""
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        dir_fd = open_dir(os.path.dirname(path), create_mode=0o700)
        try:
            fd = os.open(
                os.path.basename(path),
                os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
                dir_fd=dir_fd,
            )
            try:
                info = os.fstat(fd)
                if not stat.S_ISREG(info.st_mode) or info.st_uid != 0 or info.st_nlink != 1:
                    raise OSError(
                        errno.EPERM,
                        "is not a file of root's with a single link (someone replaced it);"
                        " refusing",
                        path,
                    )
                on_wait = _wait_for(fd, path, deadline, on_wait)
                # the lock file may have been unlinked or replaced while this run waited: the
                # lock held is then not the one the next run takes
                try:
                    now = os.stat(os.path.basename(path), dir_fd=dir_fd, follow_symlinks=False)
                except FileNotFoundError:
                    now = None
            except BaseException:
                os.close(fd)
                raise
        finally:
            os.close(dir_fd)
        if now is not None and (now.st_dev, now.st_ino) == (info.st_dev, info.st_ino):
            return Held(fd)
        os.close(fd)


def _wait_for(
    fd: int, path: str, deadline: float, on_wait: Callable[[], object] | None
) -> Callable[[], object] | None:
    """flock `fd` (the lock file `path`), waiting until `deadline` (monotonic) or a stop signal;
    `on_wait` called if it has to wait: returned when it was not (to be called at most once)."""
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return on_wait
        except BlockingIOError:
            if stopping():
                raise LockTimeout(
                    f"{stopping()} while waiting for {path}; nothing changed"
                ) from None
            if time.monotonic() >= deadline:
                raise LockTimeout(
                    f"another sync holds {path} for over {LOCK_WAIT_SECONDS} s; nothing changed"
                ) from None
            if on_wait is not None:
                on_wait()
                on_wait = None
            time.sleep(0.1)
