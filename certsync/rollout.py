"""Canary first: the hosts of the canary group finish their sync before any other host starts
it, and the others are held back (failed, untouched) when a canary host failed. Holds in
pyinfra's default mode (operation by operation), with --parallel N, and with --no-wait (the
others wait for the canaries, each in a slot of pyinfra's pool: refused when the others could take
every slot); --serial is refused when a run targets canary and other hosts (pyinfra picks the
host order)."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
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


@functools.cache
def cli_mode() -> dict[str, Any]:
    """pyinfra's command-line flags (serial, no_wait...) when its CLI runs the deploy, else {}.

    Parsed again from sys.argv with pyinfra's own command: deploy files run in greenlets, where
    the CLI's click context is not visible (gevent makes click's thread-local greenlet-local)."""
    program = Path(sys.argv[0])
    if program.name != "pyinfra" and program.parts[-2:] != ("pyinfra", "__main__.py"):
        return {}
    try:
        import click
        from pyinfra_cli.cli import cli
    except ImportError:
        return {}
    try:
        return dict(cli.make_context("pyinfra", sys.argv[1:], resilient_parsing=True).params)
    except click.ClickException:
        return {}


def refuse_modes_that_cannot_wait(
    state: State, hosts: list[Any], canaries: list[Any], group: str
) -> None:
    """Refuse a run mode in which the canary group cannot finish before the other hosts start:
    --serial, and --no-wait with too few parallel slots. Only when this run targets canary
    hosts and other hosts; `hosts` are the hosts certsync syncs in this run."""
    others = len(hosts) - len(canaries)
    if not canaries or not others:
        return
    mode = cli_mode()
    if mode.get("serial"):
        raise SettingsError(
            f"certsync: --serial runs each host's whole deploy before the next host's, in an order"
            f" certsync cannot choose, so the {group} group cannot go first; drop --serial, or"
            f" run `--serial --limit {group}` first, then `--serial --exclude {group}`"
        )
    slots = state.config.PARALLEL
    if mode.get("no_wait") and slots <= others:
        # Each other host waits for the canary group in one of the pool's slots: with no slot
        # left over, a canary host might never start.
        raise SettingsError(
            f"certsync: with --no-wait each of the {others} hosts outside the {group} group waits"
            f" for it in one of pyinfra's {slots} parallel slots, and they could take them all"
            f" before a {group} host starts; use --parallel {others + 1} or more, drop --no-wait,"
            f" or run `--limit {group}` first"
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
