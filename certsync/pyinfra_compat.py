"""What certsync needs of pyinfra beyond its public API, in one place, for the pyinfra versions
certsync supports (pyproject.toml's range; tests/unit/test_pyinfra_compat.py fails on others)."""

from __future__ import annotations

import copy
import functools
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
        pop = _popping_with_data_merged_once(pop_global_arguments)
        arguments, _ = pop(host.state, host, current)
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
    """pyinfra.api.util.get_operation_order_from_stack (3.9, 3.10), with each frame's file and
    line read from the frame itself: inspect's FrameInfo computes each frame's column positions
    (a walk of its code's positions) and looks for its source file, which the order does not
    use. The file name is inspect.getframeinfo's: the code's, a bytecode file's source path."""
    import sys
    from importlib.machinery import BYTECODE_SUFFIXES, SOURCE_SUFFIXES

    import pyinfra
    from pyinfra.api.util import PYINFRA_INSTALL_DIR

    def filename(code: Any) -> str:
        name: str = code.co_filename
        if name.endswith(tuple(BYTECODE_SUFFIXES)):
            name = name.rsplit(".", 1)[0] + SOURCE_SUFFIXES[0]
        return name

    # pyinfra's own frame (stack() called inside it) is where this one is called from
    frames = []
    frame: Any = sys._getframe(1)
    while frame is not None:
        frames.append((filename(frame.f_code), frame.f_lineno))
        frame = frame.f_back
    frames.reverse()
    i = 0
    if state.current_deploy_filename:
        for i, (name, _) in enumerate(frames):  # noqa: B007 (as pyinfra's)
            if name == state.current_deploy_filename:
                break
    line_numbers = [state.current_op_file_number] if pyinfra.is_cli else []
    line_numbers += [line for name, line in frames[i:] if not name.startswith(PYINFRA_INSTALL_DIR)]
    return line_numbers


class _DataMergedOnce:
    """A host's data as pyinfra's HostData gives each key (a shallow copy of the value of the
    first layer that has it, AttributeError when none has), from its layers merged once:
    HostData walks every layer, and merges the host's groups' data, at each key it is asked.
    Each key is an attribute, copied when this is made: it serves one popping of the global
    arguments, which reads each key once; and a key no layer has is missing without an
    AttributeError raised for it (getattr with a default: most of the 32 arguments)."""

    def __init__(self, layers: list[dict[str, Any]]) -> None:
        merged: dict[str, Any] = {}
        for layer in reversed(layers):
            merged.update(layer)
        self.__dict__.update({key: copy.copy(value) for key, value in merged.items()})


def _data_merged_once(data: Any) -> Any:
    """`data` (a HostData) merged once, or itself when a layer is not a plain dict (a mapping of
    its own may answer a key it does not list)."""
    layers = [layer() if callable(layer) else layer for layer in data.datas]
    if all(type(layer) is dict for layer in layers):
        return _DataMergedOnce(layers)
    return data


class _HostOfArguments:
    """What pop_global_arguments reads of a host (3.9, 3.10): its data, its deploy's arguments."""

    def __init__(self, host: Any) -> None:
        self.data = _data_merged_once(host.data)
        self.current_deploy_kwargs = host.current_deploy_kwargs


def _popping_with_data_merged_once(pop: Callable[..., Any]) -> Callable[..., Any]:
    """pyinfra's pop_global_arguments, with the host's data merged once per call: it asks the
    data for each of its global arguments (32 in pyinfra 3.9 and 3.10)."""

    @functools.wraps(pop)
    def popping(state: Any, host: Any, kwargs: Any, *args: Any, **more: Any) -> Any:
        return pop(state, _HostOfArguments(host), kwargs, *args, **more)

    return popping


_MADE_CHEAPER: list[bool] = []


def cheaper_operation_calls() -> None:
    """Make pyinfra's cost of each operation and deploy call smaller, with the same results: the
    operation order from the call stack without inspect's FrameInfo (_operation_order), the
    global arguments' type hints evaluated once (pyinfra evaluates them twice per operation
    call), and the host's data merged once per popping of the global arguments. An in-sync
    deploy makes three such calls per host (certsync_deploy, two operations): these were about
    0.35, 0.05 and 0.15 ms of each, over half of certsync's controller CPU per host."""
    if _MADE_CHEAPER:
        return
    import importlib

    from pyinfra.api import arguments

    operation = importlib.import_module("pyinfra.api.operation")  # the module, not the decorator
    operation.get_operation_order_from_stack = _operation_order  # type: ignore[attr-defined]
    hints = functools.cache(arguments.all_global_arguments)
    arguments.all_global_arguments = lambda: list(hints())
    for name in ("pyinfra.api.operation", "pyinfra.api.deploy"):  # each operation's, deploy's call
        module = importlib.import_module(name)
        module.pop_global_arguments = _popping_with_data_merged_once(  # type: ignore[attr-defined]
            arguments.pop_global_arguments
        )
    _MADE_CHEAPER.append(True)
