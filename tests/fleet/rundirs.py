"""Run directories under RUNS_ROOT, their owners, and reaping what a killed run left behind.

Each Pki or Fleet lives in its own run directory holding an `owner` file (pid and start time of the
Python process that made it). Every process a run starts either carries RUN_ENV=<run dir> in its
environment or lives in a mount namespace whose mounts come from the run directory; so when the
owner is gone, everything that belongs to the run can be found and killed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from pathlib import Path

from .waiting import WaitTimeout, wait_for

RUNS_ROOT = Path(os.environ.get("CERTSYNC_E2E_ROOT", "/tmp/certsync-e2e"))
RUN_ENV = "CERTSYNC_E2E_RUN"
KEEP_ENV = "CERTSYNC_E2E_KEEP"


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22: starttime


def new_run_dir(kind: str) -> Path:
    RUNS_ROOT.mkdir(mode=0o755, parents=True, exist_ok=True)
    RUNS_ROOT.chmod(0o755)
    run_dir = Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=RUNS_ROOT))
    run_dir.chmod(0o755)
    (run_dir / "owner").write_text(f"{os.getpid()} {_start_time(os.getpid())}\n")
    return run_dir


def _owner_alive(run_dir: Path) -> bool:
    try:
        pid_text, start = (run_dir / "owner").read_text().split()
    except (OSError, ValueError):
        return False
    return _start_time(int(pid_text)) == start


def _pids() -> list[int]:
    return [
        int(entry) for entry in os.listdir("/proc") if entry.isdigit() and int(entry) != os.getpid()
    ]


def mount_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


def pids_in_mount_namespace(namespace: str) -> list[int]:
    return [pid for pid in _pids() if mount_namespace(pid) == namespace]


def pids_of_run(run_dir: Path) -> list[int]:
    """Processes started by the run (env marker) or living in one of its mount namespaces."""
    marker = f"{RUN_ENV}={run_dir}".encode()
    # mountinfo shows a bind mount's source relative to its filesystem root: match the tail.
    mount_marker = f"/{RUNS_ROOT.name}/{run_dir.name}/".encode()
    own_namespace = mount_namespace(os.getpid())
    namespace_belongs: dict[str, bool] = {}
    found = []
    for pid in _pids():
        try:
            if marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                found.append(pid)
                continue
            namespace = mount_namespace(pid)
            if namespace is None or namespace == own_namespace:
                continue
            if namespace not in namespace_belongs:
                namespace_belongs[namespace] = (
                    mount_marker in Path(f"/proc/{pid}/mountinfo").read_bytes()
                )
            if namespace_belongs[namespace]:
                found.append(pid)
        except OSError:
            continue  # exited meanwhile
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def kill_pids(pids: list[int], timeout: float = 10.0) -> None:
    """TERM, wait up to `timeout`, then KILL whatever is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        try:
            wait_for(lambda: not any(_alive(pid) for pid in pids), timeout, f"pids {pids} to exit")
            return
        except WaitTimeout:
            if sig == signal.SIGKILL:
                raise


def reap_run(run_dir: Path) -> None:
    """Kill what is left of the run; remove its files unless $CERTSYNC_E2E_KEEP=1 (post-mortems)."""
    kill_pids(pids_of_run(run_dir))
    if os.environ.get(KEEP_ENV) == "1":
        (run_dir / "owner").unlink(missing_ok=True)  # kept for reading, not a live run any more
    else:
        shutil.rmtree(run_dir, ignore_errors=True)


def reap_stale_runs() -> list[Path]:
    """Kill processes of, and remove, every run directory whose owner process is gone."""
    if not RUNS_ROOT.is_dir():
        return []
    stale = [
        run_dir
        for run_dir in RUNS_ROOT.iterdir()
        if run_dir.is_dir() and (run_dir / "owner").exists() and not _owner_alive(run_dir)
    ]
    for run_dir in stale:
        reap_run(run_dir)
    return stale
