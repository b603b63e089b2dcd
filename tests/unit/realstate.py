"""The host's real `state`, as the controller receives it, must pass the controller's schema
unchanged (certsync/stateschema.py): every test that reads a state through here checks it, so a
field the host program starts to send, or a starting state no schema case foresaw, cannot make
the controller refuse a real host."""

from __future__ import annotations

import copy
import json
from typing import Any

from certsync.host.settings import Config
from certsync.host.state import read_state
from certsync.stateschema import checked_state


def schema_checked(state: dict[str, Any]) -> dict[str, Any]:
    """`state` after the JSON round trip the controller sees, asserted to pass the schema as is."""
    sent = json.loads(json.dumps(state))
    assert checked_state(copy.deepcopy(sent)) == sent
    return state


def real_state(config: Config, all_ports: bool = True) -> dict[str, Any]:
    """`state` for the config's names (as the status report reads it: every port probed),
    checked by the controller's schema."""
    return schema_checked(read_state(config, [], False, all_ports))
