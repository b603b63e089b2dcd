"""A real SMTP server (aiosmtpd) for the tests: it listens on an address of the test's choosing,
keeps every message it is given, and may refuse some recipients."""

from __future__ import annotations

import contextlib
import email
import email.policy
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

from tests.fleet.waiting import wait_for

RecipientRule = Callable[[str], bool]


@dataclass
class Received:
    """One message as the server took it: the envelope's sender and recipients, and the
    message parsed with email.policy.default."""

    sender: str
    recipients: list[str]
    message: EmailMessage


class _Handler:
    """aiosmtpd's handler: refuses the recipients `refuse` names, keeps every message."""

    def __init__(self, refuse: RecipientRule | None) -> None:
        self.refuse = refuse
        self.received: list[Received] = []

    async def handle_RCPT(  # noqa: N802
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self.refuse is not None and self.refuse(address):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 OK"


def free_port(host: str) -> int:
    """A TCP port on `host` that nothing listened on a moment ago."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


class SmtpSink:
    """A running server's address (`address`, `relay` as 'host:port') and what it received."""

    def __init__(self, handler: _Handler, host: str, port: int) -> None:
        self._handler = handler
        self.address = (host, port)
        self.relay = f"{host}:{port}"

    @property
    def received(self) -> list[Received]:
        """The messages received so far, oldest first."""
        return list(self._handler.received)

    def wait_for_messages(self, count: int, timeout: float = 30) -> list[Received]:
        """The messages received, once there are at least `count` of them."""
        return wait_for(
            lambda: self.received if len(self.received) >= count else None,
            timeout,
            f"{count} message(s) at {self.relay}",
        )


@contextlib.contextmanager
def smtp_sink(host: str, refuse: RecipientRule | None = None) -> Iterator[SmtpSink]:
    """`with smtp_sink("127.0.0.1") as sink:` an SMTP server listens on `sink.address` until the
    block ends; a recipient for which `refuse(address)` is true is refused (550)."""
    handler, port = _Handler(refuse), free_port(host)
    controller = Controller(handler, hostname=host, port=port)
    controller.start()
    try:
        yield SmtpSink(handler, host, port)
    finally:
        controller.stop()
