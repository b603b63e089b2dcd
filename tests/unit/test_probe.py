"""served_fingerprint: what a port serves, by direct TLS or by SMTP / IMAP STARTTLS, with the
certificate name (a name under a wildcard) as SNI."""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from certsync.host.moxconf import Target
from certsync.host.names import server_name
from certsync.host.probe import PROBE_ERRORS, served_fingerprint
from tests.unit.certs import Ca, Issued
from tests.unit.fakemox import accept_each

Dialog = Callable[[socket.socket, Callable[[socket.socket], ssl.SSLSocket]], None]


def _lines(sock: socket.socket | ssl.SSLSocket) -> Iterator[bytes]:
    reader = sock.makefile("rb")
    while line := reader.readline():
        yield line


def smtp_dialog(conn: socket.socket, start_tls: Callable[[socket.socket], ssl.SSLSocket]) -> None:
    conn.sendall(b"220 mail.example.com ESMTP\r\n")
    for line in _lines(conn):
        if line.upper().startswith(b"EHLO"):
            conn.sendall(b"250-mail.example.com\r\n250 STARTTLS\r\n")
        elif line.upper().startswith(b"STARTTLS"):
            conn.sendall(b"220 go ahead\r\n")
            tls = start_tls(conn)
            for command in _lines(tls):
                reply = b"221 bye\r\n" if command.upper().startswith(b"QUIT") else b"250 ok\r\n"
                tls.sendall(reply)
            return


def imap_dialog(conn: socket.socket, start_tls: Callable[[socket.socket], ssl.SSLSocket]) -> None:
    def answer(sock: socket.socket | ssl.SSLSocket, line: bytes) -> bytes:
        tag, _, command = line.strip().partition(b" ")
        command = command.upper()
        if command == b"CAPABILITY":
            sock.sendall(b"* CAPABILITY IMAP4rev1 STARTTLS\r\n")
        elif command == b"LOGOUT":
            sock.sendall(b"* BYE\r\n")
        sock.sendall(tag + b" OK done\r\n")
        return command

    conn.sendall(b"* OK IMAP4rev1 ready\r\n")
    for line in _lines(conn):
        if answer(conn, line) == b"STARTTLS":
            tls = start_tls(conn)
            for command in _lines(tls):
                answer(tls, command)
            return


def tls_dialog(conn: socket.socket, start_tls: Callable[[socket.socket], ssl.SSLSocket]) -> None:
    start_tls(conn).close()


class Server:
    """One port, one protocol: answers each connection with `dialog`, serving `issued` by TLS
    and remembering the SNI each handshake asked for."""

    def __init__(self, issued: Issued, folder: Path, dialog: Dialog) -> None:
        (folder / "c.pem").write_bytes(issued.cert_pem)
        (folder / "k.pem").write_bytes(issued.key_pem)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(folder / "c.pem", folder / "k.pem")
        self.context.sni_callback = lambda sslobj, name, ctx: self.server_names.append(name)
        self.server_names: list[str | None] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        accept_each(self.sock, lambda conn: dialog(conn, self._start_tls))

    def _start_tls(self, conn: socket.socket) -> ssl.SSLSocket:
        return self.context.wrap_socket(conn, server_side=True)

    def close(self) -> None:
        """Stop accepting: shutdown wakes the thread blocked in accept(), which close() alone
        does not (it would then accept on whatever socket gets the same descriptor next)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


@pytest.fixture
def issued(ca: Ca) -> Issued:
    return ca.issue(["*.example.com"])


@pytest.mark.parametrize(
    ("protocol", "dialog"), [("tls", tls_dialog), ("smtp", smtp_dialog), ("imap", imap_dialog)]
)
def test_the_served_leaf_is_fingerprinted_with_the_name_as_sni(issued, tmp_path, protocol, dialog):
    server = Server(issued, tmp_path, dialog)
    sni = server_name("*.example.com")
    try:
        assert served_fingerprint(Target("127.0.0.1", server.port, protocol), sni) == (
            issued.sha256
        )
        assert server.server_names == ["certsync-check.example.com"]
    finally:
        server.close()


def test_nothing_listening_is_a_probe_error(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
    with pytest.raises(PROBE_ERRORS):
        served_fingerprint(Target("127.0.0.1", port, "tls"), "mail.example.com", timeout=2)


def test_smtp_without_starttls_is_a_probe_error(issued, tmp_path):
    def no_starttls(conn: socket.socket, _: Callable[[socket.socket], ssl.SSLSocket]) -> None:
        conn.sendall(b"220 mail.example.com ESMTP\r\n")
        for line in _lines(conn):
            conn.sendall(
                b"250 mail.example.com\r\n" if line.upper().startswith(b"EHLO") else b"221 bye\r\n"
            )

    server = Server(issued, tmp_path, no_starttls)
    try:
        with pytest.raises(PROBE_ERRORS):
            served_fingerprint(Target("127.0.0.1", server.port, "smtp"), "mail.example.com")
    finally:
        server.close()


def test_a_server_that_trickles_its_reply_is_given_up_on_in_time(issued, tmp_path):
    """mox.conf may be the mox user's: whatever answers there must not hold a sync (and its
    lock) up, however slowly it keeps talking."""

    def trickle(conn: socket.socket, _: Callable[[socket.socket], ssl.SSLSocket]) -> None:
        conn.sendall(b"220 mail.example.com ESMTP\r\n")
        with contextlib.suppress(OSError):
            for _line in _lines(conn):
                while True:
                    conn.sendall(b"250-still here\r\n")
                    time.sleep(0.05)

    server = Server(issued, tmp_path, trickle)
    started = time.monotonic()
    try:
        with pytest.raises(PROBE_ERRORS):
            served_fingerprint(Target("127.0.0.1", server.port, "smtp"), "x.example.com", timeout=1)
    finally:
        server.close()
    assert time.monotonic() - started < 3
