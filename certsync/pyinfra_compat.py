"""What certsync needs of pyinfra beyond its public API, in one place, for the pyinfra versions
certsync supports (pyproject.toml's range; tests/unit/test_pyinfra_compat.py fails on others).

Elsewhere, still (their modules are being reworked): `pyinfra.api.arguments`'
`pop_global_arguments` and `CONNECTOR_ARGUMENT_KEYS` and `Host.current_op_global_arguments`
(stateread.py); `pyinfra_cli.cli.cli.make_context` on sys.argv, a cache keyed by `id(state)` and
`gevent.sleep` inside an operation (rollout.py)."""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points, version
from typing import Any

LOWEST = (3, 9)  # pyinfra.api.hiddenvalue (certsync/facts.py) appears in 3.9.0
BELOW = (3, 11)  # the first version not tested
EXCLUDE_SINCE = (3, 10)  # pyinfra's --exclude


def pyinfra_version() -> tuple[int, ...]:
    return tuple(int(part) for part in version("pyinfra").split(".")[:2] if part.isdigit())


def unsupported() -> str | None:
    """Why the installed pyinfra is not one certsync supports, or None."""
    found = pyinfra_version()
    if LOWEST <= found < BELOW:
        return None
    wanted = f">={'.'.join(map(str, LOWEST))},<{'.'.join(map(str, BELOW))}"
    return f"pyinfra {version('pyinfra')} is installed; certsync supports pyinfra{wanted}"


def has_exclude() -> bool:
    return pyinfra_version() >= EXCLUDE_SINCE


def pyinfra_main() -> Any:
    """pyinfra's command line (its console script, `pyinfra`), with sys.argv."""
    (script,) = entry_points(group="console_scripts", name="pyinfra")
    main: Callable[[], Any] = script.load()
    return main()


def operation_hash(meta: Any) -> str:
    """The hash pyinfra's State callbacks name an operation by, of what the operation returned
    (pyinfra's OperationMeta has no public accessor for it)."""
    return meta._hash


def current_state() -> Any:
    """pyinfra's current State itself (`pyinfra.state` is a proxy of whichever is current)."""
    from pyinfra.context import ctx_state

    return ctx_state.get()


def cli_state() -> Any:
    """The State of the run pyinfra's command line just finished in this process (it stays
    pyinfra's current State), or None when the run stopped before it read the inventory."""
    ran = current_state()
    return ran if ran is not None and getattr(ran, "initialised", False) else None
