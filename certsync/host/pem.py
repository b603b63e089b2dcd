"""PEM blocks, read strictly, and files that live in memory only."""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import re
from collections.abc import Iterator

PEM_BLOCK_RE = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n([A-Za-z0-9+/=\r\n]*?)-----END \1-----\r?\n?"
)


def pem_blocks(data: bytes) -> list[tuple[str, bytes]]:
    """The PEM blocks of `data` as (label, DER); raises ValueError unless all of it is PEM."""
    blocks: list[tuple[str, bytes]] = []
    pos = 0
    for match in PEM_BLOCK_RE.finditer(data):
        if data[pos : match.start()].strip():
            raise ValueError("text outside PEM blocks")
        try:
            der = base64.b64decode(re.sub(rb"\s", b"", match.group(2)), validate=True)
        except binascii.Error as error:
            raise ValueError("invalid base64 in PEM block") from error
        if not der:
            raise ValueError("empty PEM block")
        blocks.append((match.group(1).decode(), der))
        pos = match.end()
    if not data.strip():
        raise ValueError("empty file")
    if not blocks and b"-----BEGIN " not in data:
        raise ValueError("no PEM block")
    if not blocks or data[pos:].strip():
        raise ValueError("incomplete PEM block (truncated file?)")
    return blocks


def pem_encode(label: str, der: bytes) -> bytes:
    body = base64.encodebytes(der)
    return f"-----BEGIN {label}-----\n".encode() + body + f"-----END {label}-----\n".encode()


@contextlib.contextmanager
def memory_file(data: bytes) -> Iterator[str]:
    """A path to `data` that lives in memory only (for APIs that take a file name)."""
    fd = os.memfd_create("certsync", os.MFD_CLOEXEC)
    try:
        os.write(fd, data)
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)
