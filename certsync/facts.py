"""The certsync state of a host, read in one command: the host program's `state` prints JSON,
the plan per name with the public facts it rests on. Only public material leaves the host; file
contents can never be read as structure.

The command runs the version the host has installed (its unpacked folder, program.INSTALLED):
about 2 kB with the settings. On a host without this version, that command prints
program.NOT_INSTALLED alone, and the read is made again with `carry` (stateread.py): the command
then carries the whole program (program.BOOTSTRAP, about 100 kB of base64), so that the host
needs nothing installed. `pyinfra INVENTORY fact` runs one command: it carries the program.

    pyinfra inventory.py fact certsync.facts.CertsyncState
"""

from __future__ import annotations

import json
from typing import Any

from pyinfra import host as context_host
from pyinfra.api import FactBase, QuoteString, StringCommand
from pyinfra.api.exceptions import FactProcessError
from pyinfra.api.hiddenvalue import HiddenValue

from certsync import program
from certsync.hostdata import HostSettings, SettingsError, settings_from_data
from certsync.stateschema import SchemaError, checked_state

# characters of the state's JSON: a real one is a few kB per name
MAX_STATE_CHARS = 4_000_000


class CertsyncState(FactBase[dict[str, Any] | None]):
    """What a certsync sync would do on the host, per name, and why (JSON). Without arguments
    (`pyinfra INVENTORY fact certsync.facts.CertsyncState`) the settings come from host data."""

    def command(  # type: ignore[override]
        self,
        settings: HostSettings | None = None,
        files: list[str] | None = None,
        force: bool = False,
        all_ports: bool = False,
        carry: bool = False,
    ) -> StringCommand:
        if settings is None:  # `pyinfra INVENTORY fact certsync.facts.CertsyncState`
            carry = True  # one command, whatever the host has
            try:
                settings = settings_from_data(context_host.name, context_host.data)
            except SettingsError as error:  # said as the state's error, not as a traceback
                refusal = {"certsync_state": 1, "error": str(error), "names": {}}
                return StringCommand("echo", QuoteString(json.dumps(refusal)))
        args: list[Any] = ["state", "--settings", settings.run_config_json()]
        for path in settings.installed_files if files is None else files:
            args += ["--file", path]
        if force:
            args.append("--force")
        if all_ports:
            args.append("--all-ports")
        app = program.unpacked_folder(settings.install_dir)
        if carry:
            code, program_args = program.BOOTSTRAP, _carried_arguments(app)
        else:
            code, program_args = program.INSTALLED, [QuoteString(app), program.source_shape()]
        return StringCommand(
            # bounded on the host too: the controller's wait (stateread) ends the read for the
            # deploy, this one ends the process (it reads only: killing it leaves nothing); exec:
            # the shell pyinfra wraps the command in does not fork for it
            "exec",
            "timeout",
            "-k",
            "5",
            str(settings.state_timeout_seconds),
            QuoteString(settings.python),
            "-I",
            "-S",
            "-c",
            QuoteString(code),
            *program_args,
            *(QuoteString(str(arg)) for arg in args),
        )

    def process(self, output: list[str]) -> dict[str, Any]:  # type: ignore[override]
        text = "\n".join(output)
        if len(text) > MAX_STATE_CHARS:
            raise FactProcessError(
                f"certsync state is larger than {MAX_STATE_CHARS // 1_000_000} MB"
                f" ({len(text)} characters): not read"
            )
        try:
            state = json.loads(text)
        except ValueError as error:
            raise FactProcessError(f"certsync state is not JSON ({error})") from None
        except (RecursionError, MemoryError) as error:  # '[' * 100000: nested past the stack
            raise FactProcessError(
                f"certsync state is not JSON that can be read ({type(error).__name__})"
            ) from None
        try:
            return checked_state(state)
        except SchemaError as error:
            raise FactProcessError(f"certsync state: {error}") from None


def _carried_arguments(app: str) -> list[Any]:
    """BOOTSTRAP's arguments: the program's parts hidden from pyinfra's -vv output."""
    app, tree, count, *parts = program.bootstrap_arguments(app)
    size = len(program.carried())
    payload = [
        HiddenValue(part, f"<certsync host program, part {index} of {count}, {size} bytes>")
        for index, part in enumerate(parts, 1)
    ]
    hidden = [QuoteString(part) for part in payload]  # type: ignore[arg-type]
    return [QuoteString(app), tree, count, *hidden]
