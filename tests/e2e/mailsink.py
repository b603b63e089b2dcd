"""A real SMTP server (aiosmtpd) on this test process's own loopback block, keeping every message
it is given, as the alert mail's relay (`certsync_alert_smtp`)."""

from __future__ import annotations

import contextlib
import email
import email.policy
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

from tests.fleet.slot import loopback
from tests.fleet.waiting import wait_for

ADDRESS = loopback(5)  # 127.0.s.1 is pebble's and Caddy's, 127.0.s.(10+i) host i's


@dataclass
class Received:
    sender: str
    recipients: list[str]
    message: EmailMessage


class _Handler:
    def __init__(self) -> None:
        self.received: list[Received] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((ADDRESS, 0))
        return probe.getsockname()[1]


class MailSink:
    """The SMTP server's address (`relay`, 'address:port') and what it received."""

    def __init__(self, handler: _Handler, port: int) -> None:
        self._handler = handler
        self.relay = f"{ADDRESS}:{port}"

    @property
    def received(self) -> list[Received]:
        return list(self._handler.received)

    def wait_for_messages(self, count: int, timeout: float = 30) -> list[Received]:
        return wait_for(
            lambda: self.received if len(self.received) >= count else None,
            timeout,
            f"{count} message(s) at {self.relay}",
        )


@contextlib.contextmanager
def mail_sink() -> Iterator[MailSink]:
    """`with mail_sink() as sink:` an SMTP server listens on `sink.relay` until the block ends."""
    handler, port = _Handler(), _free_port()
    controller = Controller(handler, hostname=ADDRESS, port=port)
    controller.start()
    try:
        yield MailSink(handler, port)
    finally:
        controller.stop()
