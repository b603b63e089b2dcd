"""The canary gate of certsync_deploy()'s second operation, with pyinfra's State and gevent: it
waits for the canary hosts that joined the run and called the same call's canary operation,
woken by the State's callbacks (no polling), and returns at once when a canary host failed;
the hosts' joins refuse disagreeing canary groups as they come. One registry per State."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gevent
import pytest
from pyinfra.api import Config, Inventory, State

from certsync.hostdata import SettingsError, settings_of_host
from certsync.rollout import called, held_back, join, rollout_of

CANARY_OP, OTHERS_OP = "canary-op-hash", "others-op-hash"
WAKE_BOUND = 5  # seconds: a woken gate returns at once; the gate's own bound is minutes


@pytest.fixture
def run() -> Iterator[tuple[State, dict[str, Any]]]:
    """A run of mail-1 (canary group) and mail-2, both joined, both through certsync_deploy()'s
    two operations; mail-2's others' operation is the one pyinfra evaluates now."""
    inventory = Inventory(
        ([(f"mail-{n}", {"certsync_names": [f"mail.h{n}.example"]}) for n in (1, 2)], {}),
        canary=(["mail-1"], {}),
    )
    state = State(inventory, Config())
    hosts = {host.name: host for host in inventory}
    for host in hosts.values():
        settings = settings_of_host(state, host)
        join(state, host, settings)
        called(state, host, settings, {}, CANARY_OP, OTHERS_OP)
    hosts["mail-2"].current_op_hash = OTHERS_OP  # as pyinfra sets it while evaluating
    rollout_of(state).order = {CANARY_OP: 0, OTHERS_OP: 1}  # the run's operation order
    yield state, hosts


def gate(state: State, host: Any) -> gevent.Greenlet:
    """The gate in a greenlet of its own (as pyinfra runs each host's operation), waiting."""
    waiting = gevent.spawn(held_back, state, host, "canary")
    gevent.sleep(0)
    assert not waiting.ready()  # the canary host has not ended its sync
    return waiting


def test_the_gate_opens_when_the_canary_host_ends_its_sync(run):
    state, hosts = run
    waiting = gate(state, hosts["mail-2"])

    rollout_of(state).operation_host_success(state, hosts["mail-1"], "another-op")
    gevent.sleep(0)
    assert not waiting.ready()  # woken, looked again: still waiting for the canary sync
    rollout_of(state).operation_host_success(state, hosts["mail-1"], CANARY_OP)

    waiting.join(WAKE_BOUND)
    assert waiting.successful()
    assert waiting.value is None  # no reason to hold back


def test_the_gate_holds_back_at_once_when_a_canary_host_failed(run):
    state, hosts = run
    waiting = gate(state, hosts["mail-2"])

    state.failed_hosts.add(hosts["mail-1"])  # failed elsewhere, e.g. an earlier operation
    rollout_of(state).changed()

    waiting.join(WAKE_BOUND)
    assert waiting.successful()
    assert waiting.value == "canary host mail-1 failed"


def test_an_others_operation_of_no_certsync_deploy_call_is_held_back(run):
    state, hosts = run
    hosts["mail-2"].current_op_hash = "an-operation-certsync_deploy-did-not-call"

    assert "call certsync_deploy()" in (held_back(state, hosts["mail-2"], "canary") or "")


def test_hosts_that_disagree_on_the_canary_group_are_refused_as_soon_as_one_joins():
    inventory = Inventory(([("mail-1", {}), ("mail-2", {}), ("mail-3", {})], {}))
    state = State(inventory, Config())
    first, second, third = inventory
    data = {"names": ["mail.example"]}
    join(state, third, settings_of_host(state, third, {**data, "canary_group": "early"}))
    join(state, second, settings_of_host(state, second, {**data, "canary_group": "early"}))
    with pytest.raises(
        SettingsError, match=r"\('canary' for mail-1; 'early' for mail-2, mail-3\)"
    ):  # named in inventory order, whichever joined first
        join(state, first, settings_of_host(state, first, data))


def test_each_run_has_its_own_registry_among_its_callbacks():
    states = [State(Inventory(([("mail-1", {})], {})), Config()) for _ in range(2)]

    rollouts = [rollout_of(state) for state in states]

    assert rollouts[0] is not rollouts[1]
    for state, rollout in zip(states, rollouts, strict=True):
        assert rollout_of(state) is rollout
        assert rollout in state.callback_handlers


def test_a_canary_host_calling_from_elsewhere_is_waited_for_when_its_sync_comes_first(run):
    state, hosts = run
    canary, other = hosts["mail-1"], hosts["mail-2"]
    settings = settings_of_host(state, canary)
    rollout = rollout_of(state)
    # mail-1's canary sync comes from another certsync_deploy() call, before mail-2's gate
    rollout.callers[CANARY_OP].pop("mail-1")
    called(state, canary, settings, {}, "elsewhere-canary-op", "elsewhere-others-op")
    rollout.order = {"elsewhere-canary-op": 0, CANARY_OP: 1, OTHERS_OP: 2, "elsewhere-others-op": 3}
    waiting = gate(state, other)

    rollout.operation_host_success(state, canary, CANARY_OP)  # not mail-1's canary sync
    gevent.sleep(0)
    assert not waiting.ready()
    # what operation_host_error records (it also asks pyinfra's op data, not made here)
    rollout.finished.setdefault("elsewhere-canary-op", set()).add("mail-1")
    rollout.failed.setdefault("elsewhere-canary-op", set()).add("mail-1")
    rollout.changed()

    waiting.join(WAKE_BOUND)
    assert waiting.value == "canary host mail-1 failed"


def test_a_canary_host_whose_sync_comes_after_the_gate_holds_it_back(run):
    state, hosts = run
    settings = settings_of_host(state, hosts["mail-1"])
    rollout = rollout_of(state)
    rollout.callers[CANARY_OP].pop("mail-1")
    called(state, hosts["mail-1"], settings, {}, "later-canary-op", "later-others-op")
    rollout.order = {CANARY_OP: 0, OTHERS_OP: 1, "later-canary-op": 2, "later-others-op": 3}

    reason = held_back(state, hosts["mail-2"], "canary") or ""

    assert "canary host mail-1 syncs after this host" in reason
