"""Canary first: the hosts of the canary group finish their sync before any other host starts
it, and the others are held back (failed, untouched) when a canary host failed. Holds in
pyinfra's default mode (operation by operation), with --parallel N, and with --no-wait (the
others wait for the canaries, each in a slot of pyinfra's pool: refused when the others could take
every slot); --serial is refused when a run targets canary and other hosts (pyinfra picks the
host order).

Every host calls both operations, the canary one first (a no-op on the other hosts), then the
others' one (a no-op on the canary hosts): pyinfra orders operations by each host's call order
(State.get_op_order), so the canary sync comes before the others' in every host's order, whatever
operations only some hosts run before or after it, and however often certsync_deploy() is called.
A gate never waits for an operation that cannot run any more: a canary host that failed earlier
fails the gate at once, and the wait is bounded.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
from pyinfra.api import Host, State
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.state import BaseStateCallback

from certsync.hostdata import SettingsError
from certsync.pyinfra_compat import cli_params, ignores_errors, on_greenlet_error

WAIT_INTERVAL = 0.1


class CanaryWatch(BaseStateCallback):
    """Which hosts finished each canary operation, and which of them failed; and a host whose
    operation failed is a failed host in every run mode (pyinfra's --no-wait never marks it)."""

    def __init__(self) -> None:
        self.finished: dict[str, set[str]] = {}  # canary operation -> hosts
        self.failed: dict[str, set[str]] = {}

    def operation_host_success(  # type: ignore[override]
        self, state: State, host: Any, op_hash: str, retry_count: int = 0
    ) -> None:
        self.finished.setdefault(op_hash, set()).add(host.name)

    def operation_host_error(  # type: ignore[override]
        self, state: State, host: Any, op_hash: str, retry_count: int = 0, max_retries: int = 0
    ) -> None:
        self.finished.setdefault(op_hash, set()).add(host.name)
        self.failed.setdefault(op_hash, set()).add(host.name)
        if not ignores_errors(state, host, op_hash):
            # --no-wait never marks it (fail_no_wait_hosts): marked here, the run exits 1 (the
            # other modes mark it too, later, the same way)
            state.failed_hosts.add(host)


_watches: dict[int, CanaryWatch] = {}


def watch_of(state: State) -> CanaryWatch:
    watch = _watches.get(id(state))
    if watch is None:
        watch = _watches[id(state)] = CanaryWatch()
        state.add_callback_handler(watch)
    return watch


def fail_no_wait_hosts(state: State) -> None:
    """With --no-wait, each host's operations run in a greenlet that a failure ends with a
    PyinfraError, which pyinfra never turns into a failed host (the run would exit 0) and gevent
    prints as a traceback. Here such a host is failed (the run exits 1), and pyinfra's own
    "Error in operation ... on host" is not printed again as a traceback: the host's error lines
    said it. Any other error keeps its traceback."""

    def handled(context: Any, value: BaseException) -> bool:
        host = next((a for a in getattr(context, "args", ()) if isinstance(a, Host)), None)
        if host is not None and isinstance(value, PyinfraError):
            state.failed_hosts.add(host)
            return str(value).startswith("Error in operation ")
        return False

    on_greenlet_error(state, handled)


@functools.cache
def cli_mode() -> dict[str, Any]:
    """pyinfra's command-line flags (serial, no_wait...) when its CLI runs the deploy, else {}.

    Parsed again from sys.argv with pyinfra's own command: deploy files run in greenlets, where
    the CLI's click context is not visible (gevent makes click's thread-local greenlet-local)."""
    program = Path(sys.argv[0])
    if program.name != "pyinfra" and program.parts[-2:] != ("pyinfra", "__main__.py"):
        return {}
    return cli_params(sys.argv[1:])


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


def canary_gate(
    state: State, canaries: list[Any], canary_op: str, deadline_seconds: float
) -> Callable[[], str | None]:
    """A hold_back for the other hosts: once every canary host ended `canary_op` (the canary
    sync of the same certsync_deploy() call), the reason to hold back if one failed. Waits
    (without blocking other hosts) only while the canary sync can still run; at most
    `deadline_seconds`."""
    watch = watch_of(state)

    def hold_back() -> str | None:
        def pending() -> list[Any]:
            finished = watch.finished.get(canary_op, set())
            return [h for h in canaries if h.name not in finished and h not in state.failed_hosts]

        deadline = time.monotonic() + deadline_seconds
        while waiting := pending():
            names = ", ".join(h.name for h in waiting)
            if gevent.getcurrent().parent is None:
                # pyinfra runs hosts one after the other in its main greenlet (--serial): a
                # canary host after this one cannot run while this one waits
                return (
                    f"canary host {names} has not synced yet and this run goes one host at a"
                    " time (--serial): run the canary group first (--limit)"
                )
            if time.monotonic() >= deadline:
                return f"canary host {names} did not end its sync within {deadline_seconds:.0f} s"
            gevent.sleep(WAIT_INTERVAL)
        failed = watch.failed.get(canary_op, set())
        failed_names = sorted(
            h.name for h in canaries if h.name in failed or h in state.failed_hosts
        )
        return f"canary host {', '.join(failed_names)} failed" if failed_names else None

    return hold_back


def check_one_canary_group(fleet: dict[str, Any]) -> None:
    """Hosts that disagree on the canary group would each wait for another group: refused
    before anything runs, naming them."""
    groups: dict[str, list[str]] = {}
    for name, settings in fleet.items():
        if settings.names:
            groups.setdefault(settings.canary_group, []).append(name)
    if len(groups) > 1:
        said = "; ".join(f"{group!r} for {', '.join(hosts)}" for group, hosts in groups.items())
        raise SettingsError(
            f"certsync_canary_group differs between the hosts of this run ({said}): set one"
            " canary group for the whole fleet (group_data/all.py)"
        )
