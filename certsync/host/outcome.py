"""What a sync did for one name, and the exit status that tells it."""

from __future__ import annotations

from .record import Record

OK_STATUSES = ("in sync", "installed", "repaired", "restarted")
HELD = "held for DANE"  # a key change waits for its TLSA record: mox keeps its files; exit 0
INTERRUPTED = "interrupted"  # SIGTERM or SIGINT before the restart: nothing changed; exit 1
EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_ROLLED_BACK, EXIT_RESTORE_FAILED = 0, 1, 2, 3, 4
EXIT_OF_STATUS = {
    "refused": EXIT_REFUSED,
    INTERRUPTED: EXIT_REFUSED,
    "failed": EXIT_ROLLED_BACK,
    "rolled back": EXIT_ROLLED_BACK,
    "restore failed": EXIT_RESTORE_FAILED,
}


class Outcome(Record):
    name: str
    # in sync | installed | repaired | restarted (exit 0) | refused (1) | failed | rolled back (3)
    # | restore failed (4) | held for DANE (0: nothing is broken yet) | interrupted (1)
    status: str
    detail: str = ""
    kept: str = ""  # what mox's files hold after a failure, when known
    notify: bool | None = None  # alert about it (None: when not ok); a hold waiting for DNS
    # alone is not told, an install made at the DANE deadline is

    @property
    def fine(self) -> bool:
        """Nothing is broken: synced, or held for DANE (the run's exit status is 0)."""
        return self.ok or self.status == HELD

    @property
    def ok(self) -> bool:
        return self.status in OK_STATUSES

    @property
    def exit_status(self) -> int:
        return EXIT_OF_STATUS.get(self.status, EXIT_OK)
