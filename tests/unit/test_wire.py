"""SMTP by hand (wire.py), as the alert mail and the STARTTLS probes speak it: a server that never
ends its reply, or trickles it, is cut off; a message arrives as written, dot lines included, to
the recipients the server takes."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator

import pytest

from certsync.host import wire
from tests.smtpsink import SmtpSink, smtp_sink
from tests.unit.fakemox import accept_each

MESSAGE = (
    b"From: certsync@example.com\r\nTo: a@example.com\r\nSubject: test\r\n\r\n"
    b"first line\r\n.second line starts with a dot\r\n.\r\nlast line\r\n"
)


@contextlib.contextmanager
def hostile_server(talk: Callable[[socket.socket], None]) -> Iterator[tuple[str, int]]:
    """A server on 127.0.0.1 that runs `talk` on each connection."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        accept_each(listener, talk)
        yield listener.getsockname()


def endless_reply(conn: socket.socket) -> None:
    while True:
        conn.sendall(b"220-" + b"A" * 70 + b"\r\n")


def trickled_reply(conn: socket.socket) -> None:
    for _ in range(1000):  # far longer than any deadline: one byte at a time, each in time
        conn.sendall(b"2")
        time.sleep(0.05)


def long_line(conn: socket.socket) -> None:
    conn.sendall(b"220-" + b"A" * 5000 + b"\r\n")
    conn.recv(1024)


def mixed_reply(conn: socket.socket) -> None:
    conn.sendall(b"220-mail.example.com\r\n550-not this\r\n220 ready\r\n")
    conn.recv(1024)


def send(address: tuple[str, int], recipients: list[str], timeout: float = 10) -> list[str]:
    return wire.send(address, "host.example", "c@example.com", recipients, MESSAGE, timeout)


@pytest.mark.parametrize(
    ("talk", "timeout", "error", "says"),
    [
        (endless_reply, 10, ConnectionError, "too many lines"),
        (long_line, 10, ConnectionError, "line too long"),
        (trickled_reply, 1, TimeoutError, None),  # (the socket's timeout or the deadline's)
        (mixed_reply, 10, ConnectionError, "SMTP: 550-not this"),
    ],
    ids=["never ends", "a line too long", "trickles past the deadline", "code changes midway"],
)
def test_a_reply_that_is_not_one_ends_the_conversation(talk, timeout, error, says):
    started = time.monotonic()
    with hostile_server(talk) as address, pytest.raises(error, match=says):
        send(address, ["a@example.com"], timeout)
    assert time.monotonic() - started < timeout + 2  # the deadline is the whole conversation's


def refused_recipient(address: str) -> bool:
    """The recipients the sink has no mailbox for: nobody@<any domain>."""
    return address.startswith("nobody@")


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    """An SMTP server on 127.0.0.1 that refuses nobody@ and keeps every message."""
    with smtp_sink("127.0.0.1", refuse=refused_recipient) as running:
        yield running


def test_the_message_arrives_as_written_to_the_recipients_the_server_takes(sink):
    refused = send(sink.address, ["a@example.com", "nobody@example.com"])
    assert refused == ["nobody@example.com"]
    (received,) = sink.received
    assert (received.sender, received.recipients) == ("c@example.com", ["a@example.com"])
    assert received.message.get_content().splitlines() == [
        "first line",
        ".second line starts with a dot",
        ".",
        "last line",
    ]


def test_a_message_no_recipient_takes_is_an_error(sink):
    with pytest.raises(ConnectionError, match="every recipient refused"):
        send(sink.address, ["nobody@example.com"])
    assert sink.received == []


def test_a_relay_that_hangs_up_at_the_recipient_is_not_a_refusal():
    def hang_up_at_rcpt(conn: socket.socket) -> None:
        conn.sendall(b"220 ready\r\n")
        reader = conn.makefile("rb")
        for reply in (b"250 hello\r\n", b"250 ok\r\n"):  # EHLO, MAIL FROM
            reader.readline()
            conn.sendall(reply)
        reader.readline()  # RCPT TO: the relay hangs up

    with hostile_server(hang_up_at_rcpt) as address, pytest.raises(ConnectionError) as raised:
        send(address, ["a@example.com"])
    assert "refused" not in str(raised.value)
