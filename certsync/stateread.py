"""Reading a host's state for the operation: the fact's command, run the way pyinfra runs a fact
(same connection, same `_sudo`), but a failure is the host's alone, with its reason.

pyinfra's own fact loading fails the host in the middle of change detection when the command
fails: without `--yes` that asks "continue?" before the preview is complete (and crashes when
nobody can answer), and it does not say why the read failed when the connection dropped. Here the
reason comes back as text, and the operation fails that host with it when it runs.

A host that has this version installed is read with one small command; one that has not says so
(program.NOT_INSTALLED) and is read again with the command that carries the program (facts.py).
"""

from __future__ import annotations

import math
import re
import time
from typing import Any

from paramiko import SSHException
from pyinfra import logger
from pyinfra.api import Host, StringCommand
from pyinfra.api.exceptions import FactProcessError, PyinfraError

from certsync import program
from certsync.facts import CertsyncState
from certsync.host.errors import printable
from certsync.hostdata import HostSettings
from certsync.pyinfra_compat import connector_arguments

MAX_REASON_LINES = 4
STATE_TIMEOUT_MARGIN = 10  # seconds the controller waits beyond the host's own timeout
MAX_LINE_CHARS = 300
# sudo's refusal repeats the whole command: the host program, in base64
SUDO_REFUSAL_RE = re.compile(r"(not allowed to execute )'.*'( as )")
CONNECTION_ERRORS = (OSError, EOFError, TimeoutError, SSHException)


def _printable(line: str) -> str:
    """A line of the host's output, safe for the operator's terminal, cut to MAX_LINE_CHARS."""
    text = printable(SUDO_REFUSAL_RE.sub(r"\1certsync's state command\2", line))
    return text if len(text) <= MAX_LINE_CHARS else text[: MAX_LINE_CHARS - 1] + "…"


def run_quiet(
    host: Host, command: StringCommand, arguments: dict[str, Any], what: str
) -> tuple[bool, list[str]]:
    """Run `command` on the host with `arguments` (connector_arguments, `_stdin`...), none of
    its output printed as it comes: whether it succeeded, and its output lines made printable.
    pyinfra prints a failing command's output raw (a compromised host's escapes on the
    operator's terminal); a dropped connection is a line here, not a traceback."""
    state = host.state
    try:
        ok, output = host.run_shell_command(
            command, print_output=False, print_input=state.print_input, **arguments
        )
    except CONNECTION_ERRORS as error:
        return False, [_printable(f"{what}: {type(error).__name__}: {error}")]
    return ok, [printable(line.line) for line in output]


def _run(host: Host, command: StringCommand, arguments: dict[str, Any]) -> tuple[bool, Any]:
    state = host.state
    ok, output = host.run_shell_command(
        command, print_output=False, print_input=state.print_fact_input, **arguments
    )
    if state.print_fact_output:  # pyinfra's -vv..., made printable (pyinfra prints it raw)
        for line in output:
            logger.info(f"{host.print_prefix}{_printable(line.line)}")
    return ok, output


def _silent_failure(host: Host, python: str, arguments: dict[str, Any]) -> str:
    """Why the read failed without a word: is the connection still there?"""
    try:
        alive, _ = _run(host, StringCommand("true"), arguments)
    except CONNECTION_ERRORS as error:
        return f"the connection dropped while reading the state ({type(error).__name__}: {error})"
    if not alive:
        return "the connection dropped while reading the state"
    return f"the state read failed without output ({python} exited or was killed, or timed out)"


def read_state(
    host: Host, settings: HostSettings, files: list[str], force: bool, all_ports: bool = False
) -> dict[str, Any] | str:
    """The host's certsync state, or the reason it could not be read (its shell, sudo or the
    connection failed; the answer was not certsync's state). `all_ports`: what every verify port
    serves (the status report)."""
    fact = CertsyncState()
    arguments = connector_arguments(host)
    # a deadline the host cannot stretch: the controller stops waiting (the host's `timeout`
    # ends the command a little before)
    bound = settings.state_timeout_seconds + STATE_TIMEOUT_MARGIN
    deadline = time.monotonic() + bound
    where = "certsync could not read the host's state"
    try:
        for carry in (False, True):  # the installed program's, else the one the command carries
            command = fact.command(
                settings=settings, files=files, force=force, all_ports=all_ports, carry=carry
            )
            # both commands within the one bound: a host cannot double it by answering late
            arguments["_timeout"] = max(1, math.ceil(deadline - time.monotonic()))
            ok, output = _run(host, command, arguments)
            if not (ok and output.stdout_lines == [program.NOT_INSTALLED]):
                break
            if time.monotonic() >= deadline:
                raise TimeoutError
    except TimeoutError:
        return f"{where}: no answer within {bound} s (certsync_state_timeout_seconds)"
    except EOFError:  # pyinfra's getpass, with nobody to answer
        return f"{where}: sudo asks for a password and standard input ended (--use-sudo-password)"
    except CONNECTION_ERRORS as error:
        return f"{where}: {type(error).__name__}: {error}"
    except PyinfraError as error:  # e.g. sudo's askpass could not be set up: it quotes the host
        return f"{where}: {_printable(str(error))}"
    if not ok:
        lines = [_printable(line) for line in output.stderr_lines if line.strip()]
        if not lines:
            return f"{where}: {_silent_failure(host, settings.python, arguments)}"
        return f"{where}: {'; '.join(lines[-MAX_REASON_LINES:])}"
    try:
        state = fact.process(output.stdout_lines)
    except FactProcessError as error:
        return f"{where}: {error}"
    unasked = sorted(set(state["names"]) - set(settings.names))
    if unasked:
        return f"{where}: certsync state: plans for names not asked for: {', '.join(unasked)}"
    return state
