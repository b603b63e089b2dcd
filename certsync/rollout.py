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

Each host joins the run's Rollout (one per pyinfra State) at its own turn, with the settings its
own data gives then: what needs the whole fleet is checked as hosts join (a disagreeing canary
group, a run mode that cannot wait: each condition, once true, stays true as more hosts join, so
the run is refused before anything runs), and what the gate needs (the canary hosts, its wait
bound) is read when the gate runs, at execution, when every host's deploy code has run.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

import gevent
from gevent.event import Event
from pyinfra.api import Host, State
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.state import BaseStateCallback

from certsync.hostdata import HostSettings, SettingsError, settings_of_host
from certsync.pyinfra_compat import (
    cli_params,
    current_operation_hash,
    ignores_errors,
    on_greenlet_error,
)

GATE_MARGIN_SECONDS = 60


class Rollout(BaseStateCallback):
    """One run's certsync hosts, as each joined at its own turn; the canary operations each called
    and which hosts finished each, and which of them failed. As a State callback: a host whose
    operation failed is a failed host in every run mode (pyinfra's --no-wait never marks it), and
    a canary sync's end or a failure wakes the gates that wait."""

    def __init__(self) -> None:
        self.groups: dict[str, dict[str, None]] = {}  # canary group -> hosts that joined with it
        self.synced: dict[str, None] = {}  # hosts that joined (with names), in joining order
        self.canaries: dict[str, None] = {}  # of them, those in their canary group
        # canary operation -> each host that called it: its settings; and the defaults it was
        # called with (certsync_deploy()'s arguments)
        self.callers: dict[str, dict[str, HostSettings]] = {}
        self.defaults: dict[str, dict[str, Any]] = {}
        self.after: dict[tuple[str, str], str] = {}  # (host, others' operation) -> canary one
        # the settings each host's certsync_deploy() call gave it: while the call runs (the
        # preview evaluates its operations then), and by (host, operation) once it ran
        self.at_call: dict[str, HostSettings] = {}
        self.of_operation: dict[tuple[str, str], HostSettings] = {}
        self.order: dict[str, int] = {}  # the run's operation order (State.get_op_order), asked
        self.finished: dict[str, set[str]] = {}  # operation -> hosts
        self.failed: dict[str, set[str]] = {}
        self._changed = Event()

    def changed(self) -> None:
        """Wake every gate that waits (each looks again at what it waits for)."""
        event, self._changed = self._changed, Event()
        event.set()

    def operation_host_success(  # type: ignore[override]
        self, state: State, host: Any, op_hash: str, retry_count: int = 0
    ) -> None:
        self.finished.setdefault(op_hash, set()).add(host.name)
        if op_hash in self.callers:  # a canary sync: what a gate waits for
            self.changed()

    def operation_host_error(  # type: ignore[override]
        self, state: State, host: Any, op_hash: str, retry_count: int = 0, max_retries: int = 0
    ) -> None:
        self.finished.setdefault(op_hash, set()).add(host.name)
        self.failed.setdefault(op_hash, set()).add(host.name)
        if not ignores_errors(state, host, op_hash):
            # --no-wait never marks it (fail_no_wait_hosts): marked here, the run exits 1 (the
            # other modes mark it too, later, the same way)
            state.failed_hosts.add(host)
        self.changed()


_rollouts: WeakKeyDictionary[State, Rollout] = WeakKeyDictionary()


def rollout_of(state: State) -> Rollout:
    """The run's Rollout, made (and added to the State's callbacks) at the first call."""
    rollout = _rollouts.get(state)
    if rollout is None:
        rollout = _rollouts[state] = Rollout()
        state.add_callback_handler(rollout)
    return rollout


def join(state: State, host: Any, settings: HostSettings) -> None:
    """`host` takes part in the run with `settings` (its own data, at its turn; it has names).
    Refuses (SettingsError) what the hosts that joined so far already make impossible: hosts that
    disagree on the canary group, a run mode in which the canary group cannot go first."""
    rollout = rollout_of(state)
    group = settings.canary_group
    rollout.groups.setdefault(group, {})[host.name] = None
    rollout.synced[host.name] = None
    if group in host.groups:
        rollout.canaries[host.name] = None
    check_one_canary_group(state, rollout.groups)
    refuse_modes_that_cannot_wait(state, len(rollout.synced), len(rollout.canaries), group)


def called(
    state: State,
    host: Any,
    settings: HostSettings,
    defaults: Mapping[str, Any],
    canary_op: str,
    others_op: str,
) -> None:
    """`host` called the canary operation `canary_op` and then the others' one, `others_op`, of
    one certsync_deploy() call (with `defaults`): the gate of `others_op` waits for `canary_op`."""
    rollout = rollout_of(state)
    rollout.callers.setdefault(canary_op, {})[host.name] = settings
    rollout.defaults.setdefault(canary_op, dict(defaults))
    rollout.after[(host.name, others_op)] = canary_op
    for operation in (canary_op, others_op):
        rollout.of_operation[(host.name, operation)] = settings
    rollout.at_call.pop(host.name, None)


def calling(state: State, host: Any, settings: HostSettings) -> None:
    """`host`'s certsync_deploy() call, with `settings`, is about to call its operations: they
    take these settings, not what the host's data says when they run (the deploy's code may
    change it after the call)."""
    rollout_of(state).at_call[host.name] = settings


def settings_at_call(state: State, host: Any) -> HostSettings | None:
    """The settings of the certsync_deploy() call that called the operation pyinfra evaluates
    now on `host`, or None when no certsync_deploy() call did."""
    rollout = rollout_of(state)
    operation = current_operation_hash(host) or ""
    return rollout.of_operation.get((host.name, operation)) or rollout.at_call.get(host.name)


def fail_no_wait_hosts(state: State) -> None:
    """With --no-wait, each host's operations run in a greenlet that a failure ends with a
    PyinfraError, which pyinfra never turns into a failed host (the run would exit 0) and gevent
    prints as a traceback. Here such a host is failed (the run exits 1), and pyinfra's own
    "Error in operation ... on host" is not printed again as a traceback: the host's error lines
    said it. Any other error keeps its traceback."""
    rollout = rollout_of(state)

    def handled(context: Any, value: BaseException) -> bool:
        host = next((a for a in getattr(context, "args", ()) if isinstance(a, Host)), None)
        if host is not None and isinstance(value, PyinfraError):
            state.failed_hosts.add(host)
            rollout.changed()
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


def refuse_modes_that_cannot_wait(state: State, hosts: int, canaries: int, group: str) -> None:
    """Refuse a run mode in which the canary group cannot finish before the other hosts start:
    --serial, and --no-wait with too few parallel slots. Only when this run syncs canary hosts
    and other hosts; `hosts`: how many hosts certsync syncs in this run, `canaries` of them."""
    others = hosts - canaries
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


def _position(rollout: Rollout, state: State, operation: str) -> int:
    """Where `operation` runs in the run's operation order (-1: not in it)."""
    if operation not in rollout.order:
        rollout.order = {op: index for index, op in enumerate(state.get_op_order())}
    return rollout.order.get(operation, -1)


def _waited_for(
    state: State, rollout: Rollout, others_op: str
) -> tuple[dict[str, list[str]], list[str]]:
    """What the gate of `others_op` waits for of the canary hosts that joined the run: each one's
    canary operations that run before it (whichever certsync_deploy() call made them: a canary
    host may call it from another line of the deploy), by host name; and the canary hosts it
    cannot wait for, whose canary sync comes after `others_op` in the run's order. Fixed once
    the operations run."""
    here = _position(rollout, state, others_op)
    waited: dict[str, list[str]] = {}
    after: list[str] = []
    for name in rollout.canaries:
        operations = [
            operation
            for operation, callers in rollout.callers.items()
            if name in callers and 0 <= _position(rollout, state, operation) < here
        ]
        if operations:
            waited[name] = operations
        else:
            after.append(name)
    return waited, after


def _failed_unjoined(
    state: State, rollout: Rollout, group: str, defaults: Mapping[str, Any]
) -> list[str]:
    """The hosts of `group` that never reached certsync_deploy() and failed (unreachable, or an
    earlier operation failed) while their data gives them names: canary hosts that failed
    before their sync. Asked at each look: a host may fail while the gate waits."""
    return [
        target.name
        for target in state.inventory.get_group(group, [])
        if target in state.failed_hosts
        and target.name not in rollout.synced
        and state.is_host_in_limit(target)
        and _has_names(state, target, defaults)
    ]


def _has_names(state: State, target: Any, defaults: Mapping[str, Any]) -> bool:
    try:
        return bool(settings_of_host(state, target, defaults).names)
    except SettingsError:  # its sync would have failed: a failed canary all the same
        return True


def held_back(state: State, host: Any, group: str) -> str | None:
    """The gate of the others' operation that runs now on `host` (its canary group `group`): once
    every canary host ended its canary syncs that come before this operation, the reason to hold
    back if one failed. Waits (without blocking other hosts) only while a canary sync can still
    run, woken when a canary sync ends or a host fails; at most the canary hosts' sync and state
    timeouts and GATE_MARGIN_SECONDS. A canary host whose canary sync comes after this operation
    (its certsync_deploy() call is elsewhere in the deploy) holds it back."""
    rollout = rollout_of(state)
    others_op = current_operation_hash(host) or ""
    canary_op = rollout.after.get((host.name, others_op))
    if canary_op is None:
        return (
            "the others' sync (stage='others') waits for the canary sync of the same"
            " certsync_deploy() call, and this run has none: call certsync_deploy()"
        )
    waited, after = _waited_for(state, rollout, others_op)
    if after:
        return (
            f"canary host {', '.join(sorted(after))} syncs after this host in the run's"
            " operation order: call certsync_deploy() for every host from the same place"
        )
    settings = [
        rollout.callers[operation][name]
        for name, operations in waited.items()
        for operation in operations
    ]
    wait = max((s.sync_timeout_seconds for s in settings), default=0)
    wait += max((s.state_timeout_seconds for s in settings), default=0)
    deadline_seconds = wait + GATE_MARGIN_SECONDS
    defaults = rollout.defaults.get(canary_op, {})

    def pending() -> list[str]:
        failed = {target.name for target in state.failed_hosts}
        return [
            name
            for name, operations in waited.items()
            if name not in failed
            and not all(name in rollout.finished.get(op, set()) for op in operations)
        ]

    deadline = time.monotonic() + deadline_seconds
    while True:
        changed = rollout._changed  # taken before looking: a change after it wakes this wait
        waiting = pending()
        if not waiting:
            break
        names = ", ".join(waiting)
        if gevent.getcurrent().parent is None:
            # pyinfra runs hosts one after the other in its main greenlet (--serial): a
            # canary host after this one cannot run while this one waits
            return (
                f"canary host {names} has not synced yet and this run goes one host at a"
                " time (--serial): run the canary group first (--limit)"
            )
        left = deadline - time.monotonic()
        if left <= 0:
            return f"canary host {names} did not end its sync within {deadline_seconds:.0f} s"
        changed.wait(left)
    failed_hosts = {target.name for target in state.failed_hosts}
    failed_names = sorted(
        {
            *(
                name
                for name, operations in waited.items()
                if name in failed_hosts
                or any(name in rollout.failed.get(op, set()) for op in operations)
            ),
            *_failed_unjoined(state, rollout, group, defaults),
        }
    )
    return f"canary host {', '.join(failed_names)} failed" if failed_names else None


def check_one_canary_group(state: State, groups: Mapping[str, Mapping[str, None]]) -> None:
    """Hosts that disagree on the canary group would each wait for another group: refused
    before anything runs, naming them (`groups`: each group and the hosts that give it)."""
    if len(groups) < 2:
        return
    order = {target.name: index for index, target in enumerate(state.inventory)}
    hosts = {group: sorted(names, key=order.__getitem__) for group, names in groups.items()}
    said = "; ".join(
        f"{group!r} for {', '.join(names)}"
        for group, names in sorted(hosts.items(), key=lambda item: order[item[1][0]])
    )
    raise SettingsError(
        f"certsync_canary_group differs between the hosts of this run ({said}): set one"
        " canary group for the whole fleet (group_data/all.py)"
    )
