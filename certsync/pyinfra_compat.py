"""What certsync needs of pyinfra beyond its public API, in one place, for the pyinfra versions
certsync supports (pyproject.toml's range; tests/unit/test_pyinfra_compat.py fails on others)."""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points, version
from typing import Any
from weakref import WeakKeyDictionary

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


def current_operation_hash(host: Any) -> str | None:
    """The hash of the operation that runs on `host` now (while pyinfra evaluates it), as its
    State callbacks name it; None outside an operation."""
    return host.current_op_hash


def assigned_data(host: Any) -> dict[str, Any]:
    """The data the deploy's code assigned to `host` (`host.data.x = ...`), pyinfra's highest
    layer: above `--data`."""
    return host.data.override_datas


def current_state() -> Any:
    """pyinfra's current State itself (`pyinfra.state` is a proxy of whichever is current)."""
    from pyinfra.context import ctx_state

    return ctx_state.get()


def cli_state() -> Any:
    """The State of the run pyinfra's command line just finished in this process (it stays
    pyinfra's current State), or None when the run stopped before it read the inventory."""
    ran = current_state()
    return ran if ran is not None and getattr(ran, "initialised", False) else None


def connector_arguments(host: Any) -> dict[str, Any]:
    """`_sudo`, `_sudo_user`, `_timeout`... of the host's current operation, as pyinfra gives a
    fact (pyinfra.api.arguments' pop_global_arguments, whose signature changed within 3.x)."""
    from pyinfra.api.arguments import CONNECTOR_ARGUMENT_KEYS, pop_global_arguments

    given = host.current_op_global_arguments
    known = _connector_arguments.get(host)
    if known is None or known[0] is not given or given is None:
        current = dict(given or {})
        arguments, _ = pop_global_arguments(host.state, host, current)
        connector = {k: v for k, v in arguments.items() if k in CONNECTOR_ARGUMENT_KEYS}
        known = _connector_arguments[host] = (given, connector)
    return dict(known[1])


# host -> (the global arguments of its current operation, their connector arguments): asked
# more than once per operation, and pyinfra's defaults read the host's data for each argument
_connector_arguments: WeakKeyDictionary[Any, tuple[Any, dict[str, Any]]] = WeakKeyDictionary()


def ignores_errors(state: Any, host: Any, op_hash: str) -> bool:
    """Whether the host's operation `op_hash` was called with `_ignore_errors`."""
    return bool(state.get_op_data_for_host(host, op_hash).global_arguments["_ignore_errors"])


def drop_operation(state: Any, host: Any, meta: Any) -> None:
    """Take an operation that changes nothing out of the host's operations: it stays in the
    operation order, and pyinfra says `Skipped` for it on this host, as for an operation the host
    did not call."""
    state.ops[host].pop(operation_hash(meta), None)
    counts = state.get_meta_for_host(host)
    counts.ops -= 1
    counts.ops_no_change -= 1


def cli_params(argv: list[str]) -> dict[str, Any]:
    """The parameters pyinfra's command line parses from `argv` (serial, no_wait...), or {} when
    it cannot."""
    try:
        import click
        from pyinfra_cli.cli import cli
    except ImportError:
        return {}
    try:
        return dict(cli.make_context("pyinfra", argv, resilient_parsing=True).params)
    except click.ClickException:
        return {}


def on_greenlet_error(state: Any, handled: Callable[[Any, BaseException], bool]) -> None:
    """With --no-wait pyinfra runs each host in a greenlet whose error gevent's hub reports
    (prints a traceback): `handled(context, error)` sees each error first, and what it handled
    (True) is not reported. Once per State; a later State's replaces it."""
    import gevent

    hub = gevent.get_hub()
    if getattr(hub, "certsync_state", None) is state:
        return
    report = getattr(hub, "certsync_report", None) or hub.handle_error

    def handle_error(context: Any, kind: Any, value: Any, traceback: Any) -> None:
        if not handled(context, value):
            report(context, kind, value, traceback)

    hub.certsync_state, hub.certsync_report, hub.handle_error = state, report, handle_error


def _operation_order(state: Any) -> list[int]:
    """pyinfra.api.util.get_operation_order_from_stack (3.9, 3.10), line for line, with the
    frames read without their source lines (context=0): the filename and line number it uses do
    not depend on them, and reading them searched sys.modules for each frame's module."""
    import inspect
    import sys

    import pyinfra
    from pyinfra.api.util import PYINFRA_INSTALL_DIR

    # pyinfra's own frame (stack() called inside it) is where this one is called from
    stack_items = list(reversed(inspect.getouterframes(sys._getframe(1), 0)))
    i = 0
    if state.current_deploy_filename:
        for i, stack_item in enumerate(stack_items):  # noqa: B007 (as pyinfra's)
            frame = inspect.getframeinfo(stack_item[0], 0)
            if frame.filename == state.current_deploy_filename:
                break
    line_numbers = []
    if pyinfra.is_cli:
        line_numbers.append(state.current_op_file_number)
    for stack_item in stack_items[i:]:
        frame = inspect.getframeinfo(stack_item[0], 0)
        if frame.filename.startswith(PYINFRA_INSTALL_DIR):
            continue
        line_numbers.append(frame.lineno)
    del stack_items
    return line_numbers


_MADE_CHEAPER: list[bool] = []


def cheaper_operation_calls() -> None:
    """Make pyinfra's cost of each operation call smaller, with the same results: the operation
    order from the call stack without reading source lines (_operation_order), and the global
    arguments' type hints evaluated once (pyinfra evaluates them twice per operation call). Of an
    in-sync deploy's controller CPU, these were a third (20 frames of 0.2 ms per operation call,
    two operation calls per host)."""
    if _MADE_CHEAPER:
        return
    import functools
    import importlib

    from pyinfra.api import arguments

    operation = importlib.import_module("pyinfra.api.operation")  # the module, not the decorator
    operation.get_operation_order_from_stack = _operation_order  # type: ignore[attr-defined]
    hints = functools.cache(arguments.all_global_arguments)
    arguments.all_global_arguments = lambda: list(hints())
    _MADE_CHEAPER.append(True)
