"""A real SMTP server (aiosmtpd) on this test process's own loopback block, keeping every message
it is given, as the alert mail's relay (`certsync_alert_smtp`)."""

from __future__ import annotations

import email
import email.policy
import socket
from dataclasses import dataclass
from email.message import EmailMessage
from types import TracebackType
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
    """`with MailSink() as sink:` listens on `sink.relay` ('address:port') until the block ends."""

    def __init__(self) -> None:
        self._handler = _Handler()
        self.port = _free_port()
        self._controller = Controller(self._handler, hostname=ADDRESS, port=self.port)

    @property
    def relay(self) -> str:
        return f"{ADDRESS}:{self.port}"

    @property
    def received(self) -> list[Received]:
        return list(self._handler.received)

    def wait_for_messages(self, count: int, timeout: float = 30) -> list[Received]:
        return wait_for(
            lambda: self.received if len(self.received) >= count else None,
            timeout,
            f"{count} message(s) at {self.relay}",
        )

    def __enter__(self) -> MailSink:
        self._controller.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._controller.stop()
