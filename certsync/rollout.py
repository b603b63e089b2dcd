"""Canary first: the hosts of the canary group finish their sync before any other host starts
it, and the others are held back (failed, untouched) when a canary host failed. Holds in
pyinfra's default mode, with --parallel N and --no-wait (the others wait for the canaries); with
--serial only when the inventory lists the canary hosts first (pyinfra runs hosts in its order)."""

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


def check_serial_order(hosts: list[Any], is_canary: Callable[[Any], bool]) -> None:
    """With --serial, pyinfra syncs host after host in inventory order: refuse unless every
    canary host comes before every other host."""
    seen_other = None
    for host in hosts:
        if not is_canary(host):
            seen_other = seen_other or host
        elif seen_other is not None:
            raise SettingsError(
                f"{host.name}: certsync: with --serial pyinfra runs one host after the other in"
                f" inventory order, and {seen_other.name} (not a canary) comes before canary host"
                f" {host.name}: list the canary group first in the inventory, or drop --serial"
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
            if cli_mode().get("serial"):
                names = ", ".join(h.name for h in pending())
                return (
                    f"canary host {names} has not run yet (--serial runs hosts in inventory order)"
                )
            gevent.sleep(WAIT_INTERVAL)
        failed = sorted(
            h.name for h in canaries if h.name in watch.failed or h in state.failed_hosts
        )
        return f"canary host {', '.join(failed)} failed" if failed else None

    return hold_back
