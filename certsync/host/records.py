"""certsync's own small records (JSON) in its root-only folder beside the lock file
(/var/lib/certsync): read whole, replaced whole by rename."""

from __future__ import annotations

import json
import os

from .files import FILE, FileState, open_dir, put_entries, read_file
from .settings import Config

TYPE_CHECKING = False  # typing's costs an import on every run
if TYPE_CHECKING:
    from typing import Any


def load(config: Config, name: str) -> dict[str, Any]:
    """The record `name` ({} when missing, unreadable or not a JSON object)."""
    try:
        dir_fd = open_dir(os.path.dirname(config.lock_file))
    except (OSError, ValueError):
        return {}
    try:
        state = read_file(dir_fd, name)
    except OSError:
        return {}
    finally:
        os.close(dir_fd)
    if state.kind != FILE or state.data is None:
        return {}
    try:
        record = json.loads(state.data)
    except (ValueError, RecursionError):
        return {}
    return record if isinstance(record, dict) else {}


def save(config: Config, name: str, record: dict[str, Any]) -> None:
    """Replace the record `name` (root's, 0600); raises OSError or ValueError."""
    data = json.dumps(record, sort_keys=True).encode()
    dir_fd = open_dir(os.path.dirname(config.lock_file), create_mode=0o700)
    try:
        put_entries(dir_fd, {name: FileState(FILE, data, None, 0, 0, 0o600)})
    finally:
        os.close(dir_fd)
