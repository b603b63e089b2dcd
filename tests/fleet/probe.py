"""What certificate a mail port serves: direct TLS (993, 465) or SMTP STARTTLS (587, 25)."""

from __future__ import annotations

import socket
import ssl

from cryptography import x509

STARTTLS_PORTS = frozenset({25, 587})


def _read_smtp_reply(stream: socket.SocketIO) -> str:
    """Read one (possibly multi-line) SMTP reply; return its last line."""
    while True:
        line = stream.readline().decode(errors="replace")
        if not line:
            raise ConnectionError("connection closed during SMTP reply")
        if len(line) < 4 or line[3] != "-":
            return line


def _smtp_starttls(sock: socket.socket) -> None:
    stream = socket.SocketIO(sock, "rb")
    greeting = _read_smtp_reply(stream)
    if not greeting.startswith("220"):
        raise ConnectionError(f"unexpected SMTP greeting: {greeting!r}")
    sock.sendall(b"EHLO certsync-e2e.test\r\n")
    if not _read_smtp_reply(stream).startswith("250"):
        raise ConnectionError("EHLO refused")
    sock.sendall(b"STARTTLS\r\n")
    reply = _read_smtp_reply(stream)
    if not reply.startswith("220"):
        raise ConnectionError(f"STARTTLS refused: {reply!r}")


def served_certificate(
    address: str, port: int, server_name: str, starttls: bool | None = None, timeout: float = 5.0
) -> x509.Certificate:
    """Connect to address:port with SNI `server_name` and return the leaf certificate it presents.

    `starttls` defaults to True for ports 25 and 587. The certificate is not verified.
    """
    if starttls is None:
        starttls = port in STARTTLS_PORTS
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection((address, port), timeout=timeout) as sock:
        if starttls:
            _smtp_starttls(sock)
        with context.wrap_socket(sock, server_hostname=server_name) as tls:
            der = tls.getpeercert(binary_form=True)
    if der is None:
        raise ConnectionError(f"{address}:{port} presented no certificate")
    return x509.load_der_x509_certificate(der)
