"""Canary first: the hosts of the canary group finish their sync before any other host starts
it, and the others are held back (failed, untouched) when a canary host failed. Holds in
pyinfra's default mode, with --parallel N and --no-wait (the others wait for the canaries);
--serial is refused when a run targets canary and other hosts (pyinfra picks the host order)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gevent
from pyinfra.api import State
from pyinfra.api.state import BaseStateCallback

from certsync.hostdata import SettingsError

WAIT_INTERVAL = 0.1


class CanaryWatch(BaseStateCallback):
    """Which canary hosts finished certsync's canary operation, and which of them failed."""

    def __init__(self) -> None:
        self.canary_ops: set[str] = set()
        self.finished: set[str] = set()
        self.failed: set[str] = set()

    def operation_host_success(  # type: ignore[override]
        self, state: State, host: Any, op_hash: str, retry_count: int = 0
    ) -> None:
        if op_hash in self.canary_ops:
            self.finished.add(host.name)

    def operation_host_error(  # type: ignore[override]
        self, state: State, host: Any, op_hash: str, retry_count: int = 0, max_retries: int = 0
    ) -> None:
        if op_hash in self.canary_ops:
            self.finished.add(host.name)
            self.failed.add(host.name)


_watches: dict[int, CanaryWatch] = {}


def watch_of(state: State) -> CanaryWatch:
    watch = _watches.get(id(state))
    if watch is None:
        watch = _watches[id(state)] = CanaryWatch()
        state.add_callback_handler(watch)
    return watch


def cli_mode() -> dict[str, Any]:
    """pyinfra's command-line flags when run by its CLI (--serial, --no-wait), else {}."""
    try:
        import click
    except ImportError:
        return {}
    context = click.get_current_context(silent=True)
    return dict(context.params) if context is not None else {}


def refuse_serial_with_canaries(hosts: list[Any], canaries: list[Any], group: str) -> None:
    """--serial runs every operation of one host before the next host, in an order pyinfra
    does not let a deploy choose: the canary group cannot go first. Refuse unless this run
    targets only canary hosts or only other hosts."""
    if canaries and len(canaries) < len(hosts):
        raise SettingsError(
            f"certsync: --serial runs each host's whole deploy before the next host's, in an order"
            f" certsync cannot choose, so the {group} group cannot go first; drop --serial, or"
            f" run `--serial --limit {group}` first and then the other hosts"
        )


def canary_gate(state: State, canaries: list[Any]) -> Callable[[], str | None]:
    """A hold_back for the other hosts: waits (without blocking other hosts) until every canary
    host finished, then gives the reason to hold back, if one failed."""
    watch = watch_of(state)

    def hold_back() -> str | None:
        def pending() -> list[Any]:
            return [
                h for h in canaries if h.name not in watch.finished and h not in state.failed_hosts
            ]

        while pending():
            gevent.sleep(WAIT_INTERVAL)
        failed = sorted(
            h.name for h in canaries if h.name in watch.failed or h in state.failed_hosts
        )
        return f"canary host {', '.join(failed)} failed" if failed else None

    return hold_back
