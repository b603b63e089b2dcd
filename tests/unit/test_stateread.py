"""The controller's read of a host's state (certsync/stateread.py) when the host, its sudo or
the connection does not answer as expected: a reason for that host alone, printable (what a host
sends back is hostile: a compromised one must not reach the operator's terminal), never a
traceback; and the second command that carries the program when the host says it has not this
version. The host's side is pyinfra's `run_shell_command`, answering as a host would."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pyinfra.api import Config, Inventory, State, StringCommand
from pyinfra.api.exceptions import PyinfraError
from pyinfra.connectors.util import CommandOutput, OutputLine

from certsync import program
from certsync.hostdata import settings_from_data
from certsync.stateread import STATE_TIMEOUT_MARGIN, read_state

WHERE = "certsync could not read the host's state"
ESCAPE = "\x1b]0;owned\x07\x1b[2J"  # a terminal title and a screen clear, from the host
REFUSED = {"certsync_state": 1, "error": "needs root to read the keys (set _sudo)", "names": {}}


def output(stdout: list[str] = (), stderr: list[str] = ()) -> CommandOutput:  # type: ignore[assignment]
    return CommandOutput(
        [OutputLine("stdout", line) for line in stdout]
        + [OutputLine("stderr", line) for line in stderr]
    )


Answer = Callable[[str], tuple[bool, CommandOutput]]


@pytest.fixture
def host_answering(monkeypatch) -> Iterator[Callable[[Answer], tuple[Any, list[str]]]]:
    """A host of a pyinfra run whose commands `answer` answers (given each command's text);
    the commands it was given, in order."""
    data = {"certsync_names": ["mail.example.com"], "certsync_state_timeout_seconds": 30}
    inventory = Inventory((["mail-1"], data))
    State(inventory, Config())
    host = inventory.get_host("mail-1")

    def make(answer: Answer) -> tuple[Any, list[str]]:
        given: list[str] = []

        def run_shell_command(command: StringCommand, **_: Any) -> tuple[bool, CommandOutput]:
            text = str(command.get_raw_value())
            given.append(text)
            return answer(text)

        monkeypatch.setattr(host, "run_shell_command", run_shell_command)
        return host, given

    yield make


def read(host: Any) -> dict[str, Any] | str:
    settings = settings_from_data(host.name, host.data)
    return read_state(host, settings, list(settings.installed_files), force=False)


def raising(error: BaseException) -> Answer:
    def answer(_: str) -> tuple[bool, CommandOutput]:
        raise error

    return answer


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (
            PyinfraError(f"could not set up sudo's askpass on mail-1 {ESCAPE}"),
            "could not set up sudo's askpass on mail-1 \\x1b]0;owned\\x07\\x1b[2J",
        ),
        (OSError("Connection reset by peer"), "OSError: Connection reset by peer"),
        (
            EOFError(),
            "sudo asks for a password and standard input ended (--use-sudo-password)",
        ),
        # the setting, and the controller's margin beyond the host's own `timeout`
        (
            TimeoutError(),
            f"no answer within {30 + STATE_TIMEOUT_MARGIN} s (certsync_state_timeout_seconds)",
        ),
    ],
    ids=["pyinfra error", "connection", "sudo password", "timeout"],
)
def test_a_read_that_raises_is_that_host_s_reason(host_answering, error, reason):
    host, _ = host_answering(raising(error))
    assert read(host) == f"{WHERE}: {reason}"


def test_a_failed_read_says_the_host_s_last_lines_made_printable(host_answering):
    refusal = (
        "sudo: sorry, user deploy is not allowed to execute 'exec timeout -k 5 60 ...' as root"
    )
    lines = ["first", "second", f"third {ESCAPE}", "", refusal, "fifth"]
    host, _ = host_answering(lambda _: (False, output(stderr=lines)))
    assert read(host) == (
        f"{WHERE}: second; third \\x1b]0;owned\\x07\\x1b[2J; sudo: sorry, user deploy is not"
        " allowed to execute certsync's state command as root; fifth"
    )


@pytest.mark.parametrize(
    ("alive", "reason"),
    [
        (
            True,
            "the state read failed without output (/usr/bin/python3 exited or was killed, or"
            " timed out)",
        ),
        (False, "the connection dropped while reading the state"),
    ],
)
def test_a_read_that_fails_without_a_word_asks_whether_the_connection_is_there(
    host_answering, alive, reason
):
    host, given = host_answering(
        lambda text: (alive, output()) if text == "true" else (False, output())
    )
    assert read(host) == f"{WHERE}: {reason}"
    assert given[-1] == "true"


@pytest.mark.parametrize(
    ("stdout", "reason"),
    [
        (
            ["{not json"],
            "certsync state is not JSON (Expecting property name enclosed in double"
            " quotes: line 1 column 2 (char 1))",
        ),
        (["[" * 100_000], "certsync state is not JSON that can be read (RecursionError)"),
        (['{"certsync_state": 2}'], None),
    ],
    ids=["not json", "nested", "another version"],
)
def test_an_answer_that_is_not_certsync_s_state_is_refused(host_answering, stdout, reason):
    host, _ = host_answering(lambda _: (True, output(stdout)))
    found = read(host)
    assert isinstance(found, str) and found.startswith(f"{WHERE}: certsync state")
    if reason is not None:
        assert found == f"{WHERE}: {reason}"


def test_a_host_without_this_version_is_read_again_with_the_program_carried(host_answering):
    def answer(text: str) -> tuple[bool, CommandOutput]:
        if "memfd_create" in text:  # program.BOOTSTRAP: the command that carries the program
            return True, output([json.dumps(REFUSED)])
        return True, output([program.NOT_INSTALLED])

    host, given = host_answering(answer)
    assert read(host) == REFUSED
    assert len(given) == 2
    assert program.unpacked_folder("/usr/local/lib/certsync") in given[0]
    assert "memfd_create" not in given[0] and "memfd_create" in given[1]
