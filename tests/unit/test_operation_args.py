"""The `synced` operation's plain arguments, as pyinfra's command line gives them: certsync's
settings by name (defaults under the host's data, as certsync_deploy()'s), a stage; an unknown
argument refused, named. Each host's settings from its own data when the operation is evaluated.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from pyinfra.api import Config, Inventory, State
from pyinfra.context import ctx_host, ctx_state

from certsync.hostdata import SettingsError
from certsync.operations import operation_settings, synced

OWN = ["mail.h1.example"]  # mail-1's names in its inventory data
GIVEN = ["given.example"]  # the operation's argument


@contextmanager
def evaluated_on(name: str, override: dict[str, Any] | None = None) -> Iterator[tuple[State, Any]]:
    """pyinfra evaluating an operation on host `name` of a run: mail-1 (canary, names in its
    data) and mail-2 (no names of its own); `override`: the run's `--data`."""
    inventory = Inventory(
        ([("mail-1", {"certsync_names": OWN}), ("mail-2", {})], {}),
        override_data=override,
        canary=(["mail-1"], {}),
    )
    state = State(inventory, Config())
    host = inventory.get_host(name)
    with ctx_state.use(state), ctx_host.use(host):
        yield state, host


def test_an_unknown_argument_is_refused_naming_it_and_the_one_meant():
    with (
        evaluated_on("mail-1"),
        pytest.raises(
            SettingsError, match=r"^mail-1: nmes: certsync has no such setting .did you mean names"
        ),
    ):
        list(synced._inner(nmes=GIVEN))  # as pyinfra evaluates it at change detection


def test_a_bad_argument_value_is_refused_naming_host_and_setting():
    with (
        evaluated_on("mail-2"),
        pytest.raises(SettingsError, match=r"^mail-2: certsync_verify_ports: 99999"),
    ):
        list(synced._inner(names=GIVEN, verify_ports=[99999]))


def test_arguments_are_defaults_under_the_hosts_data():
    with evaluated_on("mail-1"):
        settings = operation_settings(None, {"names": GIVEN})
    assert settings is not None and settings.names == OWN  # its data wins
    with evaluated_on("mail-2"):
        settings = operation_settings(None, {"names": GIVEN, "backups_keep": 3})
    assert settings is not None and settings.names == GIVEN  # no data of its own: the argument
    assert settings.backups_keep == 3


def test_data_of_the_run_and_of_the_deploys_code_come_before_the_arguments():
    with evaluated_on("mail-2", override={"certsync_names": ["run.example"]}) as (_, host):
        settings = operation_settings(None, {"names": GIVEN})
        assert settings is not None and settings.names == ["run.example"]
        assert settings.configured_names == GIVEN  # the cron job's: without --data
        host.data.certsync_names = ["code.example"]  # the deploy's code, at this host's turn
        settings = operation_settings(None, {"names": GIVEN})
    assert settings is not None
    assert (settings.names, settings.configured_names) == (["code.example"], ["code.example"])


def test_arguments_from_pyinfras_command_line_are_taken():
    # `names=a.example,b.example` reaches the operation as text, `verify_ports=993` as an int
    with evaluated_on("mail-2"):
        settings = operation_settings(None, {"names": "a.example,b.example", "verify_ports": 993})
    assert settings is not None
    assert (settings.names, settings.verify_ports) == (["a.example", "b.example"], [993])


@pytest.mark.parametrize(
    "name, stage, applies",
    [
        ("mail-1", "canary", True),
        ("mail-1", "others", False),
        ("mail-2", "canary", False),
        ("mail-2", "others", True),
        ("mail-1", None, True),
        ("mail-2", None, True),
    ],
)
def test_a_stage_applies_to_the_canary_group_or_to_the_others(name, stage, applies):
    with evaluated_on(name):
        settings = operation_settings(stage, {"names": GIVEN})
    assert (settings is not None) == applies


def test_an_unknown_stage_is_refused_naming_it():
    with evaluated_on("mail-1"), pytest.raises(SettingsError, match=r"^mail-1: stage='first': "):
        operation_settings("first", {})


def test_a_stage_that_is_not_the_hosts_evaluates_to_nothing():
    with evaluated_on("mail-2"):
        assert list(synced._inner(stage="canary", names=GIVEN)) == []
