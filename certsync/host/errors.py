"""The errors of the host program, a short text for any error, and text made safe to print."""

from __future__ import annotations

import errno


class Refused(Exception):
    """A name that cannot be synced; the message says why. Nothing was changed for it."""


class SymlinkedFolder(OSError):
    """A folder on the way to one certsync writes is a symlink: certsync refuses to follow it."""

    def __init__(self, path: str) -> None:
        super().__init__(errno.ELOOP, f"{path} is a symlink; refusing")
        self.path = path

    def __str__(self) -> str:
        return str(self.strerror)


def reason(error: BaseException) -> str:
    """A short text for an error: `strerror` of an OSError (with its file), else str()."""
    if isinstance(error, SymlinkedFolder):
        return str(error)
    if isinstance(error, OSError) and error.strerror:
        where = f": {error.filename}" if error.filename else ""
        return f"{error.strerror}{where}"
    return str(error) or type(error).__name__


def printable(text: str) -> str:
    """`text` with every character that is not printable (a newline, a terminal escape, a bidi
    control...) written as its escape: a certificate's names or a link's target are chosen by
    whoever made them, and end up in log lines, in the preview and on the operator's terminal."""
    if text.isprintable():  # most are: one C loop instead of one per character
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
